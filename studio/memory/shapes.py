"""A model's shape (what the estimate needs from its config), found without a download or a GPU.

From a given config, a local folder's config.json, a GGUF file's metadata (tensors are not loaded), the
bundled model's converted config, or a table of the shipped recipes' models. Also the linear layers a
block holds (names, in/out features, count for mixture-of-experts), which the estimate sums over. A
vision-language model's shape is its language model's, with its vision tower in `vision`
(studio.memory.vision_shapes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from studio.config.schema import BUNDLED_DEMO_MODEL, Recipe
from studio.errors import StudioError
from studio.memory.vision_shapes import KNOWN_VISION, VisionShape, vision_shape_from_config

NF4_BLOCKSIZE = 64  # studio_kernels.nf4's (and bitsandbytes') block of 64 weights per scale
ABSMAX_BLOCKSIZE = 256  # double quantization: 256 block scales per second-level scale


@dataclass(frozen=True)
class Shape:
    """What the estimate needs from a model config. MoE and MLA fields are 0 for dense GQA models."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = True
    gated: bool = True
    qkv_bias: bool = False
    params: int | None = None  # exact total from the checkpoint, when known (covers biases, extras)
    # Mixture of experts (DeepSeek-V3, Mixtral, Qwen-MoE): routed experts, experts per token, shared
    # experts, each expert's width, and how many leading layers stay dense.
    experts: int = 0
    experts_per_tok: int = 0
    shared_experts: int = 0
    moe_intermediate: int = 0
    dense_layers: int = 0
    # Multi-head latent attention (DeepSeek-V2/V3)
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_dim: int = 0
    qk_rope_dim: int = 0
    v_head_dim: int = 0
    # A vision-language model's tower and projector (None for a text model). The fields above, and params, are
    # its language model's.
    vision: VisionShape | None = None


_T = ("hidden", "layers", "intermediate", "heads", "kv_heads", "head_dim", "vocab", "tied", "gated", "params")


# Shapes of the shipped recipes' models and of the multi-GPU references (from their config.json), so
# estimates need no download. params is the checkpoint's exact parameter count.
KNOWN_CONFIGS: dict[str, Shape] = {
    name: Shape(**dict(zip(_T, values)))
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
        "meta-llama/Llama-3.1-8B": (4096, 32, 14336, 32, 8, 128, 128256, False, True, 8_030_261_248),
        "meta-llama/Llama-3.1-70B-Instruct": (8192, 80, 28672, 64, 8, 128, 128256, False, True, 70_553_706_496),
        "meta-llama/Llama-3.1-405B-Instruct": (16384, 126, 53248, 128, 8, 128, 128256, False, True, 405_853_388_800),
        "mistralai/Mistral-7B-Instruct-v0.3": (4096, 32, 14336, 32, 8, 128, 32768, False, True, 7_248_023_552),
        "google/gemma-3-1b-it": (1152, 26, 6912, 4, 1, 256, 262144, True, True, 999_885_952),
        "google/gemma-3-4b-it": (2560, 34, 10240, 8, 4, 256, 262208, True, True, 3_880_263_168),
        # Vision-language models: their language model here (params without the tower), the tower in KNOWN_VISION.
        "Qwen/Qwen2.5-VL-3B-Instruct": (2048, 36, 11008, 16, 2, 128, 151936, True, True, 3_085_938_688),
        "HuggingFaceTB/SmolVLM-256M-Instruct": (576, 30, 1536, 9, 3, 64, 49280, False, True, 162_974_016),
        "HuggingFaceTB/SmolVLM-500M-Instruct": (960, 32, 2560, 15, 5, 64, 49280, False, True, 409_252_800),
        # 40 layers, 8 of them cross-attention layers with the same linear shapes (their k/v read the image states).
        "meta-llama/Llama-3.2-11B-Vision-Instruct": (4096, 40, 14336, 32, 8, 128, 128256, False, True, 9_775_192_080),
        "openai-community/gpt2": (768, 12, 3072, 12, 12, 64, 50257, True, False, 124_439_808),
    }.items()
}


for _name in ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
              "Qwen/Qwen2.5-VL-3B-Instruct"):
    KNOWN_CONFIGS[_name] = replace(KNOWN_CONFIGS[_name], qkv_bias=True)
for _name, _tower in KNOWN_VISION.items():
    KNOWN_CONFIGS[_name] = replace(KNOWN_CONFIGS[_name], vision=_tower)


