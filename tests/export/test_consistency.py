"""The serving-consistency gate: merge and export are blocked when a format would prompt or stop differently.

One merged run (module scope) on a tiny Llama whose greedy answer is its end-of-turn token, so the stop
behaviour check compares real stops; broken exports are made by patching what the writers write (the GGUF
metadata, the Modelfile) or by editing the merged folder, and each must be blocked with the file and the fix.
"""

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import gguf
import helpers
import pytest
import torch

import studio.evaluation.generate
import studio.export.ollama
from studio.cli import format as cli_format
from studio.cli.commands import cmd_export
from studio.cli.parser import add_export_parser
from studio.errors import StudioError
from studio.export.consistency import compare_prompts, conversations, thinking_check, thinking_default
from studio.export.exporter import export
from studio.export.go_template import render_go_template
from studio.export.merge import merge
from studio.export.ollama import CHATML, LLAMA3, modelfile_text, parse_modelfile
from studio.export.serving import GGUFServing, View, gguf_view, ollama_view, read_gguf_serving, training_view
from studio.export.stopping import judge

EOS = 2  # <|im_end|> in helpers' tokenizer: the trained end-of-turn
EOT = 0  # <|endoftext|>, also the pad token

# ChatML whose generation prompt opens a <think> block (the R1 distills' form).
THINKING_CHATML = helpers.CHATML.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
# Qwen3's switch: thinking unless enable_thinking is false (then an empty block is closed for the model).
QWEN3_STYLE = helpers.CHATML.replace(
    "{{ '<|im_start|>assistant\\n' }}",
    "{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}",
)


def stopping_model_dir(path):
    """A tiny Llama whose greedy next token is <|im_end|> everywhere, saved to path.

    Untrained tiny models never end an answer, so the stop behaviour check would have nothing to compare.
    Every embedding gets one large shared dimension, and only <|im_end|>'s output row reads it: after the
    final norm that dimension dominates, so <|im_end|> wins by tens of logits whatever the adapter adds.
    """
    from transformers import AutoModelForCausalLM

    helpers.make_model_dir(path, "llama")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = 100.0
        head = model.get_output_embeddings().weight
        head[:, 0] = 0.0
        head[EOS, 0] = 10.0
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def run(tiny_data, tiny_test_data, tmp_path_factory):
    """A merged run on the stopping model, with four held-out examples."""
    root = tmp_path_factory.mktemp("consistency")
    run_dir = helpers.make_run_dir(stopping_model_dir(root / "base"), tiny_data, root / "run", data={"test_path": str(tiny_test_data)})
    merge(run_dir)
    return run_dir


def checks_of(consistency: dict) -> dict:
    return {c["name"]: c for c in consistency["checks"]}


def patch_writer(monkeypatch, method, change):
    """Make gguf's writer store a changed value for one metadata key, as an edited file would hold."""
    original = getattr(gguf.GGUFWriter, method)
    monkeypatch.setattr(gguf.GGUFWriter, method, lambda self, value: original(self, change(value)))


# --- clean exports pass ---------------------------------------------------------------------------------

def test_merge_records_a_passing_gate(run):
    recorded = json.loads((run / "merge.json").read_text())
    assert recorded["passed"] is True and recorded["consistency"]["passed"] is True
    names = set(checks_of(recorded["consistency"]))
    assert names == {"prompt format: merged model", "stop tokens: merged model", "pad token: merged model", "thinking default"}
    text = cli_format.merge_result(SimpleNamespace(**recorded))
    assert "serving consistency: passed (4/4 checks: prompt format, stop tokens, pad token, thinking default)" in text


def test_a_clean_gguf_export_passes_every_check(run, tmp_path):
    result = export(run, quant="f32", out=tmp_path)
    assert result.passed and result.consistency["passed"]
    checks = checks_of(result.consistency)
    assert {"prompt format: merged model", "prompt format: GGUF", "stop tokens: GGUF", "pad token: GGUF", "thinking default", "stop behaviour"} <= set(checks)
    assert all(c["passed"] for c in checks.values())
    # 7 fixed conversations and the first held-out example, whole and as a prompt
    assert checks["prompt format: GGUF"]["detail"].startswith("9 conversations")
    stopping = result.consistency["figures"]["stopping"]
    assert stopping["prompts"] == 4 and stopping["stopped"] == {"merged model": 4, "GGUF": 4}  # the model ends every answer
    assert "every format stops where the merged model does" in checks["stop behaviour"]["detail"]
    assert result.consistency["figures"]["gguf"]["eos_token_id"] == EOS
    recorded = json.loads((run / "export.json").read_text())["gguf-f32"]
    assert recorded["consistency"]["passed"] is True
    text = cli_format.export_result(result)
    assert "serving consistency: passed" in text and "stop behaviour: every format stops" in text


