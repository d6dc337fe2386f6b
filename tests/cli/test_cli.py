"""The `studio` command in-process (and once as a real subprocess): results, JSON output, and clean errors."""

import contextlib
import io
import json
import subprocess
import sys

import helpers
import pytest
import yaml

from studio.cli import main


def write_recipe(path, raw):
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def recipe_file(tiny_llama_dir, tiny_data, tiny_test_data, tmp_path_factory):
    """A tiny recipe file whose run directory is named after the file (output.name unset)."""
    root = tmp_path_factory.mktemp("cli")
    raw = helpers.recipe_dict(tiny_llama_dir, tiny_data, root / "runs" / "{name}", data={"test_path": str(tiny_test_data)})
    del raw["output"]["name"]
    return write_recipe(root / "tiny-cli.yaml", raw)


@pytest.fixture(scope="module")
def cli_train(recipe_file):
    """`studio train recipe --set ... --json`, run once; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["train", str(recipe_file), "--set", "train.max_steps=2", "--set", "lora.rank=4", "--no-progress", "--json"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run_dir(cli_train):
    from pathlib import Path

    return Path(json.loads(cli_train[1])["run_dir"])


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- commands that succeed


def test_validate(capsys, recipe_file):
    code, out, err = run(capsys, "validate", str(recipe_file))
    assert code == 0, err
    assert "valid" in out and "24 chat rows" in out


def test_validate_json(capsys, recipe_file):
    code, out, _ = run(capsys, "validate", str(recipe_file), "--json", "--set", "lora.rank=32")
    assert code == 0
    info = json.loads(out)
    assert info["valid"] is True and info["data_format"] == "chat" and info["data_rows"] == 24 and info["test_rows"] == 4
    assert info["recipe"]["lora"]["rank"] == 32
    assert info["recipe"]["output"]["name"] == "tiny-cli"


def test_train_json_and_overrides(cli_train, recipe_file):
    code, out, err = cli_train
    assert code == 0, err
    result = json.loads(out)  # exactly one JSON object on stdout
    assert result["steps"] == 2
    assert result["run_dir"] == str(recipe_file.parent / "runs" / "tiny-cli")
    written = yaml.safe_load((recipe_file.parent / "runs" / "tiny-cli" / "recipe.yaml").read_text())
    assert written["train"]["max_steps"] == 2 and written["lora"]["rank"] == 4
    assert "Traceback" not in err


def test_eval_json(capsys, run_dir):
    code, out, err = run(capsys, "eval", str(run_dir), "--json", "--limit", "2")
    assert code == 0, err
    result = json.loads(out)
    assert result["metric"] == "exact_match" and result["examples"] == 2
    assert 0.0 <= result["base_score"] <= 100.0 and 0.0 <= result["adapter_score"] <= 100.0
    assert result["adapter_loss"] > 0 and result["base_loss"] > 0
    assert json.loads((run_dir / "eval.json").read_text())["examples"] == 2


def test_merge_json(capsys, run_dir, tmp_path):
    code, out, err = run(capsys, "merge", str(run_dir), "--out", str(tmp_path / "merged"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["passed"] is True and result["merged_dir"] == str(tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_chat_prompt_json(capsys, run_dir):
    code, out, err = run(capsys, "chat", str(run_dir), "--prompt", "add 2 and 3", "--max-new-tokens", "3", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["prompt"] == "add 2 and 3" and isinstance(result["answer"], str)


# ---------------------------------------------------------------- user mistakes: exit 2, a message, no traceback


def assert_user_error(code, out, err, *fragments):
    assert code == 2
    assert "error:" in err and "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_missing_recipe_file(capsys, tmp_path):
    assert_user_error(*run(capsys, "validate", str(tmp_path / "nope.yaml")), "recipe file not found")
    assert_user_error(*run(capsys, "train", str(tmp_path / "nope.yaml")), "recipe file not found")


def test_missing_recipe_file_json_reports_the_error_on_stdout(capsys, tmp_path):
    code, out, err = run(capsys, "validate", str(tmp_path / "nope.yaml"), "--json")
    assert_user_error(code, out, err)
    assert "recipe file not found" in json.loads(out)["error"]


def test_unknown_key_names_line_and_suggests(capsys, tmp_path, tiny_llama_dir, tiny_data):
    raw = helpers.recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "run")
    raw["train"]["lr"] = 0.001
    path = write_recipe(tmp_path / "typo.yaml", raw)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), start=1) if text.strip().startswith("lr:"))
    assert_user_error(*run(capsys, "validate", str(path)), "unknown key 'train.lr'", "train.learning_rate", f"{path}:{line}")


def test_bad_override(capsys, recipe_file):
    assert_user_error(*run(capsys, "validate", str(recipe_file), "--set", "train.max_steps=-3"), "train.max_steps")
    assert_user_error(*run(capsys, "validate", str(recipe_file), "--set", "train.max_steps"), "has no '='")


def test_missing_data_file(capsys, tmp_path, tiny_llama_dir):
    path = write_recipe(tmp_path / "r.yaml", helpers.recipe_dict(tiny_llama_dir, tmp_path / "missing.jsonl", tmp_path / "run"))
    assert_user_error(*run(capsys, "validate", str(path)), "dataset not found")


@pytest.mark.parametrize("command", ["merge", "eval", "chat"])
def test_nonexistent_run_dir(capsys, tmp_path, command):
    extra = ["--prompt", "hi"] if command == "chat" else []
    assert_user_error(*run(capsys, command, str(tmp_path / "no-such-run"), *extra), "not a run directory")


def test_resume_on_a_folder_that_is_not_a_run(capsys, tmp_path):
    assert_user_error(*run(capsys, "train", "--resume", str(tmp_path)), "not a run directory")


def test_resume_refuses_a_recipe_too(capsys, tmp_path, recipe_file):
    assert_user_error(*run(capsys, "train", str(recipe_file), "--resume", str(tmp_path)), "--resume continues a run")


def test_train_without_recipe(capsys):
    assert_user_error(*run(capsys, "train"), "no recipe given")


def test_unknown_command_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_subprocess_bad_recipe_exits_2_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: qlora\nlora:\n  rank: 8\n  rnak: 4\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "studio.cli", "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "error: unknown key 'lora.rnak'" in proc.stderr
    assert f"{path}:4" in proc.stderr
