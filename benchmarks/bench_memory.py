"""Measured peak GPU memory and step time vs `studio.memory.formula.estimate`, trained through the studio's trainer.

    python -m benchmarks.bench_memory            # 1B and 8B shapes, the full grid (tens of minutes)
    python -m benchmarks.bench_memory --quick    # 1B shape, a few cases
    python -m benchmarks.bench_memory --target   # the 8B target setting only (QLoRA, batch 1, seq 2048, fused loss)
    python -m benchmarks.bench_memory --smoke    # every code path on the CPU, a tiny shape (no GPU needed)

For each model shape it writes a random-weight model directory (save_pretrained of a from_config model,
safetensors, with a word-level tokenizer over the full vocabulary; nothing is downloaded). Each case
(batch size, sequence length, gradient checkpointing, packing, activation offload, loss, embedding table on
the CPU) of each method (bf16 LoRA, QLoRA on the studio kernels, QLoRA on bitsandbytes; LoRA r=16, alpha 32,
all seven projections) is then trained the way `studio train` trains it: the case's recipe,
`studio.modeling.loading.load_for_training`, the adapter dtype of `studio.training.arguments`, and
`studio.training.sft.build_trainer` (trl's SFTTrainer with the studio's callbacks) on a synthetic dataset of
the case's shape, every token trained, for a few `max_steps`. Around `trainer.train()` a callback reads
torch.cuda.max_memory_allocated / max_memory_reserved over the steps after the warm-up, their mean time,
and the CUDA context (driver-used memory minus torch's reserved). Beside each measurement it writes the
estimate for the same recipe (`allocated_gib`, `reserved_gib`) and the relative error; the issue's bar is
within 10% of max_memory_allocated. Each row says which path was measured ("path": "trainer").

Losses are what the trainer runs: "chunked" is trl's fused LM head (SFTTrainer's own loss), "fused" the
studio kernel (`train.fused_loss`). Offload is the trainer's activation offloading
(`train.offload_activations`). Packed cases feed examples a quarter of the row long, which the trainer packs
four to a row (same tokens per row, so the same memory).

--smoke runs every case kind and method on the CPU at a tiny shape (Triton kernels in the interpreter, the
model in float32 and mixed precision off, as the studio trains on the CPU): memory is not measured there
(the estimates still are), and activation offload, which needs a GPU, is skipped with its reason recorded in
the row. It exists so that a GPU session never finds a crash.

Writes benchmarks/results/memory-<gpu>-<time>.json (rewritten after every row) and .md naming GPU, driver,
CUDA, torch, triton, bitsandbytes. Without CUDA (and without --smoke) it exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from benchmarks import RESULTS
from benchmarks._gpu_env import (
    NO_CUDA_EXIT,
    Results,
    cuda_missing,
    environment,
    free_memory,
    reset_peak_memory,
    start_smoke,
    synchronize,
)


SHAPES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=64, tie_word_embeddings=True, vocab_size=128256),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=False, vocab_size=128256),
    # --smoke only: untied, so the embedding-offload cases run too.
    "llama-tiny": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, tie_word_embeddings=False, vocab_size=512),
}
GPU_SHAPES = ["llama-1b", "llama-8b"]
SMOKE_SHAPE = "llama-tiny"
METHODS = {"bf16-lora": ("lora", "auto"), "qlora-studio": ("qlora", "studio"), "qlora-bnb": ("qlora", "bitsandbytes")}
GiB = 2**30
# The estimate's verdicts (fits, largest batch) need a GPU size; on the CPU its memory terms are still
# computed, against a nominal 80 GiB card. They do not depend on the size.
NOMINAL_GPU_GIB = 80
NO_OFFLOAD_ON_CPU = ("activation offload needs a GPU: trl's context moves activations between GPU and CPU memory "
                     "(the studio refuses train.offload_activations on the CPU)")


def case(batch: int, seq: int, ckpt: bool = True, offload: bool = False, packing: bool = False, loss: str = "chunked", emb: bool = False) -> dict:
    """One grid point: the settings that change activation memory, as the row's columns."""
    return dict(batch=batch, seq=seq, ckpt=ckpt, offload=offload, packing=packing, loss=loss, emb=emb)


