"""Measured peak GPU memory and step time vs `studio.memory.estimate`, on random 1B- and 8B-shaped Llama models.

    python benchmarks/bench_memory.py            # 1B and 8B shapes, the full grid (tens of minutes)
    python benchmarks/bench_memory.py --quick    # 1B shape, a few cases

For each model shape it writes a random-weight model directory (save_pretrained of a from_config model,
safetensors, with a word-level tokenizer over the full vocabulary; nothing is downloaded) and loads it
with `studio.models.load_for_training`, exactly as training does, once per method: bf16 LoRA, QLoRA on
the studio kernels, QLoRA on bitsandbytes (LoRA r=16, alpha 32, all seven projections). Then, per case
(batch size, sequence length, gradient checkpointing, packing, offload, loss, embedding table on the CPU), it runs AdamW steps and
reads torch.cuda.max_memory_allocated / max_memory_reserved over the timed steps, the mean step time,
and the CUDA context (driver-used memory minus torch's reserved). Beside each measurement it writes the
estimate for the same recipe (`allocated_gib`, `reserved_gib`) and the relative error; the issue's bar is
within 10% of max_memory_allocated.

Losses: "full" is the model's own loss over full logits, "chunked" trl's fused LM head (what SFTTrainer
runs), "fused" the studio kernel (`train.fused_loss`). Offload wraps forward and backward in trl's
activation-offloading context, as SFTTrainer does for `train.offload_activations`. Packing feeds rows of
several examples with position ids restarting per example (same tokens per row, so the same memory).

Writes benchmarks/results/memory-<gpu>-<time>.json and .md naming GPU, driver, CUDA, torch, triton,
bitsandbytes. Without CUDA it exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __package__:  # imported as `benchmarks.bench_memory` (the tests)
    from ._gpu_env import NO_CUDA_EXIT, cuda_missing, environment, timed_steps, write_results
else:  # run as `python benchmarks/bench_memory.py`: this folder is on sys.path. (Not the repository root:
    # its kernels/ folder would shadow the PyPI package `kernels` that bitsandbytes imports; `studio` is installed.)
    from _gpu_env import NO_CUDA_EXIT, cuda_missing, environment, timed_steps, write_results

SHAPES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=64, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
}
VOCAB = 128256
METHODS = {"bf16-lora": ("lora", "auto"), "qlora-studio": ("qlora", "studio"), "qlora-bnb": ("qlora", "bitsandbytes")}
GiB = 2**30


def cases(shape: str, quick: bool) -> list[dict]:
    """The grid: (batch, seq, checkpointing, offload, packing, loss) per model shape."""
    def case(batch, seq, ckpt=True, offload=False, packing=False, loss="chunked", emb=False):
        return dict(batch=batch, seq=seq, ckpt=ckpt, offload=offload, packing=packing, loss=loss, emb=emb)

    if quick:
        grid = [case(1, 1024, ckpt=False), case(2, 1024), case(1, 2048, loss="fused"), case(1, 2048, loss="fused", emb=True)]
        return [c for c in grid if not (c["emb"] and SHAPES[shape]["tie_word_embeddings"])]
    grid = [case(b, s) for b in (1, 2, 4) for s in (512, 2048)]
    grid += [case(1, 1024, ckpt=False), case(2, 1024, ckpt=False)]
    grid += [case(2, 2048, loss="full"), case(2, 2048, loss="fused"), case(2, 2048, packing=True),
             case(1, 4096, offload=True), case(1, 4096), case(1, 4096, loss="fused", offload=True)]
    # The 8B target setting (batch 1, seq 2048) with the input table on the CPU (train.offload_embeddings).
    grid += [case(1, 2048, loss="fused"), case(1, 2048, loss="fused", emb=True), case(2, 2048, loss="fused", emb=True)]
    if shape == "llama-8b":
        grid = [c for c in grid if c["batch"] * c["seq"] <= 8192]
    # A table tied to the head (Llama-3.2-1B's) stays on the GPU: the studio refuses to offload it.
    return [c for c in grid if not (c["emb"] and SHAPES[shape]["tie_word_embeddings"])]


def write_model_dir(path: Path, shape: str) -> Path:
    """A random bf16 Llama of `shape` with a word-level tokenizer over VOCAB ids, saved like a real one."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")), eos_token="t1", pad_token="t2")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tok.save_pretrained(path)
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=16384, bos_token_id=0, eos_token_id=1, pad_token_id=2, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return path


