"""NF4 kernels vs bf16 and bitsandbytes on one CUDA GPU, at Llama-3-8B layer shapes.

    python -m benchmarks.bench_nf4            # full run (several minutes)
    python -m benchmarks.bench_nf4 --quick    # two shapes, three batch sizes, the 1B model only
    python -m benchmarks.bench_nf4 --smoke    # every code path on the CPU at tiny shapes (numbers mean nothing)

Measures, all in one process so the ratios compare like with like:
  1. matmul forward  Y = X W^T  and input gradient  dX = dY W  for W of shape (out x in) in
     {4096x4096, 14336x4096, 4096x14336, 1024x4096} and M rows in {1, 8, 16, 256, 2048, 4096, 8192}:
     ours (fused kernel, and dequantize-into-buffer + cuBLAS), bf16 torch.matmul, bitsandbytes.
  2. one LoRA training step (seq 2048, batch 1) of randomly initialised Llama-3.2-1B- and
     Llama-3-8B-shaped models: bf16 LoRA, bitsandbytes QLoRA, studio QLoRA; time and peak memory.
Writes benchmarks/results/nf4-<gpu>-<time>.json (rewritten after every measurement) and, at the end,
the .md beside it, naming GPU, driver, torch, triton, bnb.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import torch

from benchmarks import RESULTS
from benchmarks._gpu_env import (
    NO_CUDA_EXIT,
    Results,
    cuda_missing,
    environment,
    first_and_mean_step,
    free_memory,
    median_ms,
    peak_allocated_gib,
    start_smoke,
)

DTYPE = torch.bfloat16  # activations, dense weights and the QLoRA compute dtype
SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (1024, 4096)]  # (out, in)
MS = [1, 8, 16, 256, 2048, 4096, 8192]
QUICK_SHAPES = [(4096, 4096), (14336, 4096)]
QUICK_MS = [1, 16, 4096]
# --smoke: in/out features that are not multiples of the 64-value NF4 block or of a tile, and one M per
# kernel variant (read-weights-once at M <= 16, the tiled kernel with one and with two row tiles).
SMOKE_SHAPES = [(96, 160), (160, 96)]
SMOKE_MS = [1, 17, 80]
MODELS = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
    "tiny": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
}
METHODS = ("studio_qlora", "bf16_lora", "bnb_qlora")  # ours first: a session cut off still has its row
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGETS = {
    "values": "fused NF4 matmul equals dequantize + cuBLAS (normwise error <= 1e-2) at every measured row",
    "fwd_large_m": "fused NF4 matmul >= 0.90x bf16 speed at M >= 4096 (0.85x at M = 2048)",
    "decode": "M = 1 decode >= 3x faster than bf16",
    "step_vs_bf16": "studio QLoRA step <= 1.10x bf16 LoRA step",
    "step_vs_bnb": "studio QLoRA step <= 0.75x bitsandbytes QLoRA step",
    "memory": "studio QLoRA peak memory <= bitsandbytes QLoRA",
}


@dataclass(frozen=True)
class Plan:
    """What one run measures: matmul shapes and row counts, the models trained and how long.

    large_m and mid_m are the row counts the forward-speed target is judged at (4096 and 2048 on the GPU);
    the smoke plan maps them onto its own tiny M so that the verdict code runs too.
    """

    shapes: list[tuple[int, int]]
    ms: list[int]
    models: list[str]
    seq: int
    steps: int
    warmup: int
    large_m: int = 4096
    mid_m: int = 2048


def plan_for(args: argparse.Namespace) -> Plan:
    """The plan that --smoke / --quick / the full run stand for, with --seq and --steps applied."""
    if args.smoke:
        # One warm-up step is enough to run the warm-up code; the interpreter makes every step cost seconds.
        return Plan(SMOKE_SHAPES, SMOKE_MS, ["tiny"], args.seq or 64, args.steps or 2, warmup=1, large_m=80, mid_m=17)
    models = ["llama-1b"] if args.quick else ["llama-1b", "llama-8b"]
    return Plan(QUICK_SHAPES if args.quick else SHAPES, QUICK_MS if args.quick else MS, models,
                args.seq or 2048, args.steps or 5, warmup=2)


def _speeds(t: dict) -> dict:
    """Speed ratios of one matmul row (bf16 or bnb time / ours; >1 means ours is faster)."""
    row = {}
    for kind in ("fwd", "bwd"):
        best = min(t[f"{kind}_fused"], t[f"{kind}_dequant"])
        row[f"{kind}_speed_vs_bf16_fused"] = t[f"{kind}_bf16"] / t[f"{kind}_fused"]
        row[f"{kind}_speed_vs_bf16_best"] = t[f"{kind}_bf16"] / best
        row[f"{kind}_speed_vs_bnb_best"] = t[f"{kind}_bnb"] / best
    return row


# The fused kernel's output against cuBLAS on the same NF4 bytes dequantized, normwise
# (||a - b|| / ||b||): both accumulate in fp32 and round once to bf16, so they differ by output rounding
# and summation order, about 2^-9 relative; a wrong tile or mask is off by orders of magnitude more.
VALUE_TOLERANCE = 1e-2


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in fp32 (0 when both are zero)."""
    a, e = actual.float(), expected.float()
    denom = e.norm().item()
    return (a - e).norm().item() / denom if denom else (a - e).norm().item()


