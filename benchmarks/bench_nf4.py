"""NF4 kernels vs bf16 and bitsandbytes on one CUDA GPU, at Llama-3-8B layer shapes.

    python benchmarks/bench_nf4.py            # full run (several minutes)
    python benchmarks/bench_nf4.py --quick    # two shapes, three batch sizes, the 1B model only

Measures, all in one process so the ratios compare like with like:
  1. matmul forward  Y = X W^T  and input gradient  dX = dY W  for W of shape (out x in) in
     {4096x4096, 14336x4096, 4096x14336, 1024x4096} and M rows in {1, 8, 16, 256, 2048, 4096, 8192}:
     ours (fused kernel, and dequantize-into-buffer + cuBLAS), bf16 torch.matmul, bitsandbytes.
  2. one LoRA training step (seq 2048, batch 1) of randomly initialised Llama-3.2-1B- and
     Llama-3-8B-shaped models: bf16 LoRA, bitsandbytes QLoRA, studio QLoRA; time and peak memory.
Writes benchmarks/results/nf4-<gpu>-<time>.json and .md naming GPU, driver, torch, triton, bnb.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

if __package__:  # imported as `benchmarks.bench_nf4` (the tests)
    from ._gpu_env import NO_CUDA_EXIT, cuda_missing, environment, timed_steps, write_results
else:  # run as `python benchmarks/bench_nf4.py`: this folder is on sys.path. (Not the repository root:
    # its kernels/ folder would shadow the PyPI package `kernels` that bitsandbytes imports.)
    from _gpu_env import NO_CUDA_EXIT, cuda_missing, environment, timed_steps, write_results

SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (1024, 4096)]  # (out, in)
MS = [1, 8, 16, 256, 2048, 4096, 8192]
QUICK_SHAPES = [(4096, 4096), (14336, 4096)]
QUICK_MS = [1, 16, 4096]
MODELS = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8),
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGETS = {
    "fwd_large_m": "fused NF4 matmul >= 0.90x bf16 speed at M >= 4096 (0.85x at M = 2048)",
    "decode": "M = 1 decode >= 3x faster than bf16",
    "step_vs_bf16": "studio QLoRA step <= 1.10x bf16 LoRA step",
    "step_vs_bnb": "studio QLoRA step <= 0.75x bitsandbytes QLoRA step",
    "memory": "studio QLoRA peak memory <= bitsandbytes QLoRA",
}


def _bench(fn) -> float:
    """Median milliseconds of fn(), L2 flushed between runs (triton.testing.do_bench)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def bench_matmul(shapes, ms) -> list[dict]:
    """Forward and input-gradient timings of every implementation at every (shape, M)."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbF

    from studio_kernels import NF4Weight, nf4_matmul_grad_input_triton, nf4_matmul_triton

    rows = []
    for out_f, in_f in shapes:
        w = torch.randn(out_f, in_f, device="cuda", dtype=torch.bfloat16) * 0.02
        packed, qs = bnbF.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
        weight = NF4Weight.from_bnb(packed, qs)  # same bytes for both 4-bit contenders
        for m in ms:
            x = torch.randn(m, in_f, device="cuda", dtype=torch.bfloat16)
            dy = torch.randn(m, out_f, device="cuda", dtype=torch.bfloat16)
            t = {
                "fwd_bf16": _bench(lambda: x @ w.t()),
                "fwd_fused": _bench(lambda: nf4_matmul_triton(x, weight, large_m="fused")),
                "fwd_dequant": _bench(lambda: nf4_matmul_triton(x, weight, large_m="dequant")),
                "fwd_bnb": _bench(lambda: bnb.matmul_4bit(x, packed.t(), quant_state=qs)),
                "bwd_bf16": _bench(lambda: dy @ w),
                "bwd_fused": _bench(lambda: nf4_matmul_grad_input_triton(dy, weight, large_m="fused")),
                "bwd_dequant": _bench(lambda: nf4_matmul_grad_input_triton(dy, weight, large_m="dequant")),
                # what bnb's MatMul4Bit.backward does for the input gradient
                "bwd_bnb": _bench(lambda: dy @ bnbF.dequantize_4bit(packed, qs).to(dy.dtype)),
            }
            row = {"out": out_f, "in": in_f, "M": m, "ms": t}
            for kind in ("fwd", "bwd"):
                best = min(t[f"{kind}_fused"], t[f"{kind}_dequant"])
                row[f"{kind}_speed_vs_bf16_fused"] = t[f"{kind}_bf16"] / t[f"{kind}_fused"]
                row[f"{kind}_speed_vs_bf16_best"] = t[f"{kind}_bf16"] / best
                row[f"{kind}_speed_vs_bnb_best"] = t[f"{kind}_bnb"] / best
            rows.append(row)
            print(
                f"  W {out_f}x{in_f} M={m:5d}  fwd fused {row['fwd_speed_vs_bf16_fused']:.2f}x bf16, "
                f"best {row['fwd_speed_vs_bf16_best']:.2f}x bf16, {row['fwd_speed_vs_bnb_best']:.2f}x bnb | "
                f"dX best {row['bwd_speed_vs_bf16_best']:.2f}x bf16",
                flush=True,
            )
        del w, packed, qs, weight
        torch.cuda.empty_cache()
    return rows


def _swap_for_bnb(model) -> None:
    """bitsandbytes QLoRA: every linear but lm_head becomes a Linear4bit (NF4, double quant)."""
    import bitsandbytes as bnb
    from torch import nn

    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and not name.endswith("lm_head"):
            q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                  compute_dtype=torch.bfloat16, quant_type="nf4", compress_statistics=True)
            # .to() quantizes an unquantized Params4bit, also when it is already on the GPU
            q.weight = bnb.nn.Params4bit(module.weight.data, requires_grad=False, quant_type="nf4",
                                         compress_statistics=True).to("cuda")
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, q)
            del module


def bench_training(model_names, seq: int, steps: int) -> list[dict]:
    """Step time and peak memory of one LoRA training step per (model, method)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from studio.quant import quantize_model_linears, register_studio_lora

    rows = []
    for name in model_names:
        for method in ("bf16_lora", "bnb_qlora", "studio_qlora"):
            gc.collect()
            torch.cuda.empty_cache()
            config = LlamaConfig(vocab_size=128256, max_position_embeddings=8192, **MODELS[name])
            torch.manual_seed(0)
            default_dtype = torch.get_default_dtype()
            torch.set_default_dtype(torch.bfloat16)  # build in bf16: an fp32 8B model would not fit twice
            try:
                with torch.device("cuda"):
                    model = LlamaForCausalLM(config)
            finally:
                torch.set_default_dtype(default_dtype)
            lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS)
            if method == "bnb_qlora":
                _swap_for_bnb(model)
            elif method == "studio_qlora":
                quantize_model_linears(model, torch.bfloat16)
                register_studio_lora(lora)
            gc.collect()
            torch.cuda.empty_cache()
            model = get_peft_model(model, lora)
            model.train()
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            ids = torch.randint(0, config.vocab_size, (1, seq), device="cuda")

            def step():
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            step_ms = timed_steps(step, steps, warmup=2) * 1e3  # warm-up: autotuning, allocator, optimizer state
            peak_gib = torch.cuda.max_memory_allocated() / 2**30
            rows.append({"model": name, "method": method, "seq": seq, "step_ms": step_ms, "peak_gib": peak_gib})
            print(f"  {name} {method:13s} step {step_ms:8.1f} ms  peak {peak_gib:6.2f} GiB", flush=True)
            del model, opt, ids
    return rows


