"""benchmarks.compile_report: the kernels compile for Hopper (sm_90) on this CPU-only machine, with ptxas figures."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compile_report as report

ROOT = Path(__file__).resolve().parents[2]

PTXAS_LOG = """\
ptxas info    : 11 bytes gmem
ptxas info    : Compiling entry function '_ce_rows_kernel' for 'sm_90a'
ptxas info    : Function properties for _ce_rows_kernel
    96 bytes stack frame, 100 bytes spill stores, 204 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 96 bytes cumulative stack size
"""


@pytest.mark.skipif(importlib.util.find_spec("triton.backends.nvidia") is None,
                    reason="this triton build has no NVIDIA backend (its compiler and ptxas ship in the wheel)")
def test_quick_report_compiles_every_variant_for_hopper(tmp_path):
    """The quick subset compiles for sm_90 without a GPU or driver, and every variant has real ptxas figures."""
    # Without TRITON_INTERPRET the kernels are real JIT functions, which is what the compiler needs.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.compile_report", "--quick", "--arch", "90", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    jsons, mds = sorted(tmp_path.glob("*.json")), sorted(tmp_path.glob("*.md"))
    assert len(jsons) == 1 and [p.stem for p in mds] == [jsons[0].stem], sorted(tmp_path.iterdir())
    assert jsons[0].name.startswith("compile-aot-sm90-")
    result = json.loads(jsons[0].read_text())
    assert result["complete"] is True
    variants = result["variants"]
    assert {v["kernel"] for v in variants} == {"nf4_matmul_tiled", "nf4_matmul_small", "ce_rows", "dequant"}
    assert len(variants) == len(report.all_variants(quick=True))
    for v in variants:
        assert v["arch"] == 90 and v["ok"] and v["error"] is None, v
        assert 0 < v["regs"] <= 255 and v["spill_stores"] >= 0 and v["spill_loads"] >= 0, v
        assert v["shared"] is not None and v["shared_limit"] == 227 * 1024, v
    assert "| 90 | H100 / H200 |" in mds[0].read_text()


def test_ptxas_log_parsing():
    """Registers, spills and stack frame come from `ptxas -v`; a log without them gives nothing."""
    assert report.parse_ptxas_log(PTXAS_LOG) == dict(regs=64, spill_stores=100, spill_loads=204, stack=96)
    assert report.parse_ptxas_log("ptxas fatal   : Unresolved extern function") == {}


def test_arguments_are_specialized_like_the_launcher():
    """An int 1 becomes a constant, multiples of 16 and pointers get the divisibility hint, floats stay fp32."""
    assert report._specialize(1) == ("constexpr", None)
    assert report._specialize(4096) == ("i32", "D")
    assert report._specialize(-100) == ("i32", None)
    assert report._specialize(2**33) == ("i64", "D")
    assert report._specialize(30.0) == ("fp32", None)
    assert report._specialize(report.Ptr("bf16")) == ("*bf16", "D")


def test_failures_and_shared_memory_excess_are_reported_apart():
    """A failed compile counts as failed; a config over the shared-memory limit compiled and is only listed."""
    common = dict(kernel="k", dtype="bf16", flags="-", config="c", num_warps=4, num_stages=3,
                  shared_limit=227 * 1024)
    outcomes = [
        report.Outcome(90, **common, error="CompilationError: boom"),
        report.Outcome(90, **common, ok=True, regs=255, spill_stores=8, spill_loads=8, shared=300 * 1024),
        report.Outcome(90, **common, ok=True, regs=40, spill_stores=0, spill_loads=0, shared=1024),
    ]
    (row,) = report.summary(outcomes)
    assert (row["variants"], row["failed"], row["over_shared"], row["spilling"], row["max_regs"]) == (3, 1, 1, 1, 255)
    md = report.markdown({"gpu": "aot-sm90"}, outcomes)
    assert "## Failed to compile" in md and "CompilationError: boom" in md
    assert "over smem (227 KiB)" in md
