"""benchmarks.bench_nf4 off the GPU: its --smoke run end to end, a cut-off run's partial results, the GPU formatting.

The benchmark only ever measures on a GPU, where a session has minutes; these tests make sure it gets there
without a typo, a shape mistake or a formatting crash in any of its code paths.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_nf4 as bench

ROOT = Path(__file__).resolve().parents[2]
IMPLEMENTATIONS = ["fwd_bf16", "fwd_fused", "fwd_dequant", "fwd_bnb", "bwd_bf16", "bwd_fused", "bwd_dequant", "bwd_bnb"]
RATIOS = [f"{kind}_speed_vs_{base}" for kind in ("fwd", "bwd") for base in ("bf16_fused", "bf16_best", "bnb_best")]


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The benchmark as gpu_session.py runs it: a module run from the repository root, offline."""
    env = dict(os.environ, TRITON_INTERPRET="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "benchmarks.bench_nf4", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_smoke_run_measures_every_row_and_writes_complete_results(tmp_path):
    """About 30 s on 2 cores: every matmul implementation at every (shape, M), the three training methods, the targets."""
    done = run_script("--smoke", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jsons, mds = list(tmp_path.glob("*.json")), list(tmp_path.glob("*.md"))
    assert len(jsons) == 1 and len(mds) == 1 and mds[0].stem == jsons[0].stem
    assert not list(tmp_path.glob("*.tmp"))
    result = json.loads(jsons[0].read_text())

    assert result["complete"] is True and result["smoke"] is True
    env = result["environment"]
    assert env["gpu"] == "cpu-smoke" and "smoke run" in env["note"] and env["bitsandbytes"] != "not installed"

    rows = {(r["out"], r["in"], r["M"]): r for r in result["matmul"]}
    assert sorted(rows) == sorted((o, i, m) for o, i in bench.SMOKE_SHAPES for m in bench.SMOKE_MS)
    for row in rows.values():
        assert all(positive(row["ms"][name]) for name in IMPLEMENTATIONS), row
        assert all(positive(row[name]) for name in RATIOS), row
        # the interpreter's fused kernel agrees with its dequantize path: the value check itself is sound
        assert row["values_pass"] is True and max(row["fused_vs_dequant_error"].values()) < bench.VALUE_TOLERANCE, row
    assert done.stdout.count("| values pass (fused vs dequant") == len(rows)

    training = {r["method"]: r for r in result["training"]}
    assert sorted(training) == sorted(bench.METHODS)
    for row in training.values():
        assert row["model"] == "tiny" and row["seq"] == 64 and positive(row["step_ms"]) and row["peak_gib"] is None
        assert positive(row["first_step_ms"])  # the process's first call, compiling included, reported apart

    targets = result["targets"]
    assert targets["values"]["pass"] is True
    assert {"values", "fwd_large_m", "decode", "step_vs_bf16[tiny]", "step_vs_bnb[tiny]", "memory[tiny]"} <= set(targets)
    assert targets["memory[tiny]"]["pass"] is None  # the CPU has no peak-memory counter
    assert all(isinstance(targets[k]["pass"], bool) for k in targets if not k.startswith("memory"))

    # The dispatch threshold proposed from the fused vs dequantize timings (meaningless here, but computed)
    assert set(result["dispatch"]) == {"large_m"} and result["dispatch"]["large_m"] in (None, 17, 80)
    assert "dispatch: dequantize + cuBLAS from M = " in done.stdout

    md = mds[0].read_text()
    assert "# NF4 benchmark: cpu-smoke" in md and "## LoRA training step" in md and "## Targets" in md
    assert "| tiny | studio_qlora | 64 |" in md and "first step ms" in md and "not measured" in md
    assert "[not measured] studio QLoRA peak memory" in done.stdout


def test_a_run_cut_off_during_training_keeps_what_it_measured(tmp_path, monkeypatch):
    """The JSON is rewritten after every row: stopped in its third training row, it holds the rows before, marked incomplete."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs the kernels in this process, which needs the interpreter chosen before studio_kernels is imported")
    monkeypatch.setattr(bench, "SMOKE_SHAPES", [(96, 160)])
    monkeypatch.setattr(bench, "SMOKE_MS", [17])
    canned = iter([{"model": "tiny", "method": "bf16_lora", "seq": 64, "step_ms": 10.0, "peak_gib": None},
                   {"model": "tiny", "method": "bnb_qlora", "seq": 64, "step_ms": 12.0, "peak_gib": None}])

    def training_row(name, method, plan, device):
        assert device == "cpu" and plan.seq == 64 and plan.steps == 2
        row = next(canned, None)
        if row is None:
            raise TimeoutError("the session's time ran out")
        return row

    monkeypatch.setattr(bench, "training_row", training_row)
    with pytest.raises(TimeoutError):
        bench.main(["--smoke", "--out", str(tmp_path)])

    (path,) = tmp_path.glob("*.json")
    assert not list(tmp_path.glob("*.md"))
    result = json.loads(path.read_text())
    assert result["complete"] is False
    assert [(r["out"], r["in"], r["M"]) for r in result["matmul"]] == [(96, 160, 17)]
    assert all(positive(result["matmul"][0]["ms"][name]) for name in IMPLEMENTATIONS)
    assert [r["method"] for r in result["training"]] == ["bf16_lora", "bnb_qlora"]
    # M = 17 is the smoke plan's "M = 2048"; a model's training targets wait for all three of its methods.
    assert set(result["targets"]) == {"values", "fwd_large_m"} and "worst_M=17" in result["targets"]["fwd_large_m"]


def test_gpu_results_are_judged_and_formatted():
    """What only a GPU run produces: the real M thresholds, measured peak memory, passes and failures."""
    plan = bench.plan_for(bench.parse_args([]))
    assert (plan.shapes, plan.ms, plan.models, plan.seq, plan.steps) == (bench.SHAPES, bench.MS, ["llama-1b", "llama-8b"], 2048, 5)
    quick = bench.plan_for(bench.parse_args(["--quick", "--seq", "1024"]))
    assert (quick.ms, quick.models, quick.seq) == (bench.QUICK_MS, ["llama-1b"], 1024)

    def matmul(m, fused, error=2e-3):
        t = dict.fromkeys(IMPLEMENTATIONS, 1.0) | {"fwd_fused": fused}
        return {"out": 4096, "in": 4096, "M": m, "ms": t, **bench._speeds(t),
                "fused_vs_dequant_error": {"fwd": error, "bwd": 1e-3}, "values_pass": error <= bench.VALUE_TOLERANCE}

    rows = [matmul(1, 0.25), matmul(2048, 1.1), matmul(4096, 1.0)]
    train = [{"model": "llama-1b", "method": m, "seq": 2048, "step_ms": s, "peak_gib": g}
             for m, s, g in [("bf16_lora", 100.0, 9.0), ("bnb_qlora", 150.0, 5.5), ("studio_qlora", 105.0, 5.0)]]
    targets = bench.verdicts(rows, train, plan)
    assert targets["values"] == {"worst_error": 2e-3, "pass": True}
    wrong = bench.verdicts([*rows, matmul(16, 1.0, error=0.3)], train, plan)["values"]
    assert wrong == {"worst_error": 0.3, "pass": False}
    assert targets["fwd_large_m"] == {"worst_M>=4096": 1.0, "worst_M=2048": pytest.approx(1 / 1.1), "pass": True}
    assert targets["decode"] == {"worst": 4.0, "pass": True}
    assert targets["step_vs_bf16[llama-1b]"]["pass"] is True and targets["step_vs_bnb[llama-1b]"]["pass"] is True
    assert targets["memory[llama-1b]"] == {"studio_gib": 5.0, "bnb_gib": 5.5, "pass": True}

    env = {"gpu": "NVIDIA H200", "driver": "1", "cuda": "12.8", "torch": "2", "triton": "3", "bitsandbytes": "0.50"}
    md = bench.markdown(env, rows, train + [{**train[0], "model": "llama-8b"}], targets)
    assert "| llama-1b | studio_qlora | 2048 | 105.0 | - | 5.00 |" in md
    assert "| 1.000 | 0.250 | 1.000 | pass (2.0e-03) |" in md
    assert "studio QLoRA peak memory <= bitsandbytes QLoRA [llama-1b] | studio_gib=5.000, bnb_gib=5.500 | yes |" in md
    # A model with one method measured has no verdicts yet.
    assert not any("llama-8b" in k for k in bench.verdicts(rows, train + [{**train[0], "model": "llama-8b"}], plan))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_cuda_and_without_smoke_it_refuses_in_one_line(tmp_path):
    done = run_script("--out", str(tmp_path), timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "no CUDA device" in done.stderr
    assert not list(tmp_path.iterdir())


def test_record_dispatch_writes_a_gpu_runs_threshold_and_refuses_a_smoke_run(tmp_path, monkeypatch, capsys):
    """--record-dispatch copies a GPU run's measured crossover into the kernels' table; a smoke run's numbers never get there."""
    import studio_kernels.dispatch as dispatch

    table = tmp_path / "dispatch.json"
    monkeypatch.setattr(dispatch, "TABLE", table)
    gpu_run = tmp_path / "nf4-NVIDIA_H200-1.json"
    gpu_run.write_text(json.dumps({"environment": {"gpu": "NVIDIA H200"}, "smoke": False, "dispatch": {"large_m": 4096}}))
    assert bench.main(["--record-dispatch", str(gpu_run)]) == 0
    assert json.loads(table.read_text()) == {"NVIDIA H200": {"large_m": 4096, "source": gpu_run.name}}

    smoke_run = tmp_path / "nf4-smoke.json"
    smoke_run.write_text(json.dumps({"environment": {"gpu": "cpu-smoke"}, "smoke": True, "dispatch": {"large_m": 80}}))
    assert bench.main(["--record-dispatch", str(smoke_run)]) == 2
    assert "holds no GPU-measured dispatch threshold" in capsys.readouterr().err
    assert "cpu-smoke" not in json.loads(table.read_text())


def test_dispatch_proposal_from_rows():
    """Forward and input gradient at every shape must agree before "auto" leaves the fused kernel."""

    def row(m, fused, dequant, bwd_dequant=None):
        ms = {"fwd_fused": fused, "fwd_dequant": dequant, "bwd_fused": fused, "bwd_dequant": bwd_dequant or dequant}
        return {"out": 4096, "in": 4096, "M": m, "ms": ms}

    assert bench.dispatch_proposal([row(1, 1.0, 5.0)]) is None  # only decode rows: nothing to decide
    assert bench.dispatch_proposal([row(256, 1.0, 2.0), row(2048, 1.0, 0.9), row(4096, 1.0, 0.8)]) == {"large_m": 2048}
    assert bench.dispatch_proposal([row(2048, 1.0, 0.9, bwd_dequant=1.1), row(4096, 1.0, 0.8)]) == {"large_m": 4096}
    assert bench.dispatch_proposal([row(2048, 1.0, 1.2), row(4096, 1.0, 1.1)]) == {"large_m": None}


def test_relative_error_is_normwise():
    expected = torch.tensor([3.0, 4.0])
    assert bench.relative_error(expected, expected) == 0.0
    assert bench.relative_error(torch.tensor([3.0, 4.5]), expected) == pytest.approx(0.1)
    assert bench.relative_error(torch.zeros(2), torch.zeros(2)) == 0.0