def cases(shape: str, quick: bool) -> list[dict]:
    """The grid: (batch, seq, checkpointing, offload, packing, loss, embeddings on the CPU) per model shape."""
    if quick:
        grid = [case(1, 1024, ckpt=False), case(2, 1024), case(1, 2048, loss="fused"), case(1, 2048, loss="fused", emb=True)]
        return untied_only(shape, grid)
    grid = [case(b, s) for b in (1, 2, 4) for s in (512, 2048)]
    grid += [case(1, 1024, ckpt=False), case(2, 1024, ckpt=False)]
    grid += [case(2, 2048, loss="fused"), case(2, 2048, packing=True),
             case(1, 4096, offload=True), case(1, 4096), case(1, 4096, loss="fused", offload=True)]
    # The 8B target setting (batch 1, seq 2048) with the input table on the CPU (train.offload_embeddings).
    grid += [case(1, 2048, loss="fused"), case(1, 2048, loss="fused", emb=True), case(2, 2048, loss="fused", emb=True)]
    if shape == "llama-8b":
        grid = [c for c in grid if c["batch"] * c["seq"] <= 8192]
    return untied_only(shape, grid)


def target_cases() -> list[dict]:
    """The issue's 8B target setting alone (batch 1, seq 2048, fused loss), with the input table on the GPU and on the CPU."""
    return [case(1, 2048, loss="fused"), case(1, 2048, loss="fused", emb=True)]


def smoke_cases() -> list[dict]:
    """Every case kind once at a tiny length: checkpointing on and off, packing, each loss, offload, embeddings on the CPU."""
    return [case(1, 64, ckpt=False), case(2, 64), case(1, 64, packing=True), case(1, 64, loss="fused"),
            case(1, 64, offload=True), case(1, 64, loss="fused", offload=True), case(1, 64, loss="fused", emb=True)]


def untied_only(shape: str, grid: list[dict]) -> list[dict]:
    """Drop the embedding-offload cases of a shape whose table is tied to the head: the studio refuses to offload it."""
    return [c for c in grid if not (c["emb"] and SHAPES[shape]["tie_word_embeddings"])]


def write_model_dir(path: Path, shape: str, device: str = "cuda") -> Path:
    """A random bf16 Llama of `shape` with a word-level tokenizer over its vocabulary, saved like a real one."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    vocab = {f"t{i}": i for i in range(SHAPES[shape]["vocab_size"])}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")), eos_token="t1", pad_token="t2")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tok.save_pretrained(path)
    config = LlamaConfig(max_position_embeddings=16384, bos_token_id=0, eos_token_id=1, pad_token_id=2, **SHAPES[shape])
    torch.manual_seed(0)
    # Built in bf16 directly: an fp32 8B model first would need 32 GiB of GPU memory for a moment.
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    del model
    free_memory(device)
    return path


def make_recipe(model_dir: Path, method: str, c: dict, device: str = "cuda", max_steps: int | None = None):
    """The training recipe of one (method, case): what is loaded and trained, and what the estimate is asked about.

    bf16 on a GPU; float32 on the CPU, where the studio trains in it (and its trainer arguments turn mixed
    precision off).
    """
    from studio.config.validate import validate_recipe

    kind, backend = METHODS[method]
    dtype = "bfloat16" if device == "cuda" else "float32"
    return validate_recipe({
        "model": {"name": str(model_dir), "dtype": dtype}, "method": kind,
        "quant": {"backend": backend if kind == "qlora" else "auto", "compute_dtype": dtype},
        "lora": {"rank": 16, "alpha": 32, "targets": "all-linear"},
        "data": {"max_length": c["seq"], "packing": c["packing"]},
        "train": {"batch_size": c["batch"], "gradient_checkpointing": c["ckpt"], "offload_activations": c["offload"],
                  "fused_loss": c["loss"] == "fused", "offload_embeddings": c.get("emb", False), "device": device,
                  "max_steps": max_steps},
    })


def gpu_total_gib(device: str) -> float:
    """The GPU's size for the estimate's verdicts: the device's own, or NOMINAL_GPU_GIB on the CPU."""
    import torch

    return NOMINAL_GPU_GIB if device == "cpu" else torch.cuda.get_device_properties(0).total_memory / GiB


def measured_memory(device: str) -> dict:
    """Peak allocated and reserved GiB since the last reset, and the CUDA context; all None on the CPU (not measured)."""
    import torch

    if device == "cpu":
        return {"allocated_gib": None, "reserved_gib": None, "context_gib": None}
    free, total = torch.cuda.mem_get_info()
    return {"allocated_gib": torch.cuda.max_memory_allocated() / GiB, "reserved_gib": torch.cuda.max_memory_reserved() / GiB,
            "context_gib": (total - free - torch.cuda.memory_reserved()) / GiB}


