"""Fused linear + cross-entropy vs plain torch (linear + F.cross_entropy) on one CUDA GPU.

    python -m benchmarks.bench_fused_ce              # three LM-head shapes, frozen and trained head
    python -m benchmarks.bench_fused_ce --quick      # the Llama-3 shape only
    python -m benchmarks.bench_fused_ce --budget-mib 512
    python -m benchmarks.bench_fused_ce --smoke      # every code path on the CPU at tiny shapes

Measures forward + backward of loss = CE(X @ W^T, labels) (bf16 X and W, 1/8 of labels ignored),
all in one process so the ratios compare like with like, at
    tokens 8192, hidden 4096, vocab 128256   (Llama-3-8B head)
    tokens 4096, hidden 2560, vocab 262144   (Gemma-3-4B-sized head)
    tokens 4096, hidden 3840, vocab 262144   (Gemma-3-12B-sized head)
for a frozen head (W.requires_grad False: the LoRA case, only dX) and a trained head (dX and dW):
  ours         fused_linear_cross_entropy (Triton row kernel, cuBLAS matmuls, chunked)
  torch_bf16   F.cross_entropy(F.linear(X, W), labels)          - bf16 logits
  torch_fp32   F.cross_entropy(F.linear(X, W).float(), labels)  - the upcast transformers does
Time: median ms (triton.testing.do_bench). Memory: peak allocated during one forward + backward
minus what was allocated before it (the inputs, with no gradients held), so it counts logits, their
gradient and dX / dW; "beyond grads" subtracts dX / dW, which every implementation must return.
Targets (pass/FAIL per row): ours at least 0.9x the speed of torch_bf16 and of torch_fp32, and ours'
memory beyond the gradients at most 10% of the full fp32 logits (tokens x vocab x 4 bytes).
Writes benchmarks/results/fused_ce-<gpu>-<time>.json (rewritten after every row) and .md naming GPU,
driver, torch, triton. --smoke writes fused_ce-smoke-cpu-smoke-<time>.*: its numbers mean nothing,
and memory is not measured on the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmarks import RESULTS
from benchmarks._gpu_env import (
    NO_CUDA_EXIT,
    Results,
    cuda_missing,
    environment,
    free_memory,
    median_ms,
    peak_allocated_gib,
    reset_peak_memory,
    start_smoke,
    synchronize,
)

SHAPES = [(8192, 4096, 128256), (4096, 2560, 262144), (4096, 3840, 262144)]  # (tokens, hidden, vocab)
# Smoke: vocab 1000 fits one kernel block with a masked tail; vocab 5000 needs two blocks (the interpreter's
# block is 4096), the last one partial. 22 tokens leave a short last chunk. Few tokens: the interpreter
# runs one kernel program per token, at several milliseconds each.
SMOKE_SHAPES = [(48, 64, 1000), (22, 48, 5000)]
# 64 KiB of logits per chunk: 16 tokens at vocab 1000, 4 at vocab 5000, so the chunk loop runs 3 and 6 times.
SMOKE_BUDGET_BYTES = 64 * 2**10
IMPLS = ("ours", "torch_bf16", "torch_fp32")
BASELINES = ("torch_bf16", "torch_fp32")
SPEED_TARGET = 0.9  # ours must run at least this fraction of each baseline's speed
MEMORY_TARGET = 0.10  # ours' memory beyond the gradients, as a fraction of the full fp32 logits
# do_bench's warmup and rep are milliseconds, not counts: a 40-100 ms step needs ~250 ms for ~5 timed runs.
GPU_WARMUP_MS, GPU_REP_MS = 25, 250


def _step_fn(impl: str, x, w, labels, chunk_size: int):
    """A closure running one forward + backward of `impl` (grads reset first)."""
    import torch.nn.functional as F

    from studio_kernels.ops.fused_ce import fused_linear_cross_entropy

    def step():
        x.grad = None
        w.grad = None
        if impl == "ours":
            # backend="triton", not "auto": on CUDA the same, and on the CPU (--smoke) it runs the Triton row
            # kernel in the interpreter instead of silently measuring the torch reference path.
            loss = fused_linear_cross_entropy(x, w, labels, chunk_size=chunk_size, backend="triton")
        elif impl == "torch_bf16":
            loss = F.cross_entropy(F.linear(x, w), labels)
        else:
            loss = F.cross_entropy(F.linear(x, w).float(), labels)
        loss.backward()
        return loss.detach()

    return step


def _peak_extra_mib(step, device: str) -> float | None:
    """MiB allocated at the peak of one step() beyond what was allocated before it; None on the CPU.

    The caller clears x.grad and w.grad first: step() frees them on entry, so counting them in `before`
    would hide dX / dW from the peak.
    """
    if device == "cpu":
        return None
    free_memory(device)
    synchronize(device)
    before = torch.cuda.memory_allocated()
    reset_peak_memory(device)
    step()
    synchronize(device)
    return (peak_allocated_gib(device) * 2**30 - before) / 2**20


def _inputs(tokens: int, hidden: int, vocab: int, dtype: torch.dtype, device: str):
    """Seeded X (tokens, hidden; requires grad), W (vocab, hidden), labels with every 8th ignored."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(tokens, hidden, device=device, dtype=dtype, generator=g).requires_grad_()
    w0 = torch.randn(vocab, hidden, device=device, dtype=dtype, generator=g) * hidden**-0.5
    labels = torch.randint(0, vocab, (tokens,), device=device, generator=g)
    labels[::8] = -100
    return x, w0, labels


