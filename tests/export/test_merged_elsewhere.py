"""Export finds the merged model where merge put it (merge.json), and does not merge again."""

from __future__ import annotations

import json

import helpers

from studio.export.exporter import export
from studio.export.merge import merge
from studio.training.rundir import merged_dir


def test_export_uses_the_merged_model_merge_wrote_elsewhere(tmp_path, tiny_llama_dir, tiny_data):
    run = helpers.make_run_dir(tiny_llama_dir, tiny_data, tmp_path / "run")
    elsewhere = tmp_path / "models" / "my-merge"
    merge(run, out=elsewhere)
    assert merged_dir(run) == elsewhere and not (run / "merged").exists()
    recorded = (run / "merge.json").stat().st_mtime_ns
    result = export(run, quant="f32")
    assert result.passed and result.path.exists()
    assert not (run / "merged").exists()  # no second merge into the default folder
    assert (run / "merge.json").stat().st_mtime_ns == recorded
    assert json.loads((run / "merge.json").read_text())["merged_dir"] == str(elsewhere)


def test_without_a_merge_export_merges_first(tmp_path, tiny_llama_dir, tiny_data):
    run = helpers.make_run_dir(tiny_llama_dir, tiny_data, tmp_path / "run")
    assert merged_dir(run) is None
    assert export(run, quant="f32").passed
    assert merged_dir(run) == run / "merged"
