"""GRPO: recipe checks, prompt data, rewards wired into trl, a reward that rises, run-directory files, resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import make_model_dir, recipe_dict, write_jsonl
from safetensors.torch import load_file

from studio.config.load import load_recipe
from studio.data import load_heldout, normalize, read_rows
from studio.errors import StudioError
from studio.training.checkpoints import last_checkpoint
from studio.training.prepare import resume_recipe
from studio.training.rundir import COMPLETIONS, read_metrics
from studio.training.train import train

# A dense reward a tiny random model can learn in a few steps: the share of characters that are digits.
DIGITS = "def digit_share(completions):\n    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]\n"


def _prompt_rows(n: int = 32) -> list[dict]:
    return [{"prompt": f"add {i % 10} and {(i * 3) % 10}", "answer": str(i % 10 + (i * 3) % 10)} for i in range(n)]


@pytest.fixture(scope="module")
def rl_model(tmp_path_factory):
    """A tiny llama whose weights start wider than transformers' default, so an adapter can sharpen its choices."""
    return make_model_dir(tmp_path_factory.mktemp("rl_model"), init_std=0.2)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", _prompt_rows())


@pytest.fixture(scope="module")
def digit_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rewards") / "my_rewards.py"
    path.write_text(DIGITS, encoding="utf-8")
    return path


def grpo_raw(model_dir, data, run_dir, grpo=None, **train):
    raw = recipe_dict(model_dir, data, run_dir, method="grpo",
                      grpo={"adapter": "lora", "num_generations": 4, "max_completion_length": 8, "log_completions_steps": 2, "log_completions_count": 3, **(grpo or {})})
    raw["train"].update({"batch_size": 8, "learning_rate": 1e-2, "lr_scheduler": "constant", **train})
    raw["eval"] = {"metric": "numeric_answer", "max_new_tokens": 8}
    return raw


@pytest.fixture(scope="module")
def rising_run(rl_model, prompts, digit_file, tmp_path_factory):
    """24 GRPO steps on the digit reward (from a reward file) plus the shipped numeric_answer at a small weight."""
    run_dir = tmp_path_factory.mktemp("grpo") / "rise"
    raw = grpo_raw(rl_model, prompts, run_dir, grpo={"reward_file": str(digit_file), "rewards": [{"name": "digit_share"}, {"name": "numeric_answer", "weight": 0.1}]},
                   max_steps=24, save_steps=12)
    return train(load_recipe(raw), progress=False)


def test_the_reward_rises_over_a_few_steps(rising_run):
    rewards = [r["rewards/digit_share/mean"] for r in read_metrics(rising_run.run_dir) if "rewards/digit_share/mean" in r]
    assert len(rewards) == 24
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert last > 1.5 * first, rewards


def test_metrics_hold_each_reward_the_total_and_the_completion_lengths(rising_run):
    step = next(r for r in read_metrics(rising_run.run_dir) if r.get("step") == 1 and "reward" in r)
    for key in ("rewards/digit_share/mean", "rewards/digit_share/std", "rewards/numeric_answer/mean", "rewards/numeric_answer/std",
                "reward", "reward_std", "completion_length", "truncated_share"):
        assert key in step, key
    assert step["reward"] == pytest.approx(step["rewards/digit_share/mean"] + 0.1 * step["rewards/numeric_answer/mean"], abs=1e-5)
    assert 0.0 <= step["truncated_share"] <= 1.0 and 1 <= step["completion_length"] <= 8


def test_completions_are_sampled_with_their_scores(rising_run):
    samples = read_metrics(rising_run.run_dir, COMPLETIONS)
    assert [s["step"] for s in samples] == [s for s in range(2, 25, 2) for _ in range(3)]
    rows = {json.dumps(r) for r in _prompt_rows()}
    for s in samples:
        assert set(s["rewards"]) == {"digit_share", "numeric_answer"}
        assert s["total"] == pytest.approx(s["rewards"]["digit_share"] + 0.1 * s["rewards"]["numeric_answer"], abs=1e-5)
        digits = sum(ch.isdigit() for ch in s["completion"]) / max(1, len(s["completion"]))
        assert s["rewards"]["digit_share"] == pytest.approx(digits)  # the score belongs to that completion
        line = int(s["where"].rsplit(":", 1)[1])
        assert json.dumps(_prompt_rows()[line - 1]) in rows and s["prompt"] == _prompt_rows()[line - 1]["prompt"]