def _verdicts(matmul_rows, train_rows) -> dict:
    """Each target with the measured value and pass/fail."""
    out = {}
    big = [r["fwd_speed_vs_bf16_fused"] for r in matmul_rows if r["M"] >= 4096]
    at2k = [r["fwd_speed_vs_bf16_fused"] for r in matmul_rows if r["M"] == 2048]
    if big or at2k:
        ok = all(v >= 0.90 for v in big) and all(v >= 0.85 for v in at2k)
        out["fwd_large_m"] = {"worst_M>=4096": min(big, default=None), "worst_M=2048": min(at2k, default=None), "pass": ok}
    dec = [r["fwd_speed_vs_bf16_best"] for r in matmul_rows if r["M"] == 1]
    if dec:
        out["decode"] = {"worst": min(dec), "pass": min(dec) >= 3.0}
    by = {(r["model"], r["method"]): r for r in train_rows}
    for model in {r["model"] for r in train_rows}:
        ours, bf16, bnb = by[(model, "studio_qlora")], by[(model, "bf16_lora")], by[(model, "bnb_qlora")]
        r1, r2 = ours["step_ms"] / bf16["step_ms"], ours["step_ms"] / bnb["step_ms"]
        out[f"step_vs_bf16[{model}]"] = {"ratio": r1, "pass": r1 <= 1.10}
        out[f"step_vs_bnb[{model}]"] = {"ratio": r2, "pass": r2 <= 0.75}
        out[f"memory[{model}]"] = {"studio_gib": ours["peak_gib"], "bnb_gib": bnb["peak_gib"],
                                   "pass": ours["peak_gib"] <= bnb["peak_gib"]}
    return out


