"""A first estimate of peak GPU memory for a recipe, from the model's shape alone (no download, no GPU).

The formula (all sizes in bytes, reported in GiB; tokens T = batch_size * max_length, the worst case of
a batch padded to the length limit; L layers, h hidden, I intermediate, V vocab):

    weights      = linear params x (0.5 + scale overhead)  for qlora (NF4, blocksize 64: fp32 absmax is
                   4/64 bytes per weight, double quantization makes it 1/64 + 4/(64*256))
                 = linear params x bytes(dtype)           for lora/dora (bf16: 2; float32: 4)
                   + embedding, head and norm params x bytes(dtype) (never quantized)
    lora         = adapter params x 16  (fp32 weight 4 + grad 4 + two Adam moments 8);
                   adapter params = sum over adapted linears of r x (in + out), plus `out` magnitudes for dora
    activations  = T x L x a x bytes(compute)  with a = 10 h + 2 kv + 4 I values per token per layer kept for
                   backward (layer inputs, q/k/v, attention output, gate/up/act/down inputs); with
                   gradient checkpointing only each layer's input (h) is kept, plus one layer's full set
                   while it is recomputed: T x (L h + a) x bytes(compute)
    logits       = T x V x 4 x 2  (fp32 logits and their gradient)
    overhead     = 0.75 GiB  (CUDA context, allocator fragmentation, workspace buffers)
    peak_gib     = weights + lora + activations + logits + overhead

It is deliberately simple and slightly pessimistic; measured peaks refine it in a later version.
"""

from __future__ import annotations

import json
from pathlib import Path

from .recipe import BUNDLED_DEMO_MODEL, Recipe

GIB = 1024**3
OVERHEAD_GIB = 0.75
ADAM_BYTES_PER_PARAM = 16

# Shapes of the shipped recipes' models (from their config.json), so estimates need no download.
# hidden, layers, intermediate, heads, kv_heads, head_dim, vocab, tied embeddings, gated MLP, total params.
_T = ("hidden", "layers", "intermediate", "heads", "kv_heads", "head_dim", "vocab", "tied", "gated", "params")
KNOWN_CONFIGS: dict[str, dict] = {
    name: dict(zip(_T, values))
    for name, values in {
        BUNDLED_DEMO_MODEL: (576, 30, 1536, 9, 3, 64, 49152, True, True, 134_515_008),
        "HuggingFaceTB/SmolLM2-135M-Instruct": (576, 30, 1536, 9, 3, 64, 49152, True, True, 134_515_008),
        "Qwen/Qwen2.5-0.5B-Instruct": (896, 24, 4864, 14, 2, 64, 151936, True, True, 494_032_768),
        "Qwen/Qwen2.5-1.5B-Instruct": (1536, 28, 8960, 12, 2, 128, 151936, True, True, 1_543_714_304),
        "Qwen/Qwen2.5-7B-Instruct": (3584, 28, 18944, 28, 4, 128, 152064, False, True, 7_615_616_512),
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": (1536, 28, 8960, 12, 2, 128, 151936, False, True, 1_777_088_000),
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": (4096, 32, 14336, 32, 8, 128, 128256, False, True, 8_030_261_248),
        "meta-llama/Llama-3.2-1B-Instruct": (2048, 16, 8192, 32, 8, 64, 128256, True, True, 1_235_814_400),
        "meta-llama/Llama-3.2-3B-Instruct": (3072, 28, 8192, 24, 8, 128, 128256, True, True, 3_212_749_824),
        "meta-llama/Llama-3.1-8B-Instruct": (4096, 32, 14336, 32, 8, 128, 128256, False, True, 8_030_261_248),
        "mistralai/Mistral-7B-Instruct-v0.3": (4096, 32, 14336, 32, 8, 128, 32768, False, True, 7_248_023_552),
        "google/gemma-3-1b-it": (1152, 26, 6912, 4, 1, 256, 262144, True, True, 999_885_952),
        "google/gemma-3-4b-it": (2560, 34, 10240, 8, 4, 256, 262208, True, True, 3_880_263_168),
        "openai-community/gpt2": (768, 12, 3072, 12, 12, 64, 50257, True, False, 124_439_808),
    }.items()
}

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # auto = bf16 on a GPU


def model_shape(recipe: Recipe, model_config: dict | None = None) -> tuple[dict | None, str]:
    """The model's shape and where it came from: the given config, a local config.json, or the known table."""
    if model_config is not None:
        return _from_hf_config(model_config), "given config"
    name = recipe.model.name
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return _from_hf_config(json.loads((path / "config.json").read_text(encoding="utf-8"))), str(path / "config.json")
    if name == BUNDLED_DEMO_MODEL:
        converted = _converted_demo_config()
        if converted is not None:
            return _from_hf_config(json.loads(converted.read_text(encoding="utf-8"))), str(converted)
    if name in KNOWN_CONFIGS:
        return dict(KNOWN_CONFIGS[name]), "known shapes table"
    return None, "unknown model"