def make_recipe(model_dir: Path, method: str, c: dict):
    from studio.recipe_io import validate_recipe

    kind, backend = METHODS[method]
    return validate_recipe({
        "model": {"name": str(model_dir), "dtype": "bfloat16"}, "method": kind,
        "quant": {"backend": backend if kind == "qlora" else "auto", "compute_dtype": "bfloat16"},
        "lora": {"rank": 16, "alpha": 32, "targets": "all-linear"},
        "data": {"max_length": c["seq"], "packing": c["packing"]},
        "train": {"batch_size": c["batch"], "gradient_checkpointing": c["ckpt"], "offload_activations": c["offload"],
                  "fused_loss": c["loss"] == "fused", "offload_embeddings": c.get("emb", False), "device": "cuda"},
    })


def run_case(model, c: dict, steps: int, offload_ctx=None) -> dict:
    """Mean step time and peak memory of `steps` AdamW steps after two warm-up steps."""
    import torch

    base = model.get_base_model()
    if c["ckpt"]:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    else:
        base.gradient_checkpointing_disable()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(3, VOCAB, (c["batch"], c["seq"]), device="cuda")
    inputs = {"input_ids": ids, "labels": ids}
    if c["packing"]:  # four examples per row, positions restarting at each
        per = c["seq"] // 4
        inputs["position_ids"] = (torch.arange(c["seq"], device="cuda") % per).expand(c["batch"], -1)
    offload = offload_ctx if c["offload"] else contextlib.nullcontext()

    def step():
        with offload:
            if c["loss"] == "fused":
                from studio.fused_loss import fused_causal_lm_loss

                loss = fused_causal_lm_loss(model, inputs)
            elif c["loss"] == "chunked":
                loss = model(**inputs, fused_lm_head=True).loss
            else:
                loss = model(**inputs).loss
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step_s = timed_steps(step, steps, warmup=2)
    free, total = torch.cuda.mem_get_info()
    out = {"step_ms": step_s * 1e3, "tokens_per_s": c["batch"] * c["seq"] / step_s,
           "allocated_gib": torch.cuda.max_memory_allocated() / GiB, "reserved_gib": torch.cuda.max_memory_reserved() / GiB,
           "context_gib": (total - free - torch.cuda.memory_reserved()) / GiB}
    del opt, ids, inputs
    return out


def bench(shape: str, method: str, model_dir: Path, grid: list[dict], steps: int) -> list[dict]:
    """Every case of the grid for one shape and method; the model is loaded once per embedding placement."""
    rows = []
    for emb in (False, True):
        group = [c for c in grid if c.get("emb", False) == emb]
        if group:
            rows += bench_loaded(shape, method, model_dir, group, steps)
    return rows


def bench_loaded(shape: str, method: str, model_dir: Path, grid: list[dict], steps: int) -> list[dict]:
    """The cases of `grid` (all with the same embedding placement) on one loaded model."""
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from studio.memory import estimate
    from studio.models import load_for_training

    gc.collect()
    torch.cuda.empty_cache()
    model, _, _ = load_for_training(make_recipe(model_dir, method, grid[0]), torch.device("cuda"))
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs",))  # trl's chunked head, as SFTTrainer adds it
    model.train()
    rows = []
    offload_ctx = None
    for c in grid:
        if c["offload"] and offload_ctx is None:  # made once per model, as SFTTrainer does (it adds hooks)
            from trl.models import get_act_offloading_ctx_manager

            offload_ctx = get_act_offloading_ctx_manager(model=model)
        gc.collect()
        torch.cuda.empty_cache()
        try:
            measured = run_case(model, c, steps, offload_ctx)
        except torch.OutOfMemoryError:
            measured = {"oom": True}
        est = estimate(make_recipe(model_dir, method, c), torch.cuda.get_device_properties(0).total_memory / GiB, loss=c["loss"])
        row = {"model": shape, "method": method, **c, **measured, "estimate_allocated_gib": est["allocated_gib"],
               "estimate_reserved_gib": est["reserved_gib"], "estimate_peak_gib": est["peak_gib"], "estimate_breakdown": est["breakdown"]}
        if "allocated_gib" in measured:
            row["error_allocated"] = est["allocated_gib"] / measured["allocated_gib"] - 1
            row["error_reserved"] = est["reserved_gib"] / measured["reserved_gib"] - 1
        rows.append(row)
        print(describe(row), flush=True)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return rows


