"""Merging changes nothing: merged logits equal base+adapter logits, with adapters that are not zero.

Model: peft tests/testing_common.py::_test_merge_layers. peft starts LoRA B at zero, where a merge is a
no-op and any parity check passes trivially, so these adapters are initialised non-zero.
"""

import json

import helpers
import pytest
import torch

import studio.export.merge
from studio.config.load import load_recipe
from studio.config.yaml_text import dump_recipe
from studio.errors import StudioError
from studio.export.merge import merge

PROBE = torch.tensor([[1, 5, 9, 12, 40, 77, 100, 3], [2, 2, 8, 30, 31, 32, 33, 34]])


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny Llama whose generation config stops on <|endoftext|> while its tokenizer's EOS is <|im_end|>."""
    path = helpers.make_model_dir(tmp_path_factory.mktemp("merge-base") / "llama", "llama")
    config_path = path / "generation_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token_id"] = helpers.make_tokenizer().convert_tokens_to_ids(helpers.EOT)
    config_path.write_text(json.dumps(config))
    return path


def adapter_logits(base_dir, run_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.no_grad():
        plain = base(input_ids=PROBE).logits
        model = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
        return plain, model(input_ids=PROBE).logits


def test_merged_logits_equal_adapter_logits(base_dir, tiny_data, tmp_path):
    from transformers import AutoModelForCausalLM

    run = helpers.make_run_dir(base_dir, tiny_data, tmp_path / "run")
    result = merge(run)
    assert result.passed and result.rel_diff <= result.tolerance == 1e-4
    assert result.merged_dir == run / "merged"

    base_logits, expected = adapter_logits(base_dir, run)
    # The check means something: the adapter moves the logits well beyond the tolerance.
    assert (expected - base_logits).abs().max() > 1e-2
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        got = merged(input_ids=PROBE).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    recorded = json.loads((run / "merge.json").read_text())
    assert recorded["passed"] is True and recorded["merged_dir"] == str(run / "merged")


def test_merged_dir_is_a_complete_model(base_dir, tiny_data, tmp_path):
    from transformers import AutoTokenizer

    run = helpers.make_run_dir(base_dir, tiny_data, tmp_path / "run")
    out = merge(run, out=tmp_path / "shipped").merged_dir
    assert out == tmp_path / "shipped"
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin"))
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == helpers.CHATML
    gen = json.loads((out / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    # The tokenizer's end-of-turn (what training taught the model to emit) and the base's own stop token.
    assert tok.eos_token_id in eos
    assert tok.convert_tokens_to_ids(helpers.EOT) in eos
    assert not (tmp_path / "shipped.tmp").exists()


def test_merge_of_a_qlora_run_uses_the_full_precision_base(base_dir, tiny_data, tmp_path):
    from safetensors.torch import load_file

    from studio.training.train import train

    raw = helpers.recipe_dict(base_dir, tiny_data, tmp_path / "run", method="qlora", train={"max_steps": 2, "save_steps": 2})
    run = train(load_recipe(raw), progress=False).run_dir
    out = merge(run).merged_dir
    base = load_file(base_dir / "model.safetensors")
    merged = load_file(out / "model.safetensors")
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    key = "model.layers.0.self_attn.q_proj"
    a = next(v for k, v in adapter.items() if k.endswith(f"{key}.lora_A.weight"))
    b = next(v for k, v in adapter.items() if k.endswith(f"{key}.lora_B.weight"))
    expected = base[f"{key}.weight"] + (16 / 8) * b @ a
    # Exactly W0 + (alpha/r) B A on the original weights: no NF4 rounding (which is ~1e-2) slipped in.
    torch.testing.assert_close(merged[f"{key}.weight"], expected, rtol=1e-6, atol=1e-6)
    assert not torch.equal(merged[f"{key}.weight"], base[f"{key}.weight"])


def test_merge_beyond_tolerance_fails_and_leaves_nothing(base_dir, tiny_data, tmp_path, monkeypatch):
    run = helpers.make_run_dir(base_dir, tiny_data, tmp_path / "run")
    monkeypatch.setitem(studio.export.merge.TOLERANCE, torch.float32, 0.0)
    with pytest.raises(StudioError, match="does not reproduce the adapter") as err:
        merge(run)
    assert err.value.where == str(run)
    assert not (run / "merged").exists()
    assert not (run / "merged.tmp").exists()
    assert not (run / "merge.json").exists()


def test_merge_without_check_keeps_the_result_and_reports_it(base_dir, tiny_data, tmp_path, monkeypatch):
    run = helpers.make_run_dir(base_dir, tiny_data, tmp_path / "run")
    monkeypatch.setitem(studio.export.merge.TOLERANCE, torch.float32, 0.0)
    result = merge(run, check=False)
    assert result.passed is False and result.rel_diff > 0
    assert (result.merged_dir / "model.safetensors").is_file()


def test_merge_needs_a_trained_run(tmp_path, base_dir, tiny_data):
    with pytest.raises(StudioError, match="not a run directory"):
        merge(tmp_path)
    run = tmp_path / "untrained"
    run.mkdir()
    (run / "recipe.yaml").write_text(dump_recipe(load_recipe(helpers.recipe_dict(base_dir, tiny_data, run))))
    with pytest.raises(StudioError, match="no trained adapter"):
        merge(run)