def _measure(impl: str, step, x, w, device: str, row: dict, outputs: dict) -> None:
    """Fill row["ms"][impl] and row["peak_extra_mib"][impl] (None on out-of-memory); keep loss and dX."""
    try:
        loss = step()  # also pays for Triton's compilation, outside the timed runs
        outputs[impl] = (loss.float().item(), x.grad.float().clone())
        x.grad = None
        w.grad = None
        row["peak_extra_mib"][impl] = _peak_extra_mib(step, device)
        row["ms"][impl] = median_ms(step, device, warmup=GPU_WARMUP_MS, rep=GPU_REP_MS)
    except torch.cuda.OutOfMemoryError:
        row["ms"][impl] = row["peak_extra_mib"][impl] = None
        print(f"  {impl}: out of memory", flush=True)
    x.grad = None
    w.grad = None
    free_memory(device)


def _ratio(num, den) -> float | None:
    """num / den, or None when either is missing (out of memory, or memory not measured on the CPU)."""
    return None if num is None or not den else num / den


def _compare(row: dict, outputs: dict, x, w) -> None:
    """Add to `row` the differences vs fp32, the speed and memory ratios, and the target verdicts."""
    if "ours" in outputs and "torch_fp32" in outputs:
        (l_ours, dx_ours), (l_ref, dx_ref) = outputs["ours"], outputs["torch_fp32"]
        row["loss_abs_diff_vs_fp32"] = abs(l_ours - l_ref)
        row["dx_max_rel_diff_vs_fp32"] = ((dx_ours - dx_ref).abs().max() / dx_ref.abs().max()).item()
    for base in BASELINES:
        row[f"speed_vs_{base}"] = _ratio(row["ms"][base], row["ms"]["ours"])
        row[f"memory_saving_vs_{base}"] = _ratio(row["peak_extra_mib"][base], row["peak_extra_mib"]["ours"])
    grads = x.numel() * x.element_size() + (w.numel() * w.element_size() if w.requires_grad else 0)
    row["grad_mib"] = grads / 2**20
    ours = row["peak_extra_mib"]["ours"]
    row["ours_beyond_grads_mib"] = None if ours is None else ours - row["grad_mib"]
    row["fp32_logits_mib"] = row["tokens"] * row["vocab"] * 4 / 2**20
    row["targets"] = target_verdicts(row)


def _verdict(value: float | None, ok: bool) -> str:
    return "not measured" if value is None else ("pass" if ok else "FAIL")


