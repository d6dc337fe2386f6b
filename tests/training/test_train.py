"""Training end to end on a tiny Llama: golden losses, the run directory, plain-peft loading, resume, backends."""

import json
import os
import shutil

import helpers
import pytest
import torch
import yaml

from studio.config.load import load_recipe
from studio.errors import StudioError
from studio.training.checkpoints import last_checkpoint
from studio.training.prepare import resume_recipe
from studio.training.rundir import read_metrics
from studio.training.train import train

LLAMA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

# Golden first three training losses of the tiny Llama (seed 0 weights, 24 arithmetic chats, batch 4,
# rank 8, alpha 16, lr 1e-3, cosine, no warmup, seed 42) on CPU in float32. They protect:
# - masking: which tokens carry the loss (step 1, where LoRA B is still zero, is the base model's loss
#   on exactly the assistant tokens + end-of-turn; a change in the masks moves it);
# - scaling: alpha/rank and the learning rate (steps 2 and 3 depend on the size of the first updates);
# - seeding: data order and adapter initialisation (batches and LoRA A are drawn from the seed).
# If one of these changes on purpose, re-pin the numbers from metrics.jsonl and say why in the commit.
GOLDEN_LORA = [5.94067, 5.911673, 5.829364]
GOLDEN_QLORA_STUDIO = [5.943666, 5.914577, 5.831337]
GOLDEN_RTOL = 1e-4


def make_recipe(model_dir, data_path, out, **sections):
    return load_recipe(helpers.recipe_dict(model_dir, data_path, out, **sections))


def losses(run_dir):
    rows = [r for r in read_metrics(run_dir) if "train_loss" in r]
    return [r["train_loss"] for r in rows], [r["step"] for r in rows]


def adapter_tensors(run_dir):
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def lora_run(tiny_llama_dir, tiny_data, tmp_path_factory):
    """A 4-step LoRA run on the tiny Llama, shared read-only by the tests below."""
    return train(make_recipe(tiny_llama_dir, tiny_data, tmp_path_factory.mktemp("lora") / "run"), progress=False)


@pytest.fixture(scope="module")
def qlora_run(tiny_llama_dir, tiny_data, tmp_path_factory):
    """A 4-step QLoRA run (studio NF4 backend) on the tiny Llama."""
    recipe = make_recipe(tiny_llama_dir, tiny_data, tmp_path_factory.mktemp("qlora") / "run", method="qlora", quant={"backend": "studio"})
    return train(recipe, progress=False)


def test_golden_losses_lora(lora_run):
    got, steps = losses(lora_run.run_dir)
    assert steps == [1, 2, 3, 4]
    assert got[:3] == pytest.approx(GOLDEN_LORA, rel=GOLDEN_RTOL)
    assert lora_run.steps == 4


def test_golden_losses_qlora_studio(qlora_run):
    got, steps = losses(qlora_run.run_dir)
    assert steps == [1, 2, 3, 4]
    assert got[:3] == pytest.approx(GOLDEN_QLORA_STUDIO, rel=GOLDEN_RTOL)


def test_qlora_quantization_error_is_small_but_real():
    # NF4 changes the base weights, so the first QLoRA loss differs from the LoRA one, though only slightly.
    assert GOLDEN_QLORA_STUDIO[0] != GOLDEN_LORA[0]
    assert GOLDEN_QLORA_STUDIO[0] == pytest.approx(GOLDEN_LORA[0], rel=2e-3)


def test_run_directory_contents(lora_run, tiny_llama_dir, tiny_data):
    run = lora_run.run_dir
    for name in ("recipe.yaml", "env.json", "data.json", "metrics.jsonl", "README.md", "summary.json"):
        assert (run / name).is_file(), name
    assert not list(run.rglob("*.tmp")), "atomic writes leave no temp files"

    recipe = load_recipe(run / "recipe.yaml")
    assert recipe.model.name == str(tiny_llama_dir)
    assert recipe.train.max_steps == 4 and recipe.lora.rank == 8

    env = json.loads((run / "env.json").read_text())
    assert env["packages"]["torch"] == torch.__version__
    assert {"transformers", "peft", "trl"} <= set(env["packages"])

    data = json.loads((run / "data.json").read_text())
    assert data["path"] == str(tiny_data)
    assert data["train"]["examples"] == 24 and data["format"] == "chat"

    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    step_lines = [r for r in records if "train_loss" in r]
    assert [r["step"] for r in step_lines] == [1, 2, 3, 4]  # one line per step (logging_steps 1)
    assert all("lr" in r and "grad_norm" in r for r in step_lines)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["train_loss"] == pytest.approx(step_lines[-1]["train_loss"])
    assert summary["eval_loss"] is None

    adapter = run / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["lora_alpha"] == 16
    assert {name.rsplit(".", 1)[-1] for name in config["target_modules"]} == LLAMA_TARGETS
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "tokenizer_config.json").is_file()