def test_data_manifest_names_the_rewards_and_counts_prompts(rising_run, digit_file):
    data = json.loads((rising_run.run_dir / "data.json").read_text())
    assert data["format"] == "prompt" and data["train"]["prompts"] == 32 and data["train"]["too_long"] == 0
    assert [(r["name"], r["weight"], r["source"]) for r in data["rewards"]] == [("digit_share", 1.0, str(digit_file)), ("numeric_answer", 0.1, "shipped")]


def test_eval_reports_accuracy_and_mean_reward_for_base_and_adapter(rising_run, prompts):
    from studio.evaluation.evaluate import evaluate

    result = evaluate(rising_run.run_dir, data=str(prompts), limit=8, samples=2)
    assert result.metric == "numeric_answer" and result.examples == 8
    for rewards in (result.base_rewards, result.adapter_rewards):
        assert set(rewards) == {"digit_share", "numeric_answer", "total"}
        assert rewards["total"] == pytest.approx(rewards["digit_share"] + 0.1 * rewards["numeric_answer"], abs=1e-5)
    saved = json.loads((rising_run.run_dir / "eval.json").read_text())
    assert saved["adapter_rewards"] == result.adapter_rewards


def test_resume_after_a_crash_ends_with_the_same_adapter(rising_run, rl_model, prompts, digit_file, tmp_path):
    # The same recipe, crashed right after checkpoint-12: sampling's random state travels with the checkpoint.
    run_dir = tmp_path / "crashed"
    shutil.copytree(rising_run.run_dir, run_dir)
    recipe_text = (run_dir / "recipe.yaml").read_text().replace(str(rising_run.run_dir), str(run_dir))
    (run_dir / "recipe.yaml").write_text(recipe_text)
    shutil.rmtree(run_dir / "adapter")
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-24")
    (run_dir / "summary.json").unlink()
    assert last_checkpoint(run_dir).name == "checkpoint-12"
    resumed = train(resume_recipe(run_dir), resume=True, progress=False)
    assert resumed.steps == 24
    expected = load_file(str(rising_run.run_dir / "adapter" / "adapter_model.safetensors"))
    got = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    steps = [r["step"] for r in read_metrics(run_dir) if "reward" in r]
    assert steps == list(range(1, 25))  # every step logged once
    assert [s["step"] for s in read_metrics(run_dir, COMPLETIONS)] == [s["step"] for s in read_metrics(rising_run.run_dir, COMPLETIONS)]


def test_qlora_grpo_trains_through_the_studio_kernels(rl_model, prompts, tmp_path, monkeypatch):
    from studio.modeling.quant import StudioLoraLinear

    calls = []
    forward = StudioLoraLinear.forward
    monkeypatch.setattr(StudioLoraLinear, "forward", lambda self, x, *a, **k: calls.append(tuple(x.shape[:-1])) or forward(self, x, *a, **k))
    raw = grpo_raw(rl_model, prompts, tmp_path / "q", grpo={"adapter": "qlora", "rewards": [{"name": "length_target", "args": {"target": 6, "tolerance": 2}}]}, max_steps=2, save_steps=10)
    result = train(load_recipe(raw), progress=False)
    assert result.steps == 2 and (result.adapter_dir / "adapter_model.safetensors").exists()
    rewards = [r["rewards/length_target/mean"] for r in read_metrics(result.run_dir) if "reward" in r]
    assert len(rewards) == 2 and all(0.0 <= r <= 1.0 for r in rewards)
    # Decoding went through the 4-bit layers one token per sequence (with the KV cache), training on whole rows.
    assert any(shape[-1] == 1 for shape in calls) and any(shape[-1] > 8 for shape in calls)


FLAKY = """def flaky(completions, trainer_state):
    if trainer_state.global_step >= 2:
        raise ValueError("the grader is down")
    return [0.5 for _ in completions]
"""


def test_a_reward_that_raises_stops_the_run_naming_it_and_the_run_resumes(rl_model, prompts, tmp_path):
    file = tmp_path / "flaky.py"
    file.write_text(FLAKY, encoding="utf-8")
    raw = grpo_raw(rl_model, prompts, tmp_path / "flaky_run", grpo={"reward_file": str(file), "rewards": [{"name": "flaky"}]}, max_steps=4, save_steps=2)
    with pytest.raises(StudioError, match="reward flaky raised ValueError: the grader is down") as info:
        train(load_recipe(raw), progress=False)
    assert "prompts.jsonl:" in info.value.where and "resume" in info.value.fix
    run_dir = tmp_path / "flaky_run"
    assert last_checkpoint(run_dir).name == "checkpoint-2"
    file.write_text("def flaky(completions):\n    return [0.5 for _ in completions]\n", encoding="utf-8")  # the grader is back
    assert train(resume_recipe(run_dir), resume=True, progress=False).steps == 4