def test_a_clean_ollama_export_passes_and_the_cli_prints_the_gate(run, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", str(run), "--format", "ollama", "--quant", "f32", "--out", str(tmp_path / "ollama")])
    assert cmd_export(args) == 0
    out = capsys.readouterr().out
    assert "serving consistency: passed (10/10 checks: prompt format, stop tokens, pad token, thinking default, stop behaviour)" in out
    checks = checks_of(json.loads((run / "export.json").read_text())["ollama-f32"]["consistency"])
    assert checks["prompt format: Ollama Modelfile"]["passed"] and checks["stop tokens: Ollama Modelfile"]["passed"]
    assert checks["prompt format: Ollama Modelfile"]["detail"].startswith("6 conversations")  # Ollama renders prompts only


# --- broken exports are blocked ----------------------------------------------------------------------------

def test_a_chat_template_edited_in_the_gguf_is_blocked_with_a_diff(run, tmp_path, monkeypatch):
    patch_writer(monkeypatch, "add_chat_template", lambda template: template.replace("<|im_end|>\\n", "<|im_end|>"))
    with pytest.raises(StudioError) as err:
        export(run, quant="f32", out=tmp_path)
    target = tmp_path / f"{run.name}-f32.gguf"
    assert err.value.where == f"{target} (tokenizer.chat_template)"
    assert "prompt format: GGUF: the text of conversation 'one user turn, generation prompt' differs from training's (and 8 more: " in err.value.what
    assert "nothing was written" in err.value.what
    diff = err.value.what[err.value.what.index("--- training"):]
    assert diff.splitlines()[4:7] == ["  -add 2 and 3<|im_end|>\\n", "  -<|im_start|>assistant\\n", "  +add 2 and 3<|im_end|><|im_start|>assistant\\n"]
    assert "restore tokenizer.chat_template" in err.value.fix
    assert list(tmp_path.iterdir()) == []
    recorded = json.loads((run / "export.json").read_text())["gguf-f32"]
    assert recorded["passed"] is False and recorded["path"] is None
    failed = [c["name"] for c in recorded["consistency"]["checks"] if not c["passed"]]
    assert failed == ["prompt format: GGUF"]


def test_a_stop_token_dropped_from_the_modelfile_is_blocked(run, tmp_path, monkeypatch):
    original = studio.export.ollama.modelfile_text
    monkeypatch.setattr(studio.export.ollama, "modelfile_text", lambda *a, **k: original(*a, **k).replace('PARAMETER stop "<|im_end|>"\n', ""))
    folder = tmp_path / "ollama"
    with pytest.raises(StudioError) as err:
        export(run, fmt="ollama", quant="f32", out=folder)
    assert err.value.where == f"{folder / 'Modelfile'} (PARAMETER stop)"
    assert 'no PARAMETER stop for "<|im_end|>"' in err.value.what
    assert 'PARAMETER stop "<|im_end|>"' in err.value.fix
    assert list(folder.iterdir()) == []


def test_an_eos_id_changed_in_the_gguf_is_blocked(run, tmp_path, monkeypatch):
    patch_writer(monkeypatch, "add_eos_token_id", lambda _id: EOT)
    with pytest.raises(StudioError) as err:
        export(run, quant="f32", out=tmp_path)
    assert err.value.where == f"{tmp_path / f'{run.name}-f32.gguf'} (tokenizer.ggml.eos_token_id / eot_token_id)"
    assert 'stop tokens: GGUF: it ends generation on [0 "<|endoftext|>"], not on 2 "<|im_end|>"' in err.value.what
    # and the greedy answers show it: the merged model stops, the GGUF runs on
    assert 'stop behaviour: 4 greedy answer(s) to held-out prompts end differently: the GGUF does not stop on 2 "<|im_end|>"' in err.value.what
    assert "tokenizer.ggml.eos_token_id back to 2" in err.value.fix
    assert list(tmp_path.iterdir()) == []


def test_an_eos_id_changed_in_the_merged_generation_config_is_blocked(run, tmp_path):
    config_path = run / "merged" / "generation_config.json"
    saved = config_path.read_text()
    config = json.loads(saved)
    config["eos_token_id"] = EOT
    config_path.write_text(json.dumps(config))
    try:
        with pytest.raises(StudioError) as err:
            export(run, quant="f32", out=tmp_path)
    finally:
        config_path.write_text(saved)
    assert err.value.where == str(config_path)
    assert 'stop tokens: merged model: eos_token_id is [0 "<|endoftext|>"]: it leaves out 2 "<|im_end|>"' in err.value.what
    assert f'set "eos_token_id": [0, 2] in {config_path}, or re-run `studio merge {run}`' in err.value.fix
    assert "stop tokens: GGUF" in err.value.what  # the GGUF stops on <|im_end|>, which that merged model runs past
    assert list(tmp_path.iterdir()) == []


def test_merge_is_blocked_when_generation_config_misses_the_trained_eos(tiny_llama_dir, tiny_data, tmp_path, monkeypatch):
    run_dir = helpers.make_run_dir(tiny_llama_dir, tiny_data, tmp_path / "run")
    monkeypatch.setattr(studio.evaluation.generate, "stop_token_ids", lambda tokenizer, model=None: [EOT])
    with pytest.raises(StudioError) as err:
        merge(run_dir)
    assert "the merge would not serve like training" in err.value.what
    assert err.value.where == str(run_dir / "merged" / "generation_config.json")
    assert not (run_dir / "merged").exists() and not (run_dir / "merged.tmp").exists() and not (run_dir / "merge.json").exists()


def test_an_add_bos_flag_set_in_the_gguf_shows_as_a_bos_training_never_saw(tiny_tokenizer):
    meta = GGUFServing(chat_template=helpers.CHATML, bos_id=EOT, eos_id=EOS, eot_id=None, eom_id=None, pad_id=EOT,
                       add_bos=True, add_eos=False, special={EOT: helpers.EOT, EOS: helpers.IM_END})
    view = gguf_view(meta, tiny_tokenizer, None, Path("model.gguf"), "re-export")
    check = compare_prompts(training_view(tiny_tokenizer, None, "adapter"), view, conversations())
    assert not check.passed and check.file == "model.gguf (tokenizer.chat_template)"
    assert "-<|im_start|>user\\n" in check.diff.splitlines() and "+<|endoftext|><|im_start|>user\\n" in check.diff.splitlines()


def test_a_tokenizer_that_splits_the_turn_markers_is_caught_on_token_ids(tiny_tokenizer):
    training = training_view(tiny_tokenizer, None, "adapter")
    view = template_view("GGUF", tiny_tokenizer, helpers.CHATML)
    view.encode = lambda text: tiny_tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    check = compare_prompts(training, view, conversations())
    assert not check.passed and check.detail.startswith("the token ids of conversation 'one user turn, generation prompt' differ")
    assert "first difference (replace) at token 0: training [1] ['<|im_start|>']" in check.diff


# --- thinking ------------------------------------------------------------------------------------------

def test_a_thinking_template_keeps_its_default_and_losing_it_is_caught(tiny_models, tiny_data, tmp_path, monkeypatch):
    run_dir = helpers.make_run_dir(tiny_models("llama", THINKING_CHATML), tiny_data, tmp_path / "run")
    result = export(run_dir, quant="f32", out=tmp_path / "good")
    assert checks_of(result.consistency)["thinking default"] == {
        "name": "thinking default", "passed": True, "detail": "every format starts thinking (the generation prompt opens <think>)",
        "file": None, "fix": None, "diff": None,
    }
    patch_writer(monkeypatch, "add_chat_template", lambda template: helpers.CHATML)
    with pytest.raises(StudioError) as err:
        export(run_dir, quant="f32", out=tmp_path / "bad")
    assert ("thinking default: training starts thinking (the generation prompt opens <think>); "
            "the GGUF leaves thinking to the model (no <think> in the generation prompt)") in err.value.what
    assert not (tmp_path / "bad").exists() or list((tmp_path / "bad").iterdir()) == []


def template_view(name, tokenizer, template) -> View:
    """A format that renders with `template` through the same tokenizer (for template-only comparisons)."""
    return View(name=name, file=f"{name} file", fix="restore the template",
                render=lambda messages, gen: tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=gen),
                encode=lambda text: tokenizer(text, add_special_tokens=False)["input_ids"], tokens=tokenizer.convert_ids_to_tokens,
                template=template, stop_ids=frozenset({EOS}), stop_file=f"{name} file")


