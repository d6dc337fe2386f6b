"""Fused linear + cross-entropy vs plain torch (linear + F.cross_entropy) on one CUDA GPU.

    python benchmarks/bench_fused_ce.py              # three LM-head shapes, frozen and trained head
    python benchmarks/bench_fused_ce.py --quick      # the Llama-3 shape only
    python benchmarks/bench_fused_ce.py --budget-mib 512

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
minus what was allocated before it (inputs), so it counts logits, their gradient and dX / dW.
Writes benchmarks/results/fused_ce-<gpu>-<time>.json and .md naming GPU, driver, torch, triton.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

if __package__:  # imported as `benchmarks.bench_fused_ce` (the tests)
    from ._gpu_env import NO_CUDA_EXIT, cuda_missing, environment, write_results
else:  # run as `python benchmarks/bench_fused_ce.py`: this folder is on sys.path. (Not the repository root:
    # its kernels/ folder would shadow the PyPI package `kernels` that bitsandbytes imports.)
    from _gpu_env import NO_CUDA_EXIT, cuda_missing, environment, write_results

SHAPES = [(8192, 4096, 128256), (4096, 2560, 262144), (4096, 3840, 262144)]  # (tokens, hidden, vocab)
IMPLS = ("ours", "torch_bf16", "torch_fp32")


def _step_fn(impl: str, x, w, labels, chunk_size: int):
    """A closure running one forward + backward of `impl` (grads reset first)."""
    import torch.nn.functional as F

    from studio_kernels import fused_linear_cross_entropy

    def step():
        x.grad = None
        w.grad = None
        if impl == "ours":
            loss = fused_linear_cross_entropy(x, w, labels, chunk_size=chunk_size)
        elif impl == "torch_bf16":
            loss = F.cross_entropy(F.linear(x, w), labels)
        else:
            loss = F.cross_entropy(F.linear(x, w).float(), labels)
        loss.backward()
        return loss.detach()

    return step


def _peak_extra_bytes(step) -> int:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def bench(shapes, budget_bytes: int) -> list[dict]:
    from triton.testing import do_bench

    from studio_kernels import chunk_size_for

    rows = []
    for tokens, hidden, vocab in shapes:
        chunk = chunk_size_for(vocab, hidden, torch.bfloat16, budget_bytes)
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
        w0 = torch.randn(vocab, hidden, device="cuda", dtype=torch.bfloat16, generator=g) * hidden**-0.5
        labels = torch.randint(0, vocab, (tokens,), device="cuda", generator=g)
        labels[::8] = -100
        for head in ("frozen", "trained"):
            w = w0.detach().requires_grad_(head == "trained")
            row = {"tokens": tokens, "hidden": hidden, "vocab": vocab, "head": head, "chunk_size": chunk,
                   "ms": {}, "peak_extra_mib": {}}
            outputs = {}
            for impl in IMPLS:
                step = _step_fn(impl, x, w, labels, chunk)
                try:
                    loss = step()
                    outputs[impl] = (loss.float().item(), x.grad.float().clone())
                    row["peak_extra_mib"][impl] = _peak_extra_bytes(step) / 2**20
                    row["ms"][impl] = do_bench(step, warmup=5, rep=30, return_mode="median")
                except torch.cuda.OutOfMemoryError:
                    row["ms"][impl] = row["peak_extra_mib"][impl] = None
                    print(f"  {impl}: out of memory", flush=True)
                x.grad = None
                w.grad = None
                gc.collect()
                torch.cuda.empty_cache()
            if "ours" in outputs and "torch_fp32" in outputs:
                (l_ours, dx_ours), (l_ref, dx_ref) = outputs["ours"], outputs["torch_fp32"]
                row["loss_abs_diff_vs_fp32"] = abs(l_ours - l_ref)
                row["dx_max_rel_diff_vs_fp32"] = ((dx_ours - dx_ref).abs().max() / dx_ref.abs().max()).item()
            for base in ("torch_bf16", "torch_fp32"):
                if row["ms"].get("ours") and row["ms"].get(base):
                    row[f"speed_vs_{base}"] = row["ms"][base] / row["ms"]["ours"]
                    row[f"memory_saving_vs_{base}"] = row["peak_extra_mib"][base] / row["peak_extra_mib"]["ours"]
            rows.append(row)
            print(
                f"  T={tokens} H={hidden} V={vocab} {head:7s} chunk {chunk}: "
                + " | ".join(
                    f"{k} {row['ms'][k]:.2f} ms {row['peak_extra_mib'][k]:.0f} MiB" if row["ms"][k] else f"{k} OOM"
                    for k in IMPLS
                ),
                flush=True,
            )
            del outputs
        del x, w0, labels
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def _fmt(v, spec=".2f", missing="OOM"):
    return missing if v is None else format(v, spec)


def _markdown(env: dict, rows: list[dict], budget_mib: int) -> str:
    lines = [
        "# Fused linear + cross-entropy vs torch (forward + backward, bf16)",
        "",
        f"GPU **{env['gpu']}**, driver {env['driver']}, CUDA {env['cuda']}, torch {env['torch']}, "
        f"triton {env['triton']}. Chunk budget {budget_mib} MiB.",
        "",
        "Peak extra memory: peak allocated during one forward + backward, minus the inputs.",
        "torch_bf16 = `F.cross_entropy(F.linear(x, w), y)`; torch_fp32 = the same on `.float()` logits.",
        "",
        "| tokens | hidden | vocab | head | chunk | ours ms | torch bf16 ms | torch fp32 ms | ours MiB "
        "| torch bf16 MiB | torch fp32 MiB | speed vs bf16 | memory saving vs bf16 | dX rel diff vs fp32 |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tokens']} | {r['hidden']} | {r['vocab']} | {r['head']} | {r['chunk_size']} | "
            + " | ".join(_fmt(r["ms"][k]) for k in IMPLS) + " | "
            + " | ".join(_fmt(r["peak_extra_mib"][k], ".0f") for k in IMPLS) + " | "
            + f"{_fmt(r.get('speed_vs_torch_bf16'), '.2f', '-')}x | "
            + f"{_fmt(r.get('memory_saving_vs_torch_bf16'), '.1f', '-')}x | "
            + f"{_fmt(r.get('dx_max_rel_diff_vs_fp32'), '.2e', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only tokens 8192, hidden 4096, vocab 128256")
    parser.add_argument("--budget-mib", type=int, default=256, help="logits chunk budget (default 256 MiB)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    if cuda_missing("bench_fused_ce", "this benchmark measures GPU kernels"):
        return NO_CUDA_EXIT

    env = environment()
    print(f"GPU {env['gpu']} | driver {env['driver']} | torch {env['torch']} | triton {env['triton']}", flush=True)
    rows = bench(SHAPES[:1] if args.quick else SHAPES, args.budget_mib * 2**20)

    result = {"environment": env, "budget_mib": args.budget_mib, "quick": args.quick, "results": rows}
    write_results(args.out, "fused_ce", env, result, lambda: _markdown(env, rows, args.budget_mib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
