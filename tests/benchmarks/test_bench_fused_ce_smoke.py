"""benchmarks.bench_fused_ce: its --smoke run on the CPU, and the target verdicts and tables of a GPU run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks import bench_fused_ce as bench

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_measures_every_row_and_writes_complete_results(tmp_path):
    """The whole benchmark on the CPU: the Triton row kernel in the interpreter, several chunks per shape."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_fused_ce", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr

    jsons, mds = sorted(tmp_path.glob("*.json")), sorted(tmp_path.glob("*.md"))
    assert len(jsons) == 1 and [p.stem for p in mds] == [jsons[0].stem], sorted(tmp_path.iterdir())
    assert jsons[0].name.startswith("fused_ce-smoke-cpu-smoke-")
    result = json.loads(jsons[0].read_text())
    assert result["complete"] is True and result["smoke"] is True and result["dtype"] == "bfloat16"
    assert result["environment"]["gpu"] == "cpu-smoke" and "mean nothing" in result["environment"]["note"]

    rows = result["results"]
    expected = [(t, h, v, head) for t, h, v in bench.SMOKE_SHAPES for head in ("frozen", "trained")]
    assert [(r["tokens"], r["hidden"], r["vocab"], r["head"]) for r in rows] == expected
    for r in rows:
        assert set(r["ms"]) == set(bench.IMPLS)
        assert all(math.isfinite(ms) and ms > 0 for ms in r["ms"].values()), r["ms"]
        assert r["chunk_size"] * 2 < r["tokens"]  # the chunk loop ran at least three times
        # The fused loss through the interpreted kernel agrees with the fp32-logit torch loss.
        assert r["loss_abs_diff_vs_fp32"] < 1e-3 and r["dx_max_rel_diff_vs_fp32"] < 2e-2, r
        assert all(v is None for v in r["peak_extra_mib"].values())  # no allocator counters on the CPU
        assert r["targets"]["memory"] == "not measured"
        assert {r["targets"][f"speed_vs_{b}"] for b in bench.BASELINES} <= {"pass", "FAIL"}

    md = mds[0].read_text()
    assert "mean nothing" in md and "not measured" in md and md.count("| 48 | 1000 | frozen |") == 1
    assert done.stdout.count("targets: speed_vs_torch_bf16") == len(rows)  # one progress line per row


def _row(tokens, hidden, vocab, head, ms, peak):
    return {"tokens": tokens, "hidden": hidden, "vocab": vocab, "head": head, "chunk_size": 960,
            "ms": dict(zip(bench.IMPLS, ms)), "peak_extra_mib": dict(zip(bench.IMPLS, peak))}


def _compared(row):
    """`row` completed as a GPU run would: ratios, gradient sizes and verdicts (meta tensors: sizes only)."""
    x = torch.empty(row["tokens"], row["hidden"], dtype=torch.bfloat16, device="meta")
    w = torch.empty(row["vocab"], row["hidden"], dtype=torch.bfloat16, device="meta")
    w.requires_grad_(row["head"] == "trained")
    bench._compare(row, {}, x, w)
    return row


def test_target_verdicts_pass_fail_and_not_measured():
    # Llama-3 head: fp32 logits 4008 MiB, so 400.8 MiB beyond the gradients; dX is 64 MiB, dW 1002 MiB.
    ok = _compared(_row(8192, 4096, 128256, "frozen", (30.0, 27.0, 40.0), (300.0, 4500.0, 9000.0)))
    assert ok["targets"] == {"speed_vs_torch_bf16": "pass", "speed_vs_torch_fp32": "pass", "memory": "pass"}
    assert ok["ours_beyond_grads_mib"] == 236.0 and ok["memory_saving_vs_torch_bf16"] == 15.0

    # The trained head's dW alone is more than 10% of the logits: it does not count against the loss.
    trained = _compared(_row(8192, 4096, 128256, "trained", (50.0, 60.0, None), (1400.0, 6000.0, None)))
    assert trained["targets"] == {"speed_vs_torch_bf16": "pass", "speed_vs_torch_fp32": "not measured", "memory": "pass"}

    slow_and_big = _compared(_row(8192, 4096, 128256, "frozen", (40.0, 35.0, 40.0), (500.0, 4500.0, 9000.0)))
    assert slow_and_big["targets"] == {"speed_vs_torch_bf16": "FAIL", "speed_vs_torch_fp32": "pass", "memory": "FAIL"}

    # Exactly at the thresholds passes.
    edge = bench.target_verdicts({"speed_vs_torch_bf16": 0.9, "speed_vs_torch_fp32": 0.9,
                                  "ours_beyond_grads_mib": 10.0, "fp32_logits_mib": 100.0})
    assert set(edge.values()) == {"pass"}
    cpu = bench.target_verdicts({"speed_vs_torch_bf16": 0.2, "speed_vs_torch_fp32": None,
                                 "ours_beyond_grads_mib": None, "fp32_logits_mib": 1.0})
    assert cpu == {"speed_vs_torch_bf16": "FAIL", "speed_vs_torch_fp32": "not measured", "memory": "not measured"}


def test_gpu_tables_show_memory_verdicts_and_out_of_memory():
    """The cells only a GPU run fills: measured MiB, an implementation out of memory."""
    rows = [_compared(_row(8192, 4096, 128256, "frozen", (30.0, 27.0, 40.0), (300.0, 4500.0, 9000.0))),
            # Gemma-3-12B-sized trained head: dX 30 MiB + dW 1920 MiB of gradients, 250 MiB beyond them.
            _compared(_row(4096, 3840, 262144, "trained", (50.0, 60.0, None), (2200.0, 6000.0, None)))]
    env = {"gpu": "NVIDIA H200", "driver": "570", "cuda": "12.8", "torch": "2.8", "triton": "3.4"}
    md = bench._markdown(env, rows, 256 * 2**20, "bfloat16")
    assert "Chunk budget 256 MiB" in md and "mean nothing" not in md
    assert "| 300 | 4500 | 9000 |" in md and "| 2200 | 6000 | OOM |" in md
    assert "236 pass | 400.8 |" in md and "250 pass | 409.6 |" in md and "0.90x pass" in md and "- not measured" in md
    line = bench._row_line(rows[1])
    assert "torch_fp32 OOM" in line and "ours 50.00 ms 2200 MiB" in line and "memory pass" in line
