"""The offline demo on the real bundled SmolLM2-135M-Instruct: train, evaluate, merge, summarise."""

import json
from pathlib import Path

import pytest
from helpers import network_audit

import studio.cli.demo
from studio.cli import main

SUMMARY_KEYS = {"metric", "base_score", "adapter_score", "run_dir", "merged_dir", "merge_passed"}


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    lines = []
    # The demo is offline: nothing may reach beyond loopback while it trains, evaluates and merges.
    with network_audit() as outward:
        summary = studio.cli.demo.run_demo(out_dir=str(tmp_path / "{name}"), quick=True, log=lines.append)
    assert outward == []
    assert SUMMARY_KEYS <= set(summary)
    assert summary["metric"] == "field_accuracy"
    assert 0.0 <= summary["base_score"] <= 100.0 and 0.0 <= summary["adapter_score"] <= 100.0
    assert summary["merge_passed"] is True
    assert summary["train_steps"] == 3 and summary["heldout_examples"] == 4
    run_dir = Path(summary["run_dir"])
    assert run_dir == (tmp_path / "smollm2-135m-qlora").resolve()
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert (Path(summary["merged_dir"]) / "model.safetensors").is_file()
    assert json.loads((run_dir / "eval.json").read_text())["metric"] == "field_accuracy"
    assert any("4/4 Summary" in line for line in lines)


def test_demo_json_prints_one_object(capsys, tmp_path, monkeypatch):
    calls = []

    def fake_run_demo(out_dir=None, quick=False, log=None):
        calls.append((out_dir, quick))
        return {"metric": "field_accuracy", "base_score": 10.0, "adapter_score": 90.0, "run_dir": "r", "merged_dir": "m", "merge_passed": True}

    monkeypatch.setattr(studio.cli.demo, "run_demo", fake_run_demo)
    code = main(["demo", "--quick", "--json", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert calls == [(str(tmp_path / "{name}"), True)]
    assert json.loads(out)["adapter_score"] == 90.0
    assert len(out.strip().splitlines()) == 1