# DeepSeek-V3 (config.json of deepseek-ai/DeepSeek-V3): 61 layers, the first 3 dense, then 256 routed
# experts (8 per token) + 1 shared expert of width 2048; MLA attention. 671B parameters without the
# multi-token-prediction module (which fine-tuning does not load).
KNOWN_CONFIGS["deepseek-ai/DeepSeek-V3"] = Shape(
    hidden=7168, layers=61, intermediate=18432, heads=128, kv_heads=128, head_dim=128, vocab=129280, tied=False,
    experts=256, experts_per_tok=8, shared_experts=1, moe_intermediate=2048, dense_layers=3,
    q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128,
)


def shape_from_hf_config(config: dict, folder: Path | None = None) -> Shape:
    """The shape from a Hugging Face config.json: its text_config for multimodal models, whose vision_config (and the
    image sizes of `folder`'s preprocessor_config.json, when given) becomes `vision`."""
    vision = vision_shape_from_config(config, folder)
    config = config.get("text_config") or config
    h = config.get("hidden_size") or config["n_embd"]
    heads = config.get("num_attention_heads") or config.get("n_head")
    kind = config.get("model_type", "")
    experts = config.get("n_routed_experts") or config.get("num_local_experts") or config.get("num_experts") or 0
    return Shape(
        hidden=h,
        layers=config.get("num_hidden_layers") or config["n_layer"],
        intermediate=config.get("intermediate_size") or config.get("n_inner") or 4 * h,
        heads=heads,
        kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or h // heads,
        vocab=config["vocab_size"],
        tied=bool(config.get("tie_word_embeddings", True)),
        gated=kind not in ("gpt2", "gpt_neox", "opt", "phi"),
        qkv_bias=bool(config.get("attention_bias")) or kind in ("qwen2", "qwen2_vl", "qwen2_5_vl", "qwen2_vl_text", "qwen2_5_vl_text"),
        experts=experts,
        experts_per_tok=(config.get("num_experts_per_tok") or 0) if experts else 0,
        shared_experts=(config.get("n_shared_experts") or 0) if experts else 0,
        moe_intermediate=(config.get("moe_intermediate_size") or config.get("intermediate_size") or 0) if experts else 0,
        dense_layers=(config.get("first_k_dense_replace") or 0) if experts else 0,
        q_lora_rank=config.get("q_lora_rank") or 0,
        kv_lora_rank=config.get("kv_lora_rank") or 0,
        qk_nope_dim=config.get("qk_nope_head_dim") or 0,
        qk_rope_dim=config.get("qk_rope_head_dim") or 0,
        v_head_dim=config.get("v_head_dim") or 0,
        vision=vision,
    )


def shape_from_gguf(path: str | Path) -> Shape:
    """The shape from a GGUF file's metadata (read with the `gguf` package; tensors are not loaded)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(key: str, default=None):
        f = reader.fields.get(key)
        if f is None:
            return default
        value = f.parts[f.data[0]]
        if f.types and f.types[0].name == "STRING":
            return bytes(value).decode("utf-8")
        return value.tolist()[0] if hasattr(value, "tolist") else value

    arch = field("general.architecture")
    if arch is None:
        raise StudioError("the GGUF file has no general.architecture", where=str(path), fix="use a GGUF written by llama.cpp's converters")
    h = int(field(f"{arch}.embedding_length"))
    heads = int(field(f"{arch}.attention.head_count"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = field(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None)
    names = {t.name for t in reader.tensors}
    return Shape(
        hidden=h,
        layers=int(field(f"{arch}.block_count")),
        intermediate=int(field(f"{arch}.feed_forward_length", 4 * h)),
        heads=heads,
        kv_heads=int(field(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(field(f"{arch}.attention.key_length", h // heads)),
        vocab=int(vocab),
        tied="output.weight" not in names,
        gated=arch not in ("gpt2", "gptneox", "phi2"),
        qkv_bias="blk.0.attn_q.bias" in names,
        experts=int(field(f"{arch}.expert_count", 0)),
        experts_per_tok=int(field(f"{arch}.expert_used_count", 0)),
        shared_experts=int(field(f"{arch}.expert_shared_count", 0)),
        moe_intermediate=int(field(f"{arch}.expert_feed_forward_length", 0)),
        dense_layers=int(field(f"{arch}.leading_dense_block_count", 0)),
    )


def model_shape(recipe: Recipe, model_config: dict | None = None) -> tuple[Shape | None, str]:
    """The model's shape and where it came from: the given config, a local config.json or GGUF, or the known table."""
    if model_config is not None:
        return shape_from_hf_config(model_config), "given config"
    name = recipe.model.name
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return shape_from_hf_config(json.loads((path / "config.json").read_text(encoding="utf-8")), path), str(path / "config.json")
    if path.is_file() and path.suffix.lower() == ".gguf":
        try:
            return shape_from_gguf(path), str(path)
        except StudioError as exc:
            return None, f"unreadable GGUF metadata: {exc.what}"
        except Exception as exc:  # a truncated or foreign file: the gguf reader raises many kinds
            return None, f"unreadable GGUF metadata: {type(exc).__name__}"
    if name == BUNDLED_DEMO_MODEL:
        from studio.modeling.source import converted_demo_dir

        converted = converted_demo_dir()
        if converted is not None:
            config = converted / "config.json"
            return shape_from_hf_config(json.loads(config.read_text(encoding="utf-8"))), str(config)
    if name in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[name], "known shapes table"
    return None, "unknown model"