def test_an_enable_thinking_default_flipped_between_formats_is_caught():
    tokenizer = helpers.make_tokenizer(QWEN3_STYLE)
    training = training_view(tokenizer, None, "adapter")
    same = template_view("merged model", tokenizer, QWEN3_STYLE)
    flipped = template_view("GGUF", tokenizer, QWEN3_STYLE.replace("enable_thinking is defined and enable_thinking is false", "not (enable_thinking is defined and enable_thinking)"))
    assert thinking_default(training) == thinking_default(same) == "model" and thinking_default(flipped) == "off"
    assert thinking_check(training, [same]).passed
    check = thinking_check(training, [same, flipped])
    assert not check.passed and check.file == "GGUF file"
    assert check.detail == ("training leaves thinking to the model (no <think> in the generation prompt); "
                            "the GGUF turns thinking off (the generation prompt closes an empty <think></think>)")
    prompts = compare_prompts(training, flipped, conversations())
    assert not prompts.passed and "+<think>\\n" in prompts.diff


def test_a_plain_template_is_not_a_thinking_model(tiny_tokenizer):
    training = training_view(tiny_tokenizer, None, "adapter")
    check = thinking_check(training, [template_view("GGUF", tiny_tokenizer, helpers.CHATML)])
    assert check.passed and "not a thinking model" in check.detail


