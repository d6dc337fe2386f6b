"""benchmarks.bench_memory: its --smoke run trains every method and case through the studio's trainer on the CPU; without CUDA it refuses."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_memory as bench

ROOT = Path(__file__).resolve().parents[2]


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The benchmark as a GPU session starts it (a module run from the repository root), offline and with the Triton interpreter."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def case_key(row: dict) -> tuple:
    return (row["method"], row["batch"], row["seq"], row["ckpt"], row["offload"], row["packing"], row["loss"], row["emb"])


def assert_trained_through_the_trainer(row: dict, runs: Path) -> None:
    """The row was measured by `trainer.train()`: its run directory holds the metrics.jsonl that the studio's
    MetricsCallback writes on every logged trainer step, one line per step (warm-up and timed, 1 + 1 in a smoke
    run) with a finite loss over exactly the case's batch x seq tokens per step, and no checkpoint."""
    assert row["path"] == "trainer" and row["global_step"] == 2
    run = runs / row["run"]
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "train_loss" in s]  # the trainer's end-of-run summary line has none
    assert [s["step"] for s in steps] == [1, 2], steps
    assert all(math.isfinite(s["train_loss"]) for s in steps)
    assert [s["tokens"] for s in steps] == [row["batch"] * row["seq"] * k for k in (1, 2)], steps
    assert not list(run.glob("checkpoints/checkpoint-*"))


@pytest.mark.slow
def test_smoke_run_writes_every_method_and_case_with_its_estimate(tmp_path):
    """About 25 s on 2 cores: a model load and a trainer per case, the studio kernels in the Triton interpreter."""
    done = run_script("--smoke", "--out", str(tmp_path), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr[-4000:]

    jsons, mds = list(tmp_path.glob("memory-smoke-*.json")), list(tmp_path.glob("memory-smoke-*.md"))
    assert len(jsons) == 1 and len(mds) == 1 and not list(tmp_path.glob("*.tmp"))
    result = json.loads(jsons[0].read_text())
    assert result["complete"] and result["smoke"]
    assert result["environment"]["gpu"] == "cpu-smoke" and "numbers mean nothing" in result["environment"]["note"]

    expected = {case_key({"method": m, **c}) for m in bench.METHODS for c in bench.smoke_cases()}
    rows = result["rows"]
    assert sorted(case_key(r) for r in rows) == sorted(expected)
    # Every case kind is in the smoke grid, so no code path waits for a GPU to be tried.
    grid = bench.smoke_cases()
    assert {c["loss"] for c in grid} == {"chunked", "fused"} and {c["ckpt"] for c in grid} == {True, False}
    assert any(c["packing"] for c in grid) and any(c["offload"] for c in grid) and any(c["emb"] for c in grid)

    for r in rows:
        assert r["estimate_allocated_gib"] > 0 and r["estimate_reserved_gib"] > 0 and r["estimate_breakdown"]
        assert "error_allocated" not in r and not r.get("oom") and not r.get("error")
        if r["offload"]:  # trl's activation offload needs a GPU: skipped, with the reason in the row
            assert "needs a GPU" in r["skipped"] and "step_ms" not in r and "path" not in r
        else:
            assert math.isfinite(r["step_ms"]) and r["step_ms"] > 0 and r["allocated_gib"] is None
            assert_trained_through_the_trainer(r, tmp_path / "runs")

    md = mds[0].read_text()
    assert "not measured" in md and "Skipped: activation offload needs a GPU" in md
    assert md.count("| llama-tiny |") == len(rows)


def test_bench_memory_refuses_without_cuda_and_reports_errors():
    if not torch.cuda.is_available():
        done = run_script("--quick", timeout=120)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "no CUDA device" in done.stderr
    grid = bench.cases("llama-8b", quick=False)
    assert {c["loss"] for c in grid} == {"chunked", "fused"} and any(c["offload"] for c in grid) and any(c["packing"] for c in grid)
    assert any(not c["ckpt"] for c in grid) and all(c["batch"] * c["seq"] <= 8192 for c in grid)
    r = bench.make_recipe(Path("/models/x"), "qlora-bnb", grid[0])
    assert (r.method, r.quant.backend, r.train.batch_size, r.data.max_length) == ("qlora", "bitsandbytes", grid[0]["batch"], grid[0]["seq"])
    # The CPU trains in float32 (the trainer then keeps mixed precision off), a GPU in bf16; the trainer runs max_steps.
    cpu = bench.make_recipe(Path("/models/x"), "qlora-studio", grid[0], "cpu", max_steps=3)
    assert (cpu.model.dtype, cpu.quant.compute_dtype, cpu.train.max_steps, r.model.dtype) == ("float32", "float32", 3, "bfloat16")
    row = {"model": "llama-1b", "method": "qlora-studio", **grid[0], "step_ms": 100.0, "tokens_per_s": 5000.0, "allocated_gib": 4.0,
           "reserved_gib": 4.4, "context_gib": 0.5, "estimate_allocated_gib": 4.2, "estimate_reserved_gib": 4.41, "error_allocated": 0.05, "error_reserved": 0.002}
    md = bench.markdown({"gpu": "X", "driver": "1", "torch": "2", "triton": "3"}, [row])
    assert "+5.0%" in md and "Within 10% of allocated: 1 of 1" in md


def test_target_verdicts_and_a_failed_case_in_the_report():
    """The printed pass/FAIL lines a GPU session summarises, and a case that raised reported without the rest lost."""
    assert bench.target_cases() == [bench.case(1, 2048, loss="fused"), bench.case(1, 2048, loss="fused", emb=True)]
    measured = {"step_ms": 900.0, "tokens_per_s": 2275.0, "reserved_gib": 7.0, "context_gib": 0.5,
                "estimate_reserved_gib": 7.1, "error_reserved": 0.01}
    under = {"model": "llama-8b", "method": "qlora-studio", **bench.target_cases()[1], **measured,
             "allocated_gib": 6.0, "estimate_allocated_gib": 6.3, "error_allocated": 0.05}
    over = {"model": "llama-8b", "method": "qlora-bnb", **bench.target_cases()[0], **measured,
            "allocated_gib": 7.0, "estimate_allocated_gib": 6.0, "error_allocated": 6.0 / 7.0 - 1}
    lines = bench.target_verdicts([under, over])
    assert lines[0].startswith("[FAIL] estimate within 10% of measured allocation: 1 of 2 cases (worst 14.3%)")
    assert lines[1].startswith("[pass] 8B target (qlora-studio") and "6.44 GB allocated" in lines[1]  # 6 GiB = 6.44 GB
    assert lines[2].startswith("[FAIL] 8B target (qlora-bnb") and "7.52 GB allocated" in lines[2]
    broken = {"model": "llama-8b", "method": "qlora-bnb", **bench.target_cases()[0], "error": "RuntimeError: boom",
              "estimate_allocated_gib": 6.0, "estimate_reserved_gib": 6.5}
    md = bench.markdown({"gpu": "X", "driver": "1", "torch": "2", "triton": "3"}, [under, broken])
    assert "| failed |" in md and "Failed: qlora-bnb b1 s2048 fused: RuntimeError: boom" in md and "[pass] 8B target" in md
    assert "FAILED: RuntimeError: boom" in bench.describe(broken)