def describe(r: dict) -> str:
    settings = f"{r['model']} {r['method']:12s} b{r['batch']} s{r['seq']} ckpt={int(r['ckpt'])} off={int(r['offload'])} emb={int(r.get('emb', False))} pack={int(r['packing'])} {r['loss']:7s}"
    if r.get("oom"):
        return f"{settings}  OOM (estimate {r['estimate_allocated_gib']:.2f} GiB)"
    return (f"{settings}  {r['step_ms']:8.1f} ms  allocated {r['allocated_gib']:6.2f} GiB (estimate {r['estimate_allocated_gib']:6.2f}, "
            f"{r['error_allocated']:+.1%})  reserved {r['reserved_gib']:6.2f} ({r['error_reserved']:+.1%})")


def markdown(env: dict, rows: list[dict]) -> str:
    lines = [f"# Memory estimate vs measurement: {env['gpu']}", "", " | ".join(f"{k} {v}" for k, v in env.items()), "",
             "Measured: torch.cuda.max_memory_allocated / max_memory_reserved over the timed steps. Estimate: "
             "`studio.memory.estimate` for the same recipe. Error = estimate / measured - 1 (target: within 10% of allocated).", "",
             "| model | method | batch | seq | ckpt | offload | emb on CPU | packing | loss | step ms | tokens/s | allocated GiB | estimate | error | reserved GiB | estimate | error | context GiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['model']} | {r['method']} | {r['batch']} | {r['seq']} | {r['ckpt']} | {r['offload']} | {r.get('emb', False)} | {r['packing']} | {r['loss']} |"
        if r.get("oom"):
            lines.append(f"{head} OOM | | | {r['estimate_allocated_gib']:.2f} | | | {r['estimate_reserved_gib']:.2f} | | |")
        else:
            lines.append(f"{head} {r['step_ms']:.1f} | {r['tokens_per_s']:.0f} | {r['allocated_gib']:.2f} | {r['estimate_allocated_gib']:.2f} | "
                         f"{r['error_allocated']:+.1%} | {r['reserved_gib']:.2f} | {r['estimate_reserved_gib']:.2f} | {r['error_reserved']:+.1%} | {r['context_gib']:.2f} |")
    errors = [abs(r["error_allocated"]) for r in rows if "error_allocated" in r]
    if errors:
        within = sum(e <= 0.10 for e in errors)
        lines += ["", f"Within 10% of allocated: {within} of {len(errors)} cases; worst {max(errors):.1%}."]
    target = [r for r in rows if r["model"] == "llama-8b" and r["method"].startswith("qlora") and r["batch"] == 1 and r["seq"] == 2048 and "allocated_gib" in r]
    for r in target:  # the bar: Llama-3.1-8B QLoRA r=16 all linear, batch 1, seq 2048, peak at most 7.0 GB
        gb = r["allocated_gib"] * GiB / 1e9
        lines.append(f"8B target ({r['method']}, loss {r['loss']}, embeddings on CPU: {r.get('emb', False)}): "
                     f"{gb:.2f} GB allocated ({'within' if gb <= 7.0 else 'over'} 7.0 GB)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 1B shape and three cases per method")
    parser.add_argument("--shapes", nargs="*", choices=list(SHAPES), help="model shapes (default: both; --quick: llama-1b)")
    parser.add_argument("--methods", nargs="*", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (default 3)")
    parser.add_argument("--models-dir", type=Path, help="where to keep the random model directories (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    if cuda_missing("bench_memory", "it measures GPU memory"):
        return NO_CUDA_EXIT
    env = environment(gpu_gib=True, bitsandbytes=True)
    print(" | ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    shapes = args.shapes or (["llama-1b"] if args.quick else list(SHAPES))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = args.models_dir or Path(tmp)
        for shape in shapes:
            model_dir = write_model_dir(models_dir / shape, shape)
            for method in args.methods:
                rows += bench(shape, method, model_dir, cases(shape, args.quick), args.steps)
    write_results(args.out, "memory", env, {"environment": env, "quick": args.quick, "rows": rows}, lambda: markdown(env, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