@pytest.mark.parametrize("body, message", [
    ("return [None for _ in completions]", "returned None"),
    ("return [float('nan') for _ in completions]", "nan"),
    ("return [1.0]", "returned 1 "),
])
def test_a_reward_returning_no_number_is_an_error_naming_it(rl_model, prompts, tmp_path, body, message):
    file = tmp_path / "bad.py"
    file.write_text(f"def bad(completions):\n    {body}\n", encoding="utf-8")
    raw = grpo_raw(rl_model, prompts, tmp_path / "bad_run", grpo={"reward_file": str(file), "rewards": [{"name": "bad"}]}, max_steps=1)
    with pytest.raises(StudioError, match="bad") as info:
        train(load_recipe(raw), progress=False)
    assert message.lower() in info.value.format().lower() and "prompts.jsonl:" in info.value.where


def test_a_row_without_the_column_a_reward_needs_fails_before_any_model_loads(rl_model, tmp_path, monkeypatch):
    rows = _prompt_rows(6)
    del rows[3]["answer"]
    data = write_jsonl(tmp_path / "holes.jsonl", rows)
    import studio.modeling.loading as loading

    monkeypatch.setattr(loading, "load_for_training", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(StudioError, match="numeric_answer") as info:
        train(load_recipe(grpo_raw(rl_model, data, tmp_path / "r", max_steps=1)), progress=False)
    assert info.value.where.endswith("holes.jsonl:4") and "'answer'" in info.value.what
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_prompt_rows_and_gsm8k_rows_are_recognised(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"question": "Tom has 1,000 apples and eats 2. How many are left?", "answer": "1000 - 2 = 998\n#### 998"},
    ])
    fmt, (example,) = normalize(read_rows(path))
    assert fmt == "prompt"
    assert example.messages == ({"role": "user", "content": "Tom has 1,000 apples and eats 2. How many are left?"},)
    assert example.columns == {"answer": "998", "solution": "1000 - 2 = 998\n#### 998"}
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], "json_schema": {"type": "object"}}])
    fmt, (example,) = normalize(read_rows(chat))
    assert fmt == "prompt" and [m["role"] for m in example.messages] == ["system", "user"] and example.columns == {"json_schema": {"type": "object"}}


def test_held_out_prompt_rows_end_in_their_reference(tmp_path):
    from studio.config.schema import DataSpec

    path = write_jsonl(tmp_path / "t.jsonl", _prompt_rows(2))
    fmt, examples = load_heldout(str(path), DataSpec(path=str(path)))
    assert fmt == "prompt" and examples[1].messages[-1] == {"role": "assistant", "content": "4"} and examples[1].columns["answer"] == "4"
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"prompt": "hi"}])
    with pytest.raises(StudioError, match="no `answer`"):
        load_heldout(str(bare), DataSpec(path=str(bare)))


def test_prompt_rows_are_refused_by_supervised_methods(prompts, rl_model, tmp_path):
    raw = recipe_dict(rl_model, prompts, tmp_path / "sft")
    with pytest.raises(StudioError, match="method grpo"):
        train(load_recipe(raw), progress=False)


@pytest.mark.parametrize("change, message", [
    ({"train": {"batch_size": 6}}, "multiple of grpo.num_generations"),
    ({"grpo": {"temperature": 0}}, "greater than 0"),
    ({"grpo": {"num_generations": 1}}, "greater than or equal to 2"),
    ({"grpo": {"loss_type": "ppo"}}, "grpo.loss_type"),
    ({"grpo": {"scale_rewards": True}}, "grpo.scale_rewards"),
    ({"grpo": {"rewards": []}}, "at least one reward"),
    ({"grpo": {"rewards": [{"name": "numeric_answer", "weight": 0}]}}, "non-zero"),
    ({"grpo": {"rewards": [{"name": "numeric_answer", "wieght": 1}]}}, "wieght"),
    ({"grpo": {"generation_batch_size": 6}}, "multiple of num_generations"),
    ({"grpo": {"generation_batch_size": 12}}, "multiple of train.batch_size"),
    ({"train": {"fused_loss": True}}, "train.fused_loss"),
    ({"data": {"packing": True}}, "data.packing"),
    ({"data": {"val_split": 0.1}}, "no validation loss"),
    ({"distributed": {"strategy": "ddp", "num_processes": 2}}, "grpo runs on one process"),
    ({"grpo": {"beta": -0.1}}, "grpo.beta"),
    ({"grpo": {"max_completion_length": 0}}, "grpo.max_completion_length"),
])
def test_bad_grpo_settings_are_clear_errors(prompts, tmp_path, change, message):
    raw = grpo_raw(tmp_path / "model", prompts, tmp_path / "r")
    for section, values in change.items():
        raw.setdefault(section, {}).update(values)
    with pytest.raises(StudioError, match=message):
        load_recipe(raw)


