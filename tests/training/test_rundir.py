"""metrics.jsonl: only a torn last line (a crash, or a step being written) is skipped; damage elsewhere is named."""

from __future__ import annotations

import json

import pytest

from studio.errors import StudioError
from studio.training.rundir import METRICS, read_metrics


def write(run, text):
    run.mkdir(exist_ok=True)
    (run / METRICS).write_text(text, encoding="utf-8")


def test_a_torn_last_line_is_skipped(tmp_path):
    write(tmp_path, json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}) + "\n" + '{"step": 3, "train_lo')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_a_damaged_line_before_the_end_is_an_error_naming_it(tmp_path):
    write(tmp_path, json.dumps({"step": 1}) + "\n" + "not json at all\n" + json.dumps({"step": 3}) + "\n")
    with pytest.raises(StudioError, match="line 2") as info:
        read_metrics(tmp_path)
    assert info.value.where.endswith(f"{METRICS}:2") and "delete that line" in info.value.fix


def test_blank_lines_and_a_complete_file_read_whole(tmp_path):
    write(tmp_path, json.dumps({"step": 1}) + "\n\n" + json.dumps({"step": 2}) + "\n")
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    assert read_metrics(tmp_path / "no-such-run") == []
