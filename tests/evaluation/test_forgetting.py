"""The forgetting check: an untouched adapter keeps everything, an over-trained one forgets; figures land in eval.json,
the model card and the CLI, and bad input is a StudioError."""

from __future__ import annotations

import json

import helpers
import pytest
import tomllib
import torch

from studio.cli import main
from studio.config.load import load_recipe
from studio.errors import StudioError
from studio.evaluation import forgetting
from studio.evaluation.forgetting import check_forgetting, judge, load_probes
from studio.training.train import train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models' matrices gain nothing from a second thread, and on a busy 2-core machine lose seconds per
    check to thread hand-offs (20 s against 1 s measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sharp_model(tmp_path_factory):
    """A tiny Llama with a wide initialisation: its next-token distributions are peaked, as a trained model's are,
    so its greedy answers do not flip at the slightest change (transformers' default 0.02 gives near-ties)."""
    return helpers.make_model_dir(tmp_path_factory.mktemp("sharp") / "llama", init_std=0.2)


@pytest.fixture(scope="module")
def zero_run(sharp_model, tiny_data, tmp_path_factory):
    """A run whose adapter has B = 0: peft's starting point, the base model exactly."""
    return helpers.make_run_dir(sharp_model, tiny_data, tmp_path_factory.mktemp("zero") / "run", lora_std=0.0)


@pytest.fixture(scope="module")
def overtrained_run(sharp_model, tiny_data, tmp_path_factory):
    """Real training far past what 24 arithmetic chats need: 48 steps at lr 1e-2 (about 3 s)."""
    raw = helpers.recipe_dict(sharp_model, tiny_data, tmp_path_factory.mktemp("over") / "run",
                              train={"max_steps": 48, "learning_rate": 1e-2, "save_steps": 1000, "lr_scheduler": "constant"})
    return train(load_recipe(raw), progress=False).run_dir


@pytest.fixture(scope="module")
def zero_result(zero_run):
    return check_forgetting(zero_run)


@pytest.fixture(scope="module")
def overtrained_result(overtrained_run):
    return check_forgetting(overtrained_run)


def test_a_zero_adapter_keeps_everything(zero_result):
    r = zero_result
    assert r.verdict == "kept" and r.reasons == []
    assert r.kl_mean == 0.0 and r.kl_max == 0.0 and r.kl_tokens >= r.questions  # at least one token per answer
    assert r.perplexity_ratio == 1.0 and r.agreement == 1.0 and r.base_accuracy == r.adapter_accuracy
    assert r.questions == len(load_probes()[0]) == len(r.answers) and all(a["same"] for a in r.answers)


def test_tiny_lora_weights_are_kept(sharp_model, tiny_data, tmp_path):
    run = helpers.make_run_dir(sharp_model, tiny_data, tmp_path / "run", lora_std=1e-5)
    r = check_forgetting(run)
    assert r.verdict == "kept" and 0.0 <= r.kl_mean < forgetting.KEPT_MAX_KL


def test_a_lightly_trained_adapter_is_kept(sharp_model, tiny_data, tmp_path):
    raw = helpers.recipe_dict(sharp_model, tiny_data, tmp_path / "run", train={"max_steps": 2, "learning_rate": 1e-4, "save_steps": 1000})
    r = check_forgetting(train(load_recipe(raw), progress=False).run_dir)
    assert r.verdict == "kept", r.to_dict()
    assert 0.0 < r.kl_mean < forgetting.KEPT_MAX_KL and r.agreement >= forgetting.KEPT_MIN_AGREEMENT


def test_an_overtrained_adapter_forgot(overtrained_result):
    r = overtrained_result
    assert r.verdict == "forgot", r.to_dict()
    assert r.kl_mean >= forgetting.FORGOT_MIN_KL and r.kl_max >= r.kl_mean and r.agreement < forgetting.KEPT_MIN_AGREEMENT
    assert r.perplexity_ratio > 1.0 and any("KL" in reason for reason in r.reasons)


@pytest.mark.parametrize(("kl", "ratio", "agreement", "verdict"), [
    (0.0, 1.0, 1.0, "kept"),
    (forgetting.KEPT_MAX_KL, forgetting.KEPT_MAX_PERPLEXITY_RATIO, forgetting.KEPT_MIN_AGREEMENT, "kept"),  # limits are inclusive
    (0.0, 0.5, 1.0, "kept"),  # lower perplexity on general text is no forgetting
    (forgetting.KEPT_MAX_KL * 1.01, 1.0, 1.0, "drifted"),
    (0.0, forgetting.KEPT_MAX_PERPLEXITY_RATIO * 1.01, 1.0, "drifted"),
    (0.0, 1.0, forgetting.KEPT_MIN_AGREEMENT - 0.01, "drifted"),
    (forgetting.FORGOT_MIN_KL, 1.0, 1.0, "forgot"),  # one figure past its forgot limit is enough
    (0.0, forgetting.FORGOT_MIN_PERPLEXITY_RATIO, 1.0, "forgot"),
    (0.0, 1.0, 0.0, "drifted"),  # no answer the same, but distributions and perplexity held: agreement never says forgot
    (10.0, 100.0, 0.0, "forgot"),
])
def test_judge(kl, ratio, agreement, verdict):
    got, reasons = judge(kl, ratio, agreement)
    assert got == verdict and bool(reasons) == (verdict != "kept")


def test_eval_json_keeps_the_other_keys_and_eval_keeps_the_check(overtrained_run, overtrained_result, tiny_test_data):
    from studio.evaluation.evaluate import evaluate

    run = overtrained_run
    (run / "eval.json").unlink(missing_ok=True)
    evaluate(run, data=str(tiny_test_data), limit=2)
    before = json.loads((run / "eval.json").read_text())
    again = check_forgetting(run)
    assert again.to_dict() == overtrained_result.to_dict()  # deterministic: the same figures, answers and verdict
    after = json.loads((run / "eval.json").read_text())
    assert {k: v for k, v in after.items() if k != "forgetting"} == before and after["forgetting"]["verdict"] == "forgot"
    card = (run / "README.md").read_text()
    assert "## Forgetting" in card and "**forgot**" in card and "| exact_match (adapter) |" in card
    evaluate(run, data=str(tiny_test_data), limit=2)  # a later `studio eval` rewrites its own keys only
    assert json.loads((run / "eval.json").read_text())["forgetting"] == after["forgetting"]


def test_the_cli_flag(zero_run, zero_result, overtrained_result, capsys):
    from studio.cli.format import forgetting_result

    text = forgetting_result(zero_result)
    assert "KEPT" in text and "KL(base || adapter)" in text and "perplexity" in text and f"{zero_result.questions}/{zero_result.questions}" in text
    text = forgetting_result(overtrained_result)
    assert "FORGOT" in text and "because mean KL" in text and "question:" in text  # the answers that changed
    assert main(["eval", str(zero_run), "--forgetting", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "kept" and data["kl_mean"] == 0.0 and data["thresholds"]["forgot_min_kl"] == forgetting.FORGOT_MIN_KL
    assert json.loads((zero_run / "eval.json").read_text())["forgetting"]["verdict"] == "kept"


def test_bad_input_is_a_studio_error_without_traceback(zero_run, sharp_model, tiny_data, tmp_path, capsys):
    with pytest.raises(StudioError, match="not a run directory"):
        check_forgetting(tmp_path / "nowhere")
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "recipe.yaml").write_text((zero_run / "recipe.yaml").read_text())
    with pytest.raises(StudioError, match="no trained adapter"):
        check_forgetting(untrained)
    for argv, message in (
        (["eval", str(tmp_path / "nowhere"), "--forgetting"], "not a run directory"),
        (["eval", str(untrained), "--forgetting"], "no trained adapter"),
        (["eval", str(zero_run), "--forgetting", "--no-base"], "--no-base does not apply"),
        (["eval", str(zero_run), "--forgetting", "--limit", "3"], "--limit does not apply"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "fix:" in err and "Traceback" not in err


def test_the_probe_set_is_varied_attributed_and_shipped():
    questions, text = load_probes()
    assert 20 <= len(questions) <= 40 and len(text) >= 3
    assert {"arithmetic", "capital", "definition", "list", "yes_no"} <= {q["kind"] for q in questions}
    raw = json.loads((forgetting.files("studio.evaluation") / forgetting.PROBES).read_text())
    assert "Adapter Studio" in raw["source"] and "Apache-2.0" in raw["license"]
    pyproject = tomllib.loads((helpers.REPO / "pyproject.toml").read_text())
    assert forgetting.PROBES in pyproject["tool"]["setuptools"]["package-data"]["studio.evaluation"]
