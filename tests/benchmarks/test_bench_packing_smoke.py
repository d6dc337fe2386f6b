"""benchmarks.bench_packing: two real `studio train` jobs through the UI's queue on the CPU (a tiny random model), its
results file and table; and the budgeted probe the GPU run packs with."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ROOT
from benchmarks import bench_packing as bench
from studio.ui.packing import GpuMemory

GIB = 2**30


@pytest.mark.slow
def test_smoke_run_trains_both_jobs_through_the_queue_and_writes_results(tmp_path):
    """About 25 s on 2 cores: two 1-step QLoRA jobs of a tiny model, at most two at once."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_packing", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                          env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = tmp_path.glob("packing-cpu-smoke-*.json")
    result = json.loads(path.read_text())
    assert result["complete"] and result["none_pushed_out"] and result["rule"] == "at most 2 at a time"
    assert [r["status"] for r in result["jobs"]] == ["done", "done"] and all(r["estimate_gib"] > 0 for r in result["jobs"])
    assert 1 <= result["most_at_once"] <= 2
    table = Path(str(path).removesuffix(".json") + ".md").read_text()
    assert "| 1 | 2 x 128 |" in table and "the numbers mean nothing" in table


def test_the_budget_hides_what_lies_beyond_it(monkeypatch):
    import studio.ui.packing as packing

    monkeypatch.setattr(packing, "probe_gpu_memory", lambda: GpuMemory(80 * GIB, 70 * GIB, {7: 3 * GIB}))
    seen = bench.BudgetProbe(8)()
    assert (seen.total, seen.free, seen.used_by_pid) == (8 * GIB, 0.0, {7: 3 * GIB})  # 72 GiB hidden: nothing of the 70 free is left
    assert bench.BudgetProbe(0)().free == 70 * GIB
    monkeypatch.setattr(packing, "probe_gpu_memory", lambda: GpuMemory(80 * GIB, 78 * GIB, {}))
    assert bench.BudgetProbe(8)().free == 6 * GIB
