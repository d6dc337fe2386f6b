"""Evaluation with `eval.metric: none` reports losses only: it never scores the answers with another metric."""

from __future__ import annotations

import json
import math

import helpers
import pytest

from studio.cli import main
from studio.errors import StudioError
from studio.evaluation.evaluate import evaluate


def test_metric_none_computes_no_task_score(tmp_path, tiny_llama_dir, tiny_data, tiny_test_data, capsys):
    run = helpers.make_run_dir(tiny_llama_dir, tiny_data, tmp_path / "run", eval={"metric": "none"}, data={"test_path": str(tiny_test_data)})
    result = evaluate(run, limit=2)
    assert result.metric == "none"
    assert result.base_score is None and result.adapter_score is None  # exact_match would give 0.0 or more here
    assert math.isfinite(result.base_loss) and math.isfinite(result.adapter_loss) and result.base_loss != result.adapter_loss
    assert json.loads((run / "eval.json").read_text())["adapter_score"] is None
    assert "metric (" not in (run / "README.md").read_text()  # the card shows no score that was never computed

    assert main(["eval", str(run), "--limit", "2"]) == 0
    text = capsys.readouterr().out
    assert "no task metric" in text and "loss" in text


def test_json_valid_reads_the_json_schema_column_of_chat_rows(tmp_path, tiny_llama_dir, tiny_data):
    schema = {"type": "object", "properties": {"sum": {"type": "integer"}}, "required": ["sum"]}
    rows = [{"messages": [{"role": "user", "content": "add 1 and 2"}, {"role": "assistant", "content": '{"sum": 3}'}], "json_schema": schema}]
    good = helpers.write_jsonl(tmp_path / "good.jsonl", rows * 2)
    run = helpers.make_run_dir(tiny_llama_dir, tiny_data, tmp_path / "run", eval={"metric": "json_valid"}, data={"test_path": str(good)})
    result = evaluate(run, limit=2)
    assert result.metric == "json_valid" and 0.0 <= result.adapter_score <= 100.0

    bad = helpers.write_jsonl(tmp_path / "bad.jsonl", [{**rows[0], "json_schema": {"type": "objekt"}}])
    with pytest.raises(StudioError, match="cannot score with json_valid: example 1: json_schema") as caught:
        evaluate(run, data=str(bad))  # before any model is loaded
    assert caught.value.where == str(bad) and "eval.metric" in caught.value.fix


def test_field_accuracy_on_text_references_is_a_studio_error(tmp_path, tiny_llama_dir, tiny_data, tiny_test_data, capsys):
    run = helpers.make_run_dir(tiny_llama_dir, tiny_data, tmp_path / "run", eval={"metric": "field_accuracy"}, data={"test_path": str(tiny_test_data)})
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "cannot score with field_accuracy: example 1: the reference answer is not a JSON object" in err and "Traceback" not in err