def _markdown(env, matmul_rows, train_rows, verdicts) -> str:
    lines = [f"# NF4 benchmark: {env['gpu']}", "",
             " | ".join(f"{k} {v}" for k, v in env.items()), "",
             "## Matmul (speed = bf16 time / our time; >1 is faster)", "",
             "| W (out x in) | M | fwd fused | fwd best | fwd vs bnb | dX fused | dX best | dX vs bnb | "
             "bf16 fwd ms | fused fwd ms | bnb fwd ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in matmul_rows:
        t = r["ms"]
        lines.append(
            f"| {r['out']}x{r['in']} | {r['M']} | {r['fwd_speed_vs_bf16_fused']:.2f}x | {r['fwd_speed_vs_bf16_best']:.2f}x"
            f" | {r['fwd_speed_vs_bnb_best']:.2f}x | {r['bwd_speed_vs_bf16_fused']:.2f}x | {r['bwd_speed_vs_bf16_best']:.2f}x"
            f" | {r['bwd_speed_vs_bnb_best']:.2f}x | {t['fwd_bf16']:.3f} | {t['fwd_fused']:.3f} | {t['fwd_bnb']:.3f} |"
        )
    if train_rows:
        lines += ["", "## LoRA training step (batch 1)", "", "| model | method | seq | step ms | peak GiB |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['method']} | {r['seq']} | {r['step_ms']:.1f} | {r['peak_gib']:.2f} |"
                  for r in train_rows]
    lines += ["", "## Targets", "", "| target | measured | pass |", "|---|---|---|"]
    for key, v in verdicts.items():
        measured = ", ".join(f"{k}={x:.3f}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items() if k != "pass")
        lines.append(f"| {TARGETS[key.split('[')[0]]} {key[len(key.split('[')[0]):]} | {measured} | {'yes' if v['pass'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two shapes, M in {1, 16, 4096}, 1B model only")
    parser.add_argument("--skip-training", action="store_true", help="only the matmul benchmarks")
    parser.add_argument("--seq", type=int, default=2048, help="training sequence length (default 2048)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per method (default 5)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    if cuda_missing("bench_nf4", "this benchmark measures GPU kernels"):
        return NO_CUDA_EXIT

    env = environment(bitsandbytes=True)
    print(f"GPU {env['gpu']} | driver {env['driver']} | torch {env['torch']} | triton {env['triton']}", flush=True)
    print("matmul (speed relative to bf16 torch.matmul; >1 is faster):", flush=True)
    matmul_rows = bench_matmul(QUICK_SHAPES if args.quick else SHAPES, QUICK_MS if args.quick else MS)
    train_rows = []
    if not args.skip_training:
        print("LoRA training step:", flush=True)
        train_rows = bench_training(["llama-1b"] if args.quick else ["llama-1b", "llama-8b"], args.seq, args.steps)
    verdicts = _verdicts(matmul_rows, train_rows)
    print("targets:")
    for key, v in verdicts.items():
        print(f"  [{'pass' if v['pass'] else 'FAIL'}] {TARGETS[key.split('[')[0]]} {key} -> "
              + ", ".join(f"{k}={x:.3f}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items() if k != "pass"))

    result = {"environment": env, "quick": args.quick, "matmul": matmul_rows, "training": train_rows,
              "targets": verdicts}
    write_results(args.out, "nf4", env, result, lambda: _markdown(env, matmul_rows, train_rows, verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