@pytest.mark.parametrize("rewards, message", [
    ([{"name": "numeric_anwser"}], "did you mean 'numeric_answer'"),
    ([{"name": "numeric_answer", "args": {"tolerence": 0.1}}], "tolerence"),
    ([{"name": "regex_match"}], "pattern"),
    ([{"name": "regex_match", "args": {"pattern": "(unclosed"}}], "pattern"),
])
def test_bad_rewards_are_refused_by_validate_before_any_model(prompts, tmp_path, rewards, message):
    from studio.training.grpo_data import load_prompt_examples

    recipe = load_recipe(grpo_raw(tmp_path / "model", prompts, tmp_path / "r", grpo={"rewards": rewards}))
    with pytest.raises(StudioError, match=message):
        load_prompt_examples(recipe)


def test_the_shipped_grpo_recipe_validates_with_its_data():
    from studio.config.shipped import shipped_recipe
    from studio.training.grpo_data import load_prompt_examples

    recipe = load_recipe(shipped_recipe("smollm2/135m-grpo"))
    assert recipe.method == "grpo" and recipe.adapter_method == "lora"
    examples = load_prompt_examples(recipe)
    assert len(examples) == 800 and all(e.columns["answer"].isdigit() for e in examples)


def test_memory_estimate_counts_generation_and_completion_tokens():
    from studio.config.schema import Recipe
    from studio.memory.fit import auto_fit
    from studio.memory.formula import estimate

    def grpo(**g):
        return Recipe(model={"name": "Qwen/Qwen2.5-1.5B-Instruct"}, method="grpo", data={"max_length": 256},
                      train={"batch_size": 8, "grad_accum": 4, "gradient_checkpointing": True}, grpo={"max_completion_length": 512, **g})

    sft = Recipe(model={"name": "Qwen/Qwen2.5-1.5B-Instruct"}, method="qlora", data={"max_length": 256}, train={"batch_size": 8, "gradient_checkpointing": True})
    base = estimate(grpo(), "80GB")
    assert base["tokens_per_batch"] == 8 * (256 + 512) and base["peak_gib"] > estimate(sft, "80GB")["peak_gib"]
    assert "generation" in base["breakdown"]
    assert sum(base["breakdown"].values()) == pytest.approx(base["peak_gib"])
    # A generation batch far larger than a training micro-batch needs more than the step: its KV cache shows.
    big = estimate(grpo(generation_batch_size=256), "80GB")
    assert big["breakdown"]["generation"] > 0 and big["peak_gib"] > base["peak_gib"]
    longer = estimate(grpo(max_completion_length=1024), "80GB")
    assert longer["peak_gib"] > base["peak_gib"]
    # auto_fit keeps the effective batch (whole groups of completions) and finds a batch that fits 12 GiB.
    fitted, info = auto_fit(grpo(), "12GB")
    assert fitted.train.batch_size * fitted.train.grad_accum == 32 and estimate(fitted, "12GB")["fits"]


def test_merge_and_reproduce_work_on_a_grpo_run(rising_run, digit_file, tmp_path):
    from studio.export.merge import merge
    from studio.training.reproduce import check_data_unchanged, reproduce

    merged = merge(rising_run.run_dir, out=tmp_path / "merged")
    assert merged.max_abs_diff < 1e-3  # the merged model gives the adapter's logits
    outcome = reproduce(rising_run.run_dir, out=tmp_path / "again")
    assert outcome.identical and outcome.steps == 24  # sampling, rewards and updates all repeat on CPU
    original = digit_file.read_text()
    try:
        digit_file.write_text(original + "# edited\n")
        with pytest.raises(StudioError, match="reward file .* changed since training"):
            check_data_unchanged(rising_run.run_dir)
    finally:
        digit_file.write_text(original)