def linear_shapes(shape: Shape, moe_layer: bool = False) -> list[tuple[str, int, int, int]]:
    """(module name, in, out, count) of the linear layers in one block; count > 1 for routed experts."""
    h = shape.hidden
    if shape.kv_lora_rank:  # MLA
        qk = shape.qk_nope_dim + shape.qk_rope_dim
        q = [("q_a_proj", h, shape.q_lora_rank, 1), ("q_b_proj", shape.q_lora_rank, shape.heads * qk, 1)] if shape.q_lora_rank else [("q_proj", h, shape.heads * qk, 1)]
        attn = q + [
            ("kv_a_proj_with_mqa", h, shape.kv_lora_rank + shape.qk_rope_dim, 1),
            ("kv_b_proj", shape.kv_lora_rank, shape.heads * (shape.qk_nope_dim + shape.v_head_dim), 1),
            ("o_proj", shape.heads * shape.v_head_dim, h, 1),
        ]
    else:
        q_dim, kv_dim = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        attn = [("q_proj", h, q_dim, 1), ("k_proj", h, kv_dim, 1), ("v_proj", h, kv_dim, 1), ("o_proj", q_dim, h, 1)]
    if moe_layer:
        width, n = shape.moe_intermediate, shape.experts + shape.shared_experts
        mlp = [("gate_proj", h, width, n), ("up_proj", h, width, n), ("down_proj", width, h, n)]
        return attn + mlp  # the router (experts x h) is counted with the unquantized parameters
    inter = shape.intermediate
    mlp = [("gate_proj", h, inter, 1), ("up_proj", h, inter, 1), ("down_proj", inter, h, 1)] if shape.gated else [("up_proj", h, inter, 1), ("down_proj", inter, h, 1)]
    return attn + mlp


def layer_groups(shape: Shape) -> list[tuple[bool, int]]:
    """(is MoE, number of layers) groups."""
    if not shape.experts:
        return [(False, shape.layers)]
    return [(False, shape.dense_layers), (True, shape.layers - shape.dense_layers)]


# GPT-2 style names map onto the generic ones above.
_NAME_ALIASES = {"c_attn": ("q_proj", "k_proj", "v_proj"), "c_proj": ("o_proj", "down_proj"), "c_fc": ("up_proj",), "query_key_value": ("q_proj", "k_proj", "v_proj"),
                 "output_proj": ("o_proj",), "w1": ("gate_proj",), "w3": ("up_proj",), "w2": ("down_proj",)}


def adapted_names(recipe: Recipe) -> set[str] | None:
    """Adapted module names; None = every linear of the blocks (all-linear)."""
    if recipe.lora.targets == "all-linear":
        return None
    chosen: set[str] = set()
    for target in recipe.lora.targets:
        chosen.update(_NAME_ALIASES.get(target, (target,)))
    return chosen


def nf4_bytes(n: int, double_quant: bool = True) -> int:
    """Bytes of one NF4-quantized weight of n elements, as QuantLinear / bitsandbytes store it."""
    blocks = -(-n // NF4_BLOCKSIZE)
    packed = (n + 1) // 2
    if not double_quant:
        return packed + 4 * blocks
    return packed + blocks + 4 * (-(-blocks // ABSMAX_BLOCKSIZE)) + 4 + 4 * 256  # absmax_q, absmax_absmax, offset, code


def known_shape(recipe: Recipe, model_config: dict | None = None) -> Shape:
    """The model's shape, or a StudioError saying how to make it known."""
    shape, _ = model_shape(recipe, model_config)
    if shape is None:
        raise StudioError(f"no shape known for model {recipe.model.name!r}", where="model.name", fix="point model.name at a local folder with config.json (or a .gguf file)")
    return shape