def matmul_rows(shapes, ms, device: str = "cuda") -> Iterator[dict]:
    """Forward and input-gradient timings of every implementation at every (shape, M), one row at a time,
    each with the fused output checked against the dequantize path's (pass/FAIL per row).

    A generator, so the caller can write each row to disk before the next (slow) one is measured.
    """
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbF

    from studio_kernels.nf4 import NF4Weight
    from studio_kernels.ops.dequant import dequantize_nf4_triton
    from studio_kernels.ops.nf4_matmul import (
        nf4_matmul_grad_input_triton,
        nf4_matmul_triton,
    )

    for out_f, in_f in shapes:
        w = torch.randn(out_f, in_f, device=device, dtype=DTYPE) * 0.02
        packed, qs = bnbF.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
        shared = NF4Weight.from_bnb(packed, qs)  # same bytes for both 4-bit contenders
        w_nf4 = dequantize_nf4_triton(shared, DTYPE)  # the value check's independent oracle
        for m in ms:
            # A fresh view per M: the block scales a small-M call keeps must not speed up a large-M row
            weight = replace(shared)
            x = torch.randn(m, in_f, device=device, dtype=DTYPE)
            dy = torch.randn(m, out_f, device=device, dtype=DTYPE)
            t = {
                "fwd_bf16": median_ms(lambda: x @ w.t(), device),
                "fwd_fused": median_ms(lambda: nf4_matmul_triton(x, weight, large_m="fused"), device),
                "fwd_dequant": median_ms(lambda: nf4_matmul_triton(x, weight, large_m="dequant"), device),
                "fwd_bnb": median_ms(lambda: bnb.matmul_4bit(x, packed.t(), quant_state=qs), device),
                "bwd_bf16": median_ms(lambda: dy @ w, device),
                "bwd_fused": median_ms(lambda: nf4_matmul_grad_input_triton(dy, weight, large_m="fused"), device),
                "bwd_dequant": median_ms(lambda: nf4_matmul_grad_input_triton(dy, weight, large_m="dequant"), device),
                # what bnb's MatMul4Bit.backward does for the input gradient
                "bwd_bnb": median_ms(lambda: dy @ bnbF.dequantize_4bit(packed, qs).to(dy.dtype), device),
            }
            check = {  # the fused kernel against cuBLAS on the dequantized weight (what "dequant" runs above M = 16)
                "fwd": relative_error(nf4_matmul_triton(x, weight, large_m="fused"), x @ w_nf4.t()),
                "bwd": relative_error(nf4_matmul_grad_input_triton(dy, weight, large_m="fused"), dy @ w_nf4),
            }
            row = {"out": out_f, "in": in_f, "M": m, "ms": t, **_speeds(t), "fused_vs_dequant_error": check,
                   "values_pass": max(check.values()) <= VALUE_TOLERANCE}
            print(
                f"  W {out_f}x{in_f} M={m:5d}  fwd fused {row['fwd_speed_vs_bf16_fused']:.2f}x bf16, "
                f"best {row['fwd_speed_vs_bf16_best']:.2f}x bf16, {row['fwd_speed_vs_bnb_best']:.2f}x bnb | "
                f"dX best {row['bwd_speed_vs_bf16_best']:.2f}x bf16 | values "
                f"{'pass' if row['values_pass'] else 'FAIL'} (fused vs dequant {max(check.values()):.1e})",
                flush=True,
            )
            yield row
        del w, packed, qs, weight, shared, w_nf4
        free_memory(device)