# --- the pieces ------------------------------------------------------------------------------------------

MESSAGES = [
    {"role": "system", "content": "S"}, {"role": "user", "content": "add 2\nand 3 "},
    {"role": "assistant", "content": "5"}, {"role": "user", "content": "{{ .Content }} {% raw %}"},
]


@pytest.mark.parametrize("family", [CHATML, LLAMA3])
def test_the_go_template_renderer_renders_the_studio_templates_as_their_format(family):
    assert render_go_template(family.template, MESSAGES) == family.render(MESSAGES, True)


def test_the_go_template_renderer_handles_conditions_trims_and_refuses_the_unknown():
    template = "{{ if .System }}<s>{{ .System }}</s>\n{{ else }}none{{ end }}  {{- /* c */ -}}\n x{{ range .Messages }}[{{ $.System }}:{{ .Role }}]{{ end }}"
    assert render_go_template(template, MESSAGES[:2], system="SYS") == "<s>SYS</s>\nx[SYS:system][SYS:user]"
    assert render_go_template(template, [], system="") == "nonex"
    with pytest.raises(StudioError, match="not one the consistency check can render"):
        render_go_template("{{ slice .Messages 1 }}", MESSAGES)
    with pytest.raises(StudioError, match="missing"):
        render_go_template("{{ range .Messages }}x", MESSAGES)


def test_a_modelfile_reads_back_as_written(tiny_tokenizer):
    text = modelfile_text(tiny_tokenizer, system_prompt='Be "brief".\nThank you.', extra_stops=("<|endoftext|>",))
    back = parse_modelfile(text)
    assert back.source == "./model.gguf" and back.template == CHATML.template
    assert back.system == 'Be "brief".\nThank you.'
    assert back.stops == ("<|im_end|>", "<|im_start|>", "<|endoftext|>")


@pytest.mark.parametrize("merged, served, served_stops, verdict", [
    ([5, 6, EOS], [5, 6, EOS], {EOS}, "agree"),  # both stop on the same token
    ([5, 6, 7], [5, 6, 7], {EOS}, "agree"),  # neither stops within the limit
    ([5, 6, EOS], [5, 6, EOS], {EOT}, "runs on"),  # the served format ignores the end of turn
    ([5, 6, 9], [5, 6, 9], {9}, "cuts"),  # the served format stops on a token the merged model continues past
    ([5, 6, EOS], [5, 8, 9], {EOS}, "diverged"),  # a near-tie flipped before either stopped
])
def test_stop_behaviour_is_judged_only_where_the_answers_agree(merged, served, served_stops, verdict):
    assert judge(merged, served, {EOS}, served_stops) == verdict


@pytest.mark.slow
def test_the_bundled_smollm2_gguf_serves_like_its_own_tokenizer():
    """The demo model's own GGUF: its metadata template, the Modelfile the studio writes for it (with SmolLM2's
    default system prompt as SYSTEM) and its tokenizer render every conversation alike."""
    from transformers import AutoTokenizer

    from studio.modeling.source import demo_gguf_path

    try:
        path = demo_gguf_path()
    except StudioError as exc:
        pytest.skip(exc.what)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    meta = read_gguf_serving(path)
    assert meta.eos_id == tokenizer.convert_tokens_to_ids("<|im_end|>") and meta.add_bos is False
    training = training_view(tokenizer, None, "demo tokenizer")
    modelfile = parse_modelfile(modelfile_text(tokenizer))
    assert modelfile.system.startswith("You are a helpful AI assistant named SmolLM")
    views = [gguf_view(meta, tokenizer, None, path, "re-export"), ollama_view(modelfile, meta, tokenizer, Path("Modelfile"), "re-export")]
    for view in views:
        check = compare_prompts(training, view, conversations())
        assert check.passed, check.diff
    assert thinking_check(training, views).passed