def target_verdicts(row: dict) -> dict[str, str]:
    """"pass", "FAIL" or "not measured" for each target of one row, from its ratios and memory.

    Speed: ours at least SPEED_TARGET x each baseline's speed. Memory: ours' peak beyond the dX / dW every
    implementation must return at most MEMORY_TARGET of the full fp32 logits; counting dW would fail any
    trained head (dW alone is vocab x hidden), whatever the loss does. "not measured" when a number is
    missing: an implementation ran out of memory, or memory on the CPU.
    """
    verdicts = {}
    for base in BASELINES:
        speed = row.get(f"speed_vs_{base}")
        verdicts[f"speed_vs_{base}"] = _verdict(speed, speed is not None and speed >= SPEED_TARGET)
    mem = row.get("ours_beyond_grads_mib")
    verdicts["memory"] = _verdict(mem, mem is not None and mem <= MEMORY_TARGET * row["fp32_logits_mib"])
    return verdicts


def _fmt(v, spec=".2f", missing="OOM"):
    return missing if v is None else format(v, spec)


def _x(v, spec=".2f") -> str:
    """A ratio as a cell: "1.23x", or "-" when it could not be computed."""
    return "-" if v is None else f"{v:{spec}}x"


def _mib_cell(row: dict, impl: str) -> str:
    """The memory of `impl` as a cell: OOM when it did not run, "not measured" on the CPU."""
    if row["ms"][impl] is None:
        return "OOM"
    return _fmt(row["peak_extra_mib"][impl], ".0f", "not measured")


def _row_line(row: dict) -> str:
    """One progress line: time and memory of each implementation, then the verdicts."""
    def cell(k):
        if row["ms"][k] is None:
            return f"{k} OOM"
        mib = row["peak_extra_mib"][k]
        return f"{k} {row['ms'][k]:.2f} ms " + ("memory not measured" if mib is None else f"{mib:.0f} MiB")

    cells = " | ".join(cell(k) for k in IMPLS)
    verdicts = ", ".join(f"{k} {v}" for k, v in row["targets"].items())
    return (
        f"  T={row['tokens']} H={row['hidden']} V={row['vocab']} {row['head']:7s} chunk {row['chunk_size']}: "
        f"{cells} | targets: {verdicts}"
    )


def bench(shapes, budget_bytes: int, device: str = "cuda", dtype=torch.bfloat16, on_row=None) -> list[dict]:
    """One row per shape and head (frozen, trained), each implementation timed; on_row(rows) after each row.

    on_row lets main() write the partial results as they come: a GPU session cut off by its time limit
    keeps every row measured before the cut.
    """
    from studio_kernels.ops.fused_ce import chunk_size_for

    rows = []
    for tokens, hidden, vocab in shapes:
        chunk = chunk_size_for(vocab, hidden, dtype, budget_bytes)
        x, w0, labels = _inputs(tokens, hidden, vocab, dtype, device)
        for head in ("frozen", "trained"):
            w = w0.detach().requires_grad_(head == "trained")
            row = {"tokens": tokens, "hidden": hidden, "vocab": vocab, "head": head, "chunk_size": chunk,
                   "ms": {}, "peak_extra_mib": {}}
            outputs = {}
            for impl in IMPLS:
                _measure(impl, _step_fn(impl, x, w, labels, chunk), x, w, device, row, outputs)
            _compare(row, outputs, x, w)
            rows.append(row)
            print(_row_line(row), flush=True)
            if on_row is not None:
                on_row(rows)
            del outputs
        del x, w0, w, labels
        free_memory(device)
    return rows