def case_data(c: dict, vocab: int, rows: int):
    """`rows` training rows of random tokens shaped for the case, every token trained, as build_data hands them over.

    Packed cases get four examples a quarter of the row long for each row: the trainer packs them.
    """
    import random

    from studio.data import BuiltData, Encoded

    per_row = 4 if c["packing"] else 1
    rng = random.Random(0)
    train = []
    for i in range(rows * per_row):
        ids = [rng.randrange(3, vocab) for _ in range(c["seq"] // per_row)]
        train.append(Encoded(input_ids=ids, labels=list(ids), truncated=False, where=f"synthetic:{i}"))
    return BuiltData(train=train, val=[], format="text")


def step_window(device: str, warmup: int):
    """A trainer callback timing the steps after the first `warmup` and reading peak memory over them.

    The peak counters are reset when step `warmup` ends, so autotuning, allocator growth and the optimizer's
    state creation stay out of the window (as _gpu_env.first_and_mean_step does). It also cancels the
    trainer's checkpoint saves: a save would put disk writes into the timed steps and cost a short GPU
    session seconds after the last one.
    """
    from transformers import TrainerCallback

    class StepWindow(TrainerCallback):
        start = seconds = memory = None

        def on_step_end(self, args, state, control, **kwargs):
            control.should_save = False
            if state.global_step == warmup:
                synchronize(device)
                reset_peak_memory(device)
                self.start = time.perf_counter()
            elif state.global_step == state.max_steps:
                synchronize(device)
                self.seconds = time.perf_counter() - self.start
                self.memory = measured_memory(device)
            return control

    return StepWindow()


def train_case(recipe, c: dict, steps: int, warmup: int, device: str, run_dir: Path) -> dict:
    """Load and train one case as `studio train` does, for warmup + steps trainer steps; the timed steps' figures."""
    import torch
    from transformers import set_seed

    from studio.modeling.loading import load_for_training
    from studio.training.arguments import adapter_dtype, set_adapter_dtype
    from studio.training.sft import build_trainer

    dev = torch.device(device)
    set_seed(recipe.train.seed)
    model, tokenizer, _ = load_for_training(recipe, dev)
    data = case_data(c, model.config.vocab_size, c["batch"] * recipe.train.max_steps)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(recipe, model, tokenizer, data, run_dir, dev)
    set_adapter_dtype(trainer.model, adapter_dtype(recipe, dev))  # as training does: after trl's cast, before the optimizer
    window = step_window(device, warmup)
    trainer.add_callback(window)
    trainer.train()
    step_s = window.seconds / steps
    return {"path": "trainer", "run": run_dir.name, "global_step": trainer.state.global_step, "step_ms": step_s * 1e3,
            "tokens_per_s": c["batch"] * c["seq"] / step_s, **window.memory}


def with_estimate(row: dict, recipe, device: str) -> dict:
    """`row` plus the estimate for the same recipe, and the relative errors where memory was measured."""
    from studio.memory.formula import estimate

    est = estimate(recipe, gpu_total_gib(device))
    row = {**row, "estimate_allocated_gib": est["allocated_gib"], "estimate_reserved_gib": est["reserved_gib"],
           "estimate_peak_gib": est["peak_gib"], "estimate_breakdown": est["breakdown"]}
    if row.get("allocated_gib") is not None:
        row["error_allocated"] = est["allocated_gib"] / row["allocated_gib"] - 1
        row["error_reserved"] = est["reserved_gib"] / row["reserved_gib"] - 1
    return row


def bench(shape: str, method: str, model_dir: Path, grid: list[dict], steps: int, runs_dir: Path, device: str = "cuda",
          record: Callable[[dict], None] = lambda row: None, warmup: int = 2) -> list[dict]:
    """Every case of the grid for one shape and method, each loaded and trained afresh; record(row) after each.

    A fresh model per case, because loading applies the case's checkpointing and embedding placement and the
    trainer patches the model it is given (trl's fused LM head, the offload hooks) once for good.
    """
    import torch

    rows = []
    for i, c in enumerate(grid):
        row = {"model": shape, "method": method, **c}
        recipe = make_recipe(model_dir, method, c, device, max_steps=warmup + steps)
        if c["offload"] and device == "cpu":
            row["skipped"] = NO_OFFLOAD_ON_CPU
        else:
            try:
                row.update(train_case(recipe, c, steps, warmup, device, runs_dir / f"{shape}-{method}-{i:02d}"))
            except torch.OutOfMemoryError:
                row["oom"] = True
            except Exception as err:  # noqa: BLE001 - one broken case must not cost a short GPU session the rest of the grid
                row["error"] = f"{type(err).__name__}: {err}"
            free_memory(device)  # the case's model and trainer, so the next case starts from the same allocator state
        row = with_estimate(row, recipe, device)
        rows.append(row)
        record(row)
        print(describe(row), flush=True)
        for line in eight_b_verdicts([row]):
            print(line, flush=True)  # at once: a session cut off later still has it
    return rows


def unmeasured(r: dict) -> str | None:
    """Why a row holds no measurement ("skipped", "OOM", "failed"), or None when it was measured."""
    return "skipped" if r.get("skipped") else "OOM" if r.get("oom") else "failed" if r.get("error") else None


def describe(r: dict) -> str:
    """One progress line for a row: settings, then the measurement against the estimate (or why there is none)."""
    settings = (f"{r['model']} {r['method']:12s} b{r['batch']} s{r['seq']} ckpt={int(r['ckpt'])} off={int(r['offload'])} "
                f"emb={int(r.get('emb', False))} pack={int(r['packing'])} {r['loss']:7s}")
    estimate = f"estimate {r['estimate_allocated_gib']:.2f} GiB"
    status = unmeasured(r)
    if status:
        detail = {"skipped": f"skipped: {r.get('skipped')}", "OOM": "OOM", "failed": f"FAILED: {r.get('error')}"}[status]
        return f"{settings}  {detail} ({estimate})"
    if r.get("allocated_gib") is None:
        return f"{settings}  {r['step_ms']:8.1f} ms  memory not measured ({estimate})"
    return (f"{settings}  {r['step_ms']:8.1f} ms  allocated {r['allocated_gib']:6.2f} GiB (estimate {r['estimate_allocated_gib']:6.2f}, "
            f"{r['error_allocated']:+.1%})  reserved {r['reserved_gib']:6.2f} ({r['error_reserved']:+.1%})")


def markdown(env: dict, rows: list[dict]) -> str:
    """The results table, the share of cases within 10% of allocated, and the 8B target verdicts."""
    lines = [f"# Memory estimate vs measurement: {env['gpu']}", "", " | ".join(f"{k} {v}" for k, v in env.items()), "",
             "Measured: torch.cuda.max_memory_allocated / max_memory_reserved over the timed steps of `trainer.train()` "
             "(studio.training.sft.build_trainer). Estimate: `studio.memory.formula.estimate` for the same recipe. "
             "Error = estimate / measured - 1 (target: within 10% of allocated).", "",
             "| model | method | batch | seq | ckpt | offload | emb on CPU | packing | loss | step ms | tokens/s | allocated GiB | estimate | error | reserved GiB | estimate | error | context GiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [table_row(r) for r in rows]
    errors = [abs(r["error_allocated"]) for r in rows if "error_allocated" in r]
    if errors:
        within = sum(e <= 0.10 for e in errors)
        lines += ["", f"Within 10% of allocated: {within} of {len(errors)} cases; worst {max(errors):.1%}."]
    skipped = sorted({r["skipped"] for r in rows if r.get("skipped")})
    if skipped:
        lines += [""] + [f"Skipped: {reason}." for reason in skipped]
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += [""] + [f"Failed: {r['method']} b{r['batch']} s{r['seq']} {r['loss']}: {r['error']}" for r in failed]
    verdicts = target_verdicts(rows)
    if verdicts:
        lines += ["", *verdicts]
    return "\n".join(lines) + "\n"


def target_verdicts(rows: list[dict]) -> list[str]:
    """pass/FAIL lines for the issue's bars: each estimate within 10% of the measured allocation, and the 8B target.

    The 8B bar: Llama-3.1-8B QLoRA r=16 on all linear layers, batch 1, sequence 2048, peak at most 7.0 GB.
    """
    return estimate_verdicts(rows) + eight_b_verdicts(rows)


def estimate_verdicts(rows: list[dict]) -> list[str]:
    """pass/FAIL for the estimator's bar over every measured case: within 10% of the measured allocation."""
    errors = [abs(r["error_allocated"]) for r in rows if r.get("error_allocated") is not None]
    lines = []
    if errors:
        within = sum(e <= 0.10 for e in errors)
        lines.append(f"[{'pass' if within == len(errors) else 'FAIL'}] estimate within 10% of measured allocation: "
                     f"{within} of {len(errors)} cases (worst {max(errors):.1%})")
    return lines


def eight_b_verdicts(rows: list[dict]) -> list[str]:
    """pass/FAIL for each measured row of the 8B target setting (QLoRA, batch 1, seq 2048): at most 7.0 GB."""
    lines = []
    target = [r for r in rows if r["model"] == "llama-8b" and r["method"].startswith("qlora") and r["batch"] == 1 and r["seq"] == 2048
              and r.get("allocated_gib") is not None]
    for r in target:
        gb = r["allocated_gib"] * GiB / 1e9
        lines.append(f"[{'pass' if gb <= 7.0 else 'FAIL'}] 8B target ({r['method']}, loss {r['loss']}, embeddings on CPU: "
                     f"{r.get('emb', False)}): {gb:.2f} GB allocated (bar 7.0 GB)")
    return lines


def table_row(r: dict) -> str:
    """One markdown row; the estimate columns are filled even where nothing was measured."""
    head = f"| {r['model']} | {r['method']} | {r['batch']} | {r['seq']} | {r['ckpt']} | {r['offload']} | {r.get('emb', False)} | {r['packing']} | {r['loss']} |"
    est_alloc, est_res = f"{r['estimate_allocated_gib']:.2f}", f"{r['estimate_reserved_gib']:.2f}"
    status = unmeasured(r)
    if status:
        return f"{head} {status} | | | {est_alloc} | | | {est_res} | | |"
    timing = f"{r['step_ms']:.1f} | {r['tokens_per_s']:.0f}"
    if r.get("allocated_gib") is None:
        return f"{head} {timing} | not measured | {est_alloc} | | not measured | {est_res} | | not measured |"
    return (f"{head} {timing} | {r['allocated_gib']:.2f} | {est_alloc} | {r['error_allocated']:+.1%} | "
            f"{r['reserved_gib']:.2f} | {est_res} | {r['error_reserved']:+.1%} | {r['context_gib']:.2f} |")


def main(argv=None) -> int:
    """Run the grid (or the smoke grid on the CPU) and write the results, saving after every row."""
    from studio.modeling.quiet import quiet_libraries

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 1B shape and three cases per method")
    parser.add_argument("--target", action="store_true",
                        help="only the 8B target setting (QLoRA r=16, batch 1, seq 2048, fused loss; embeddings on GPU and CPU)")
    parser.add_argument("--smoke", action="store_true", help="every case kind on the CPU at a tiny shape: checks the code, measures nothing")
    parser.add_argument("--shapes", nargs="*", choices=GPU_SHAPES, help="model shapes (default: both; --quick: llama-1b)")
    parser.add_argument("--methods", nargs="*", choices=list(METHODS), help="default: all three; --target: the two QLoRA backends")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (default 3; --smoke: 1)")
    parser.add_argument("--models-dir", type=Path, help="where to keep the random model directories (default: a temporary folder)")
    parser.add_argument("--runs-dir", type=Path, help="where to keep each case's run directory (metrics.jsonl; default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if args.smoke:
        device = start_smoke()
    elif cuda_missing("bench_memory", "it measures GPU memory"):
        return NO_CUDA_EXIT
    else:
        device = "cuda"
    quiet_libraries()  # as `studio train` does
    env = environment(device, gpu_gib=True, bitsandbytes=True)
    results = Results(args.out, "memory-smoke" if args.smoke else "memory", env)
    print(" | ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    if args.smoke:
        shapes, steps, warmup = [SMOKE_SHAPE], 1, 1
    else:
        default_shapes = ["llama-8b"] if args.target else ["llama-1b"] if args.quick else GPU_SHAPES
        shapes, steps, warmup = args.shapes or default_shapes, args.steps, 2
    rows: list[dict] = []

    def result() -> dict:
        return {"environment": env, "quick": args.quick, "smoke": args.smoke, "rows": rows}

    def record(row: dict) -> None:
        rows.append(row)
        results.save(result())

    with tempfile.TemporaryDirectory() as tmp:
        models_dir = args.models_dir or Path(tmp) / "models"
        runs_dir = args.runs_dir or Path(tmp) / "runs"
        for shape in shapes:
            model_dir = write_model_dir(models_dir / shape, shape, device)
            grid = smoke_cases() if args.smoke else target_cases() if args.target else cases(shape, args.quick)
            for method in args.methods or ([m for m in METHODS if m.startswith("qlora")] if args.target else list(METHODS)):
                bench(shape, method, model_dir, grid, steps, runs_dir, device, record, warmup)
    results.finish(result(), lambda: markdown(env, rows))
    for line in estimate_verdicts(rows):  # the 8B rows' verdicts were printed as they were measured
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