def estimate(recipe: Recipe, gpu_gib: float, model_config: dict | None = None) -> dict:
    """Peak GPU memory of training `recipe`: a GiB breakdown, `peak_gib` (their sum) and whether it `fits` in gpu_gib.

    `model_config` is a Hugging Face config.json as a dict; without it the shape comes from the recipe's
    local model directory or the known-shapes table. For an unknown model the result has `known: False`.
    """
    shape, source = model_shape(recipe, model_config)
    if shape is None:
        return {"known": False, "source": source, "model": recipe.model.name, "gpu_gib": gpu_gib, "breakdown": {}, "peak_gib": None, "fits": None}
    h, n_layers, inter, vocab = shape["hidden"], shape["layers"], shape["intermediate"], shape["vocab"]
    q_dim, kv_dim = shape["heads"] * shape["head_dim"], shape["kv_heads"] * shape["head_dim"]
    linears = _linear_shapes(h, inter, q_dim, kv_dim, shape["gated"])
    linear_params = n_layers * sum(i * o for _, i, o in linears)
    # Embeddings, head, norms and biases; the known table's exact parameter count covers biases and
    # position embeddings the shape alone does not show.
    other_params = vocab * h * (1 if shape["tied"] else 2) + n_layers * 2 * h + h + (n_layers * (q_dim + 2 * kv_dim) if shape.get("qkv_bias") else 0)
    if shape.get("params"):
        other_params = shape["params"] - linear_params

    weight_bytes = _DTYPE_BYTES[recipe.model.dtype]
    compute_bytes = _DTYPE_BYTES[recipe.quant.compute_dtype if recipe.method == "qlora" else recipe.model.dtype]
    if recipe.method == "qlora":
        scale = 1 / 64 + 4 / (64 * 256) if recipe.quant.double_quant else 4 / 64
        weights = linear_params * (0.5 + scale) + other_params * compute_bytes
    else:
        weights = (linear_params + other_params) * weight_bytes

    targets = _targets(recipe, [name for name, _, _ in linears])
    r = recipe.lora.rank
    lora_params = n_layers * sum(r * (i + o) + (o if recipe.method == "dora" else 0) for name, i, o in linears if name in targets)
    lora = lora_params * ADAM_BYTES_PER_PARAM

    tokens = recipe.train.batch_size * recipe.data.max_length
    per_layer = 10 * h + 2 * kv_dim + 4 * inter
    if recipe.train.gradient_checkpointing:
        activations = tokens * (n_layers * h + per_layer) * compute_bytes
    else:
        activations = tokens * n_layers * per_layer * compute_bytes
    logits = tokens * vocab * 4 * 2

    breakdown = {
        "weights": weights / GIB,
        "lora": lora / GIB,
        "activations": activations / GIB,
        "logits": logits / GIB,
        "overhead": OVERHEAD_GIB,
    }
    peak = sum(breakdown.values())
    return {
        "known": True,
        "source": source,
        "model": recipe.model.name,
        "params": int(linear_params + other_params),
        "lora_params": int(lora_params),
        "tokens_per_batch": tokens,
        "gpu_gib": float(gpu_gib),
        "breakdown": breakdown,
        "peak_gib": peak,
        "fits": peak <= float(gpu_gib),
    }


def format_estimate(result: dict) -> str:
    """The estimate as a short markdown table for the UI."""
    if not result.get("known"):
        return f"**Memory estimate:** unknown shape for `{result['model']}` (point model.name at a local folder with config.json)."
    verdict = "fits" if result["fits"] else "does **not** fit"
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in result["breakdown"].items())
    return (
        f"**Peak ≈ {result['peak_gib']:.2f} GiB** — {verdict} in {result['gpu_gib']:g} GiB  \n"
        f"{result['params'] / 1e6:,.0f}M params, {result['lora_params'] / 1e6:,.2f}M trainable; shapes from {result['source']}\n\n"
        f"| part | GiB |\n|---|---|\n{rows}\n"
    )


def _linear_shapes(h: int, inter: int, q_dim: int, kv_dim: int, gated: bool) -> list[tuple[str, int, int]]:
    """(module name, in, out) of the linear layers in one transformer block."""
    attn = [("q_proj", h, q_dim), ("k_proj", h, kv_dim), ("v_proj", h, kv_dim), ("o_proj", q_dim, h)]
    mlp = [("gate_proj", h, inter), ("up_proj", h, inter), ("down_proj", inter, h)] if gated else [("up_proj", h, inter), ("down_proj", inter, h)]
    return attn + mlp


# GPT-2 style names map onto the generic ones above.
_NAME_ALIASES = {"c_attn": ("q_proj", "k_proj", "v_proj"), "c_proj": ("o_proj", "down_proj"), "c_fc": ("up_proj",), "query_key_value": ("q_proj", "k_proj", "v_proj")}


def _targets(recipe: Recipe, names: list[str]) -> set[str]:
    if recipe.lora.targets == "all-linear":
        return set(names)
    chosen: set[str] = set()
    for target in recipe.lora.targets:
        chosen.update(_NAME_ALIASES.get(target, (target,)))
    return chosen


def _from_hf_config(config: dict) -> dict:
    """The shape fields from a Hugging Face config.json (text_config for multimodal models)."""
    config = config.get("text_config", config)
    h = config.get("hidden_size") or config["n_embd"]
    heads = config.get("num_attention_heads") or config.get("n_head")
    gated = config.get("model_type") not in ("gpt2", "gpt_neox", "opt", "phi")
    return {
        "hidden": h,
        "layers": config.get("num_hidden_layers") or config["n_layer"],
        "intermediate": config.get("intermediate_size") or config.get("n_inner") or 4 * h,
        "heads": heads,
        "kv_heads": config.get("num_key_value_heads") or heads,
        "head_dim": config.get("head_dim") or h // heads,
        "vocab": config["vocab_size"],
        "tied": bool(config.get("tie_word_embeddings", True)),
        "gated": gated,
        "qkv_bias": bool(config.get("attention_bias")) or config.get("model_type") == "qwen2",
    }


def _converted_demo_config() -> Path | None:
    """config.json of the bundled model if it was already converted (never converts it here)."""
    from .model_source import studio_home

    found = sorted((studio_home() / "models").glob("smollm2-135m-instruct-*/config.json"))
    return found[-1] if found else None