def _swap_for_bnb(model, device: str) -> None:
    """bitsandbytes QLoRA: every linear but lm_head becomes a Linear4bit (NF4, double quant).

    The model is then marked the way transformers marks a model it loaded in 4 bits, so that peft wraps
    these layers in its bitsandbytes LoRA layer, as it does in a real bitsandbytes QLoRA run.
    """
    import bitsandbytes as bnb
    from torch import nn

    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and not name.endswith("lm_head"):
            # On the meta device: its placeholder weight is replaced at once, so initialising it would be wasted.
            q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                  compute_dtype=DTYPE, quant_type="nf4", compress_statistics=True, device="meta")
            # .to() quantizes an unquantized Params4bit, also when it is already on the device
            q.weight = bnb.nn.Params4bit(module.weight.data, requires_grad=False, quant_type="nf4",
                                         compress_statistics=True, module=q).to(device)
            if module.bias is not None:
                q.bias = module.bias
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, q)
            del module
    model.is_loaded_in_4bit = True


def build_model(name: str, method: str, device: str, lora):
    """A randomly initialised model of shape MODELS[name], prepared for `method`, with LoRA attached."""
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from studio.modeling.quant import quantize_model_linears, register_studio_lora

    config = LlamaConfig(max_position_embeddings=8192, **MODELS[name])
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(DTYPE)  # build in bf16: an fp32 8B model would not fit twice
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    if method == "bnb_qlora":
        _swap_for_bnb(model, device)
    elif method == "studio_qlora":
        # "triton" is what "auto" picks on CUDA; naming it makes --smoke run the kernels (interpreted) too.
        quantize_model_linears(model, DTYPE, backend="triton")
        register_studio_lora(lora)
    free_memory(device)
    return get_peft_model(model, lora), config.vocab_size


def training_row(name: str, method: str, plan: Plan, device: str = "cuda") -> dict:
    """Mean step time and peak memory of LoRA training steps of model `name` with `method`."""
    from peft import LoraConfig

    free_memory(device)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS)
    model, vocab_size = build_model(name, method, device, lora)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, vocab_size, (1, plan.seq), device=device)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    # warm-up: autotuning, allocator, optimizer state; the peak counters cover the timed steps only
    first_s, step_s = first_and_mean_step(step, plan.steps, warmup=plan.warmup, device=device)
    step_ms, first_ms = step_s * 1e3, first_s * 1e3
    peak_gib = peak_allocated_gib(device)
    print(f"  {name} {method:13s} step {step_ms:8.1f} ms  first step {first_ms:8.1f} ms  peak {_gib(peak_gib):>6s} GiB", flush=True)
    return {"model": name, "method": method, "seq": plan.seq, "step_ms": step_ms, "first_step_ms": first_ms, "peak_gib": peak_gib}


def training_rows(plan: Plan, device: str = "cuda") -> Iterator[dict]:
    """training_row for every (model, method) of the plan, one at a time (a generator, like matmul_rows)."""
    for name in plan.models:
        for method in METHODS:
            yield training_row(name, method, plan, device)