def test_model_card_front_matter(lora_run, tiny_llama_dir):
    text = (lora_run.run_dir / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert "base_model" not in front and str(tiny_llama_dir) not in text  # a local base has no hub id, and its path stays off a shared card
    assert front["license"] == "apache-2.0"
    assert front["library_name"] == "peft"
    assert "lora" in front["tags"]


@pytest.mark.parametrize("which", ["lora_run", "qlora_run"])
def test_adapter_loads_in_plain_peft(which, request, tiny_llama_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = request.getfixturevalue(which).run_dir
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
    model = PeftModel.from_pretrained(base, run / "adapter").eval()
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(lora_b) == 2 * len(LLAMA_TARGETS)  # every target of both layers
    # peft initialises B to zero: every one being non-zero means every saved tensor loaded and was trained.
    assert all(p.abs().sum() > 0 for p in lora_b.values())
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert not torch.allclose(before, after)


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(lora_run, tiny_llama_dir, tiny_data, tmp_path, monkeypatch):
    from studio_kernels.ops import nf4_matmul

    # What a GPU run's autotuner would hold (the CPU never tunes): it must travel with the checkpoint.
    tuner = nf4_matmul._nf4_matmul_tiled
    key, choice = (4096, 2048, 2048, True, "torch.bfloat16"), tuner.configs[2]
    monkeypatch.setattr(tuner, "cache", {key: choice})
    monkeypatch.setenv("STUDIO_KERNEL_DETERMINISTIC", "0")  # restored after the test (train sets it)
    recipe = make_recipe(tiny_llama_dir, tiny_data, tmp_path / "b")
    assert recipe.train.deterministic  # the default
    crashed = train(recipe, progress=False).run_dir
    saved = json.loads((crashed / "checkpoints" / "checkpoint-2" / "autotune-rank0.json").read_text())
    assert saved["tuners"]["nf4_matmul_tiled"] == [[list(key), {"kwargs": choice.kwargs, "num_warps": choice.num_warps,
                                                                "num_stages": choice.num_stages}]]
    assert saved["where"]["device"] == "cpu"
    assert "autotune-rank0.json" in json.loads((crashed / "checkpoints" / "checkpoint-2" / "manifest.json").read_text())["files"]
    assert os.environ["STUDIO_KERNEL_DETERMINISTIC"] == "1"
    monkeypatch.setattr(tuner, "cache", {})  # a fresh process knows nothing
    # Simulate a crash right after checkpoint-2: no adapter, no later checkpoint, no later metrics.
    shutil.rmtree(crashed / "adapter")
    shutil.rmtree(crashed / "checkpoints" / "checkpoint-4")
    (crashed / "summary.json").unlink()
    kept = [line for line in (crashed / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 2]
    (crashed / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    assert last_checkpoint(crashed).name == "checkpoint-2"

    resumed = train(resume_recipe(crashed), resume=True, progress=False)
    assert resumed.steps == 4
    restored = tuner.cache[key]  # the resumed run launches with the interrupted run's choice
    assert (restored.kwargs, restored.num_warps, restored.num_stages) == (choice.kwargs, choice.num_warps, choice.num_stages)

    expected, got = adapter_tensors(lora_run.run_dir), adapter_tensors(crashed)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-6, msg=key)
    loss_a, steps_a = losses(lora_run.run_dir)
    loss_b, steps_b = losses(crashed)
    assert steps_b == steps_a == [1, 2, 3, 4]  # every step logged exactly once
    assert loss_b == pytest.approx(loss_a, rel=1e-5)


def test_resume_needs_a_run_directory(tmp_path):
    with pytest.raises(StudioError, match="not a run directory"):
        resume_recipe(tmp_path)


def test_studio_and_bitsandbytes_qlora_agree(qlora_run, tiny_llama_dir, tiny_data, tmp_path):
    recipe = make_recipe(tiny_llama_dir, tiny_data, tmp_path / "bnb", method="qlora", quant={"backend": "bitsandbytes"}, train={"max_steps": 2})
    bnb = train(recipe, progress=False)
    studio_losses, _ = losses(qlora_run.run_dir)
    bnb_losses, steps = losses(bnb.run_dir)
    assert steps == [1, 2]
    # Same NF4 format (byte for byte), different matmul order: equal to a few units in the 4th digit.
    assert bnb_losses == pytest.approx(studio_losses[:2], rel=1e-4)


def test_existing_run_dir_is_not_overwritten_without_permission(lora_run, tiny_llama_dir, tiny_data):
    run = lora_run.run_dir
    recipe = make_recipe(tiny_llama_dir, tiny_data, run)
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(StudioError, match="already holds a run") as err:
        train(recipe, progress=False)
    assert "--overwrite" in err.value.fix
    assert (run / "metrics.jsonl").read_text() == before  # nothing touched


def test_overwrite_replaces_the_run(tiny_llama_dir, tiny_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "stale.txt").write_text("old")
    result = train(make_recipe(tiny_llama_dir, tiny_data, run, train={"max_steps": 1, "save_steps": 1}), progress=False, overwrite=True)
    assert result.steps == 1
    assert not (run / "stale.txt").exists()
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_warmup_ratio_is_a_fraction_of_the_steps(tiny_llama_dir, tiny_data, tmp_path):
    # 4 steps with warmup_ratio 0.5: 2 warmup steps from 0, then cosine decay from the peak.
    recipe = make_recipe(tiny_llama_dir, tiny_data, tmp_path / "run", train={"warmup_ratio": 0.5})
    run = train(recipe, progress=False).run_dir
    lrs = [r["lr"] for r in read_metrics(run) if "train_loss" in r]
    assert lrs == pytest.approx([0.0, 5e-4, 1e-3, 5e-4], abs=1e-9)


def test_validation_split_gives_a_validation_loss(tiny_llama_dir, tiny_data, tmp_path):
    recipe = make_recipe(tiny_llama_dir, tiny_data, tmp_path / "run", data={"val_split": 0.25}, train={"max_steps": 2, "eval_steps": 1})
    result = train(recipe, progress=False)
    data = json.loads((result.run_dir / "data.json").read_text())
    assert (data["train"]["examples"], data["val"]["examples"]) == (18, 6)
    assert result.eval_loss is not None and 0 < result.eval_loss < 20
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["eval_loss"] == pytest.approx(result.eval_loss)
    assert [r["step"] for r in read_metrics(result.run_dir) if "eval_loss" in r][:2] == [1, 2]  # every eval_steps


def step_log(run_dir):
    return [(r["train_loss"], r["grad_norm"]) for r in read_metrics(run_dir) if "train_loss" in r]


def test_grad_accum_and_checkpointing_do_not_change_the_optimisation(tiny_llama_dir, tiny_data, tmp_path):
    # batch 4 == batch 2 x accumulation 2 (the loss is normalised over all trained tokens of the step),
    # and recomputing activations changes memory, not numbers. Compared on loss and gradient norm,
    # because AdamW's first update is nearly scale-free and would hide a wrongly scaled gradient.
    runs = {}
    for name, train_kw in {
        "plain": {"max_steps": 2},
        "accum": {"max_steps": 2, "batch_size": 2, "grad_accum": 2},
        "ckpt": {"max_steps": 2, "gradient_checkpointing": True},
    }.items():
        runs[name] = step_log(train(make_recipe(tiny_llama_dir, tiny_data, tmp_path / name, train=train_kw), progress=False).run_dir)
    assert [x for x, _ in runs["plain"]] == pytest.approx(GOLDEN_LORA[:2], rel=GOLDEN_RTOL)
    for name in ("accum", "ckpt"):
        got, want = [v for pair in runs[name] for v in pair], [v for pair in runs["plain"] for v in pair]
        assert got == pytest.approx(want, rel=1e-5), name


def test_resume_before_the_first_checkpoint_starts_over_cleanly(lora_run, tiny_llama_dir, tiny_data, tmp_path):
    # A crash after step 1 was logged but before checkpoint-2 was written: resuming can only start over,
    # and the restarted run must not log step 1 a second time.
    crashed = train(make_recipe(tiny_llama_dir, tiny_data, tmp_path / "b"), progress=False).run_dir
    shutil.rmtree(crashed / "adapter")
    shutil.rmtree(crashed / "checkpoints")
    (crashed / "summary.json").unlink()
    kept = [line for line in (crashed / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 1]
    (crashed / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    assert last_checkpoint(crashed) is None

    train(resume_recipe(crashed), resume=True, progress=False)
    assert losses(crashed)[1] == [1, 2, 3, 4]
    expected, got = adapter_tensors(lora_run.run_dir), adapter_tensors(crashed)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-6, msg=key)
