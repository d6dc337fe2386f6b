"""Evaluation with `eval.metric: none` reports losses only: it never scores the answers with another metric."""

from __future__ import annotations

import json
import math

import helpers

from studio.cli import main
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