def _gib(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def verdicts(matmul_rows, train_rows, plan: Plan) -> dict:
    """Each target with the measured value and pass (True/False; None when it could not be measured).

    Works on a partial run: a model's training targets appear once all three of its methods are measured.
    """
    out = {}
    if matmul_rows:
        worst = max(max(r["fused_vs_dequant_error"].values()) for r in matmul_rows)
        out["values"] = {"worst_error": worst, "pass": all(r["values_pass"] for r in matmul_rows)}
    big = [r["fwd_speed_vs_bf16_fused"] for r in matmul_rows if r["M"] >= plan.large_m]
    mid = [r["fwd_speed_vs_bf16_fused"] for r in matmul_rows if r["M"] == plan.mid_m]
    if big or mid:
        ok = all(v >= 0.90 for v in big) and all(v >= 0.85 for v in mid)
        out["fwd_large_m"] = {f"worst_M>={plan.large_m}": min(big, default=None),
                              f"worst_M={plan.mid_m}": min(mid, default=None), "pass": ok}
    dec = [r["fwd_speed_vs_bf16_best"] for r in matmul_rows if r["M"] == 1]
    if dec:
        out["decode"] = {"worst": min(dec), "pass": min(dec) >= 3.0}
    by = {(r["model"], r["method"]): r for r in train_rows}
    for model in dict.fromkeys(r["model"] for r in train_rows):
        if any((model, m) not in by for m in METHODS):
            continue
        ours, bf16, bnb = (by[(model, m)] for m in ("studio_qlora", "bf16_lora", "bnb_qlora"))
        r1, r2 = ours["step_ms"] / bf16["step_ms"], ours["step_ms"] / bnb["step_ms"]
        out[f"step_vs_bf16[{model}]"] = {"ratio": r1, "pass": r1 <= 1.10}
        out[f"step_vs_bnb[{model}]"] = {"ratio": r2, "pass": r2 <= 0.75}
        measured = ours["peak_gib"] is not None and bnb["peak_gib"] is not None
        out[f"memory[{model}]"] = {"studio_gib": ours["peak_gib"], "bnb_gib": bnb["peak_gib"],
                                   "pass": ours["peak_gib"] <= bnb["peak_gib"] if measured else None}
    return out


def _target_text(key: str) -> str:
    """The target's description followed by its model, e.g. "... <= bitsandbytes QLoRA [llama-1b]"."""
    base = key.split("[")[0]
    return f"{TARGETS[base]} {key[len(base):]}".rstrip()


def _measured_text(v: dict) -> str:
    return ", ".join(f"{k}={x:.3f}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items() if k != "pass")


def _verdict_word(passed: bool | None, yes: str, no: str) -> str:
    return "not measured" if passed is None else yes if passed else no


def print_new_verdicts(targets: dict, shown: set) -> None:
    """Print the verdicts not printed yet, so a run cut off by its time limit has printed those it reached."""
    for key, v in targets.items():
        if key not in shown:
            shown.add(key)
            print(f"  [{_verdict_word(v['pass'], 'pass', 'FAIL')}] {_target_text(key)} -> {_measured_text(v)}", flush=True)


def _first_ms(row: dict) -> str:
    return f"{row['first_step_ms']:.1f}" if row.get("first_step_ms") is not None else "-"


def markdown(env, matmul_rows, train_rows, targets) -> str:
    """The results as markdown: environment line, matmul table, training table, targets table."""
    lines = [f"# NF4 benchmark: {env['gpu']}", "",
             " | ".join(f"{k} {v}" for k, v in env.items()), "",
             "## Matmul (speed = bf16 time / our time; >1 is faster)", "",
             "| W (out x in) | M | fwd fused | fwd best | fwd vs bnb | dX fused | dX best | dX vs bnb | "
             "bf16 fwd ms | fused fwd ms | bnb fwd ms | values |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in matmul_rows:
        t = r["ms"]
        lines.append(
            f"| {r['out']}x{r['in']} | {r['M']} | {r['fwd_speed_vs_bf16_fused']:.2f}x | {r['fwd_speed_vs_bf16_best']:.2f}x"
            f" | {r['fwd_speed_vs_bnb_best']:.2f}x | {r['bwd_speed_vs_bf16_fused']:.2f}x | {r['bwd_speed_vs_bf16_best']:.2f}x"
            f" | {r['bwd_speed_vs_bnb_best']:.2f}x | {t['fwd_bf16']:.3f} | {t['fwd_fused']:.3f} | {t['fwd_bnb']:.3f}"
            f" | {'pass' if r['values_pass'] else 'FAIL'} ({max(r['fused_vs_dequant_error'].values()):.1e}) |"
        )
    if train_rows:
        lines += ["", "## LoRA training step (batch 1)", "",
                  "First step: the first call of the process, compiling and autotuning included (Triton's on-disk "
                  "cache of both is cold or warm as the machine left it).", "",
                  "| model | method | seq | step ms | first step ms | peak GiB |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['method']} | {r['seq']} | {r['step_ms']:.1f} | {_first_ms(r)} "
                  f"| {_gib(r['peak_gib'])} |" for r in train_rows]
    lines += ["", "## Targets", "", "| target | measured | pass |", "|---|---|---|"]
    for key, v in targets.items():
        lines.append(f"| {_target_text(key)} | {_measured_text(v)} | {_verdict_word(v['pass'], 'yes', 'NO')} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two shapes, M in {1, 16, 4096}, 1B model only")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes on the CPU, Triton kernels interpreted: checks that every code path runs")
    parser.add_argument("--skip-training", action="store_true", help="only the matmul benchmarks")
    parser.add_argument("--skip-matmul", action="store_true", help="only the training steps")
    parser.add_argument("--record-dispatch", type=Path, metavar="RESULTS_JSON",
                        help="no benchmark: write the matmul dispatch threshold measured in RESULTS_JSON into "
                             "kernels/studio_kernels/dispatch.json under that run's GPU name (needs no GPU)")
    parser.add_argument("--seq", type=int, default=None, help="training sequence length (default 2048; 64 with --smoke)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per method (default 5; 2 with --smoke)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def dispatch_proposal(rows: list[dict]) -> dict | None:
    """Where dequantize + cuBLAS starts beating the fused kernel on this GPU, from the matmul rows (None: no M > 16 measured).

    {"large_m": M} from which "auto" should dequantize, or {"large_m": None} when the fused kernel is as fast at
    the largest M measured; forward and input gradient must both agree, at every shape.
    """
    from studio_kernels.dispatch import crossover_m
    from studio_kernels.ops.nf4_matmul import SMALL_M

    pairs = [{"shape": (r["out"], r["in"], kind), "M": r["M"], "fused_ms": r["ms"][f"{kind}_fused"],
              "dequant_ms": r["ms"][f"{kind}_dequant"]} for r in rows if r["M"] > SMALL_M for kind in ("fwd", "bwd")]
    return {"large_m": crossover_m(pairs)} if pairs else None


def record_dispatch(results_json: Path) -> int:
    """Copy a finished GPU run's dispatch threshold into kernels/studio_kernels/dispatch.json, where the kernels read it."""
    import json

    from studio_kernels.dispatch import TABLE, record_threshold

    result = json.loads(results_json.read_text())
    gpu, proposal = result["environment"]["gpu"], result.get("dispatch")
    if result.get("smoke") or proposal is None:
        print(f"bench_nf4: {results_json} holds no GPU-measured dispatch threshold "
              "(a smoke run, or no matmul rows above M = 16)", file=sys.stderr)
        return 2
    record_threshold(gpu, proposal["large_m"], results_json.name)
    print(f"recorded large_m={proposal['large_m']} for {gpu} in {TABLE}")
    return 0


def main(argv=None) -> int:
    """Run the plan, rewriting the results JSON after every row; return the exit status."""
    args = parse_args(argv)
    if args.record_dispatch:
        return record_dispatch(args.record_dispatch)
    if args.smoke:
        device = start_smoke()  # before anything imports studio_kernels
    elif cuda_missing("bench_nf4", "this benchmark measures GPU kernels"):
        return NO_CUDA_EXIT
    else:
        device = "cuda"
    plan = plan_for(args)

    env = environment(device, bitsandbytes=True)
    results = Results(args.out, "nf4-smoke" if args.smoke else "nf4", env)
    result = {"environment": env, "quick": args.quick, "smoke": args.smoke, "matmul": [], "training": [], "targets": {}}
    results.save(result)
    print(f"GPU {env['gpu']} | driver {env['driver']} | torch {env['torch']} | triton {env['triton']}", flush=True)

    def record(section: str, row: dict) -> None:
        result[section].append(row)
        result["targets"] = verdicts(result["matmul"], result["training"], plan)
        results.save(result)

    shown: set = set()
    if not args.skip_matmul:
        print("matmul (speed relative to bf16 torch.matmul; >1 is faster):", flush=True)
        for row in matmul_rows(plan.shapes, plan.ms, device):
            # The threshold so far goes into the results with every row: a run cut off by its time limit
            # still leaves one (from the shapes it reached) for the stages after it.
            result["dispatch"] = dispatch_proposal(result["matmul"] + [row])
            record("matmul", row)
        print(f"dispatch: dequantize + cuBLAS from M = {(result.get('dispatch') or {}).get('large_m', 'not measured')} "
              "(None: the fused kernel at every M measured)", flush=True)
        print("targets:", flush=True)
        print_new_verdicts(result["targets"], shown)
    if not args.skip_training:
        print("LoRA training step:", flush=True)
        for row in training_rows(plan, device):
            record("training", row)
            print_new_verdicts(result["targets"], shown)

    results.finish(result, lambda: markdown(env, result["matmul"], result["training"], result["targets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