def _markdown(env: dict, rows: list[dict], budget_bytes: int, dtype_name: str) -> str:
    """The results as two tables: measurements, then the targets with their values and verdicts."""
    budget = f"{budget_bytes / 2**20:g} MiB" if budget_bytes >= 2**20 else f"{budget_bytes / 2**10:g} KiB"
    lines = [
        f"# Fused linear + cross-entropy vs torch (forward + backward, {dtype_name})",
        "",
        f"GPU **{env['gpu']}**, driver {env['driver']}, CUDA {env['cuda']}, torch {env['torch']}, "
        f"triton {env['triton']}. Chunk budget {budget}.",
        "",
    ]
    if env.get("note"):
        lines += [f"**{env['note']}**", ""]
    lines += [
        "Peak extra memory: peak allocated during one forward + backward, minus the inputs (no gradients held "
        "before), so it includes dX / dW; \"beyond grads\" subtracts them.",
        "torch_bf16 = `F.cross_entropy(F.linear(x, w), y)`; torch_fp32 = the same on `.float()` logits.",
        "",
        "| tokens | hidden | vocab | head | chunk | ours ms | torch bf16 ms | torch fp32 ms | ours MiB "
        "| torch bf16 MiB | torch fp32 MiB | speed vs bf16 | speed vs fp32 | memory saving vs bf16 "
        "| loss diff vs fp32 | dX rel diff vs fp32 |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tokens']} | {r['hidden']} | {r['vocab']} | {r['head']} | {r['chunk_size']} | "
            + " | ".join(_fmt(r["ms"][k]) for k in IMPLS) + " | "
            + " | ".join(_mib_cell(r, k) for k in IMPLS) + " | "
            + f"{_x(r.get('speed_vs_torch_bf16'))} | {_x(r.get('speed_vs_torch_fp32'))} | "
            + f"{_x(r.get('memory_saving_vs_torch_bf16'), '.1f')} | "
            + f"{_fmt(r.get('loss_abs_diff_vs_fp32'), '.2e', '-')} | "
            + f"{_fmt(r.get('dx_max_rel_diff_vs_fp32'), '.2e', '-')} |"
        )
    lines += [
        "",
        f"Targets: ours at least {SPEED_TARGET}x the speed of each torch loss; ours' memory beyond dX / dW at most "
        f"{MEMORY_TARGET:.0%} of the full fp32 logits (tokens x vocab x 4 bytes).",
        "",
        "| tokens | vocab | head | speed vs bf16 | speed vs fp32 | ours MiB beyond grads | 10% of fp32 logits MiB |",
        "|---:|---:|---|---|---|---|---:|",
    ]
    for r in rows:
        t = r["targets"]
        lines.append(
            f"| {r['tokens']} | {r['vocab']} | {r['head']} | "
            f"{_x(r.get('speed_vs_torch_bf16'))} {t['speed_vs_torch_bf16']} | "
            f"{_x(r.get('speed_vs_torch_fp32'))} {t['speed_vs_torch_fp32']} | "
            + (t["memory"] if r["ours_beyond_grads_mib"] is None
               else f"{r['ours_beyond_grads_mib']:.0f} {t['memory']}")
            + f" | {MEMORY_TARGET * r['fp32_logits_mib']:.4g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Run the benchmark (or with --smoke, its every code path on the CPU) and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only tokens 8192, hidden 4096, vocab 128256")
    parser.add_argument("--budget-mib", type=int, default=256, help="logits chunk budget (default 256 MiB)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes on the CPU, Triton in its interpreter, a 64 KiB chunk budget: "
                             "checks that every code path runs; the numbers mean nothing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if args.smoke:
        device = start_smoke()  # before anything imports studio_kernels
        shapes, budget_bytes = SMOKE_SHAPES, SMOKE_BUDGET_BYTES
    else:
        if cuda_missing("bench_fused_ce", "this benchmark measures GPU kernels"):
            return NO_CUDA_EXIT
        device = "cuda"
        shapes, budget_bytes = (SHAPES[:1] if args.quick else SHAPES), args.budget_mib * 2**20
    # torch's CPU bf16 matmul and cross-entropy work, and the row kernel computes in fp32 whatever it loads,
    # so the smoke run keeps the GPU dtype.
    dtype = torch.bfloat16

    env = environment(device)
    results = Results(args.out, "fused_ce-smoke" if args.smoke else "fused_ce", env)
    print(f"GPU {env['gpu']} | driver {env['driver']} | torch {env['torch']} | triton {env['triton']}", flush=True)
    result = {
        "environment": env, "smoke": args.smoke, "dtype": str(dtype).removeprefix("torch."),
        "budget_mib": budget_bytes / 2**20, "quick": args.quick,
        "targets": {"speed_vs_torch_min": SPEED_TARGET, "memory_beyond_grads_max_fraction_of_fp32_logits": MEMORY_TARGET},
        "results": [],
    }
    results.save(result)

    def save_partial(rows):
        results.save({**result, "results": rows})

    rows = bench(shapes, budget_bytes, device, dtype, on_row=save_partial)
    result["results"] = rows
    results.finish(result, lambda: _markdown(env, rows, budget_bytes, result["dtype"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
