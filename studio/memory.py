"""Peak GPU memory of a recipe, from the model's shape alone (no download, no GPU), and settings that fit.

`estimate(recipe, gpu)` adds up what a LoRA/QLoRA training step keeps on the GPU at its peak. Sizes are
bytes, reported in GiB. T = batch_size x max_length tokens per micro-batch (the worst case: a padded
batch at the length limit; with `data.packing` every row is full, so it is also the typical case).
L layers, h hidden, q = heads x head_dim, kv = kv_heads x head_dim, I the MLP width, V the vocabulary,
b = bytes of the compute dtype (bf16: 2).

    weights      qlora: every adapted-or-not linear of the blocks in NF4 (blocksize 64), per layer of n
                 weights: ceil(n/2) packed bytes + ceil(n/64) block scales (uint8 with double quant, else
                 fp32) + with double quant ceil(n/64/256) fp32 second-level scales, one fp32 offset and
                 the 256-entry fp32 code (exactly the QuantLinear buffers of `studio.models.quantize_onto`,
                 byte-identical to bitsandbytes' Linear4bit). Embeddings, lm_head, norms and biases stay
                 16-bit (model dtype). lora/dora: every parameter in the model dtype. With
                 train.offload_embeddings an untied input embedding (V x h x b) is in CPU memory instead.
    lora         adapter parameters x 4 (fp32), or x 2 when the adapter trains in bf16 (lora.dtype; auto
                 = bf16 for QLoRA with bf16 compute; gradients and optimizer halve too); parameters =
                 sum over adapted linears of r x (in + out) (+ out magnitudes for DoRA)
    gradients    adapter parameters x 4 (fp32)
    optimizer    adapter parameters x 8 (AdamW's two fp32 moments; `optim="adamw_torch"` in train.py)
    activations  values kept for backward per token per layer, A = 4h + 2q + 2kv + m (m = 4I gated MLP:
                 gate, up, act(gate), act*up; 2I plain MLP) + r per adapted linear (the A x product) + the
                 dropped input per adapted linear when lora.dropout > 0. The 4h are the two norm inputs and
                 outputs, 2q + 2kv the attention q, k, v and output; SDPA/flash attention keeps no
                 seq x seq matrix. Without checkpointing: T x L x A x b. With gradient checkpointing:
                 T x (L x h + A) x b, the layer inputs plus one layer recomputed in backward; with
                 offload_activations the layer inputs live in pinned CPU memory and only OFFLOAD_IN_FLIGHT = 5
                 of them (trl's max_fwd_stash_size: tensors kept alive while their copy is in flight) stay
                 on the GPU: T x (5h + A) x b (without checkpointing, offload keeps about one layer's
                 values plus the stash: T x 2A x b). Always + T x (2h + 2I) x b for
                 the gradients in flight through one layer in backward, + T x 2h x b for the final norm.
                 Mixture-of-experts layers count I as the experts a token is routed to
                 (experts_per_tok + shared) x moe_intermediate; MLA attention counts its q/kv latents.
    logits       loss "full" (a plain HF forward): T x V x (2 + 4 + 4), the 16-bit logits, their fp32
                 upcast and fp32 log-softmax. "chunked" (trl 1.16's fused LM head, what SFTTrainer runs
                 when train.fused_loss is false): one min(T, 4096) x 32768 tile x b + T x h x (b + 4) for the
                 gathered hidden rows and their fp32 gradient. "fused" (train.fused_loss, the studio kernel
                 `studio_kernels.fused_ce`): one C x (V + h) x b chunk buffer (C = chunk_size_for(V, h), 256 MiB)
                 + T x h x 2b (the contiguous hidden rows and dX) + T x 4 (per-token losses).
    overhead     CUDA_CONTEXT_GIB (CUDA context, cuBLAS workspace; not in torch.cuda.max_memory_allocated)
                 + FRAGMENTATION x allocated (the caching allocator's reserved-but-unused blocks)

`allocated_gib` (what torch.cuda.max_memory_allocated reports) is the sum of all but overhead;
`reserved_gib` (torch.cuda.max_memory_reserved) adds fragmentation; `peak_gib` (what the GPU must have
free, nvidia-smi's number) adds the CUDA context, and is what `fits` compares to the GPU.

Constants, none tuned to a published measurement: CUDA_CONTEXT_GIB = 0.5 is the usual context of
torch 2.x on CUDA 12 with lazy module loading (0.3 to 0.6 GiB across cards); FRAGMENTATION = 0.05 is an
assumed allocator slack. benchmarks/bench_memory.py measures both against real runs. The estimate is an
upper bound for typical data: rows shorter than max_length use less.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .errors import StudioError
from .recipe import BUNDLED_DEMO_MODEL, Recipe

GIB = 1024**3
CUDA_CONTEXT_GIB = 0.5
FRAGMENTATION = 0.05
ADAPTER_BYTES = 4  # fp32 adapter weights
GRAD_BYTES = 4  # fp32 adapter gradients
ADAM_BYTES = 8  # AdamW exp_avg + exp_avg_sq, fp32
NF4_BLOCKSIZE = 64
ABSMAX_BLOCKSIZE = 256
TRL_TOKEN_TILE = 4096  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
TRL_VOCAB_TILE = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE
FUSED_BUDGET_BYTES = 256 * 2**20  # studio_kernels.fused_ce.DEFAULT_BUDGET_BYTES
OFFLOAD_IN_FLIGHT = 5  # trl get_act_offloading_ctx_manager(max_fwd_stash_size=5)
MAX_BATCH = 4096  # TrainSpec.batch_size's bound
MAX_LENGTH = 1_048_576  # DataSpec.max_length's bound

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # auto = bf16 on a GPU


# ---------------------------------------------------------------------------------------------
# Model shapes
# ---------------------------------------------------------------------------------------------


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

    def __getitem__(self, key):  # the first version returned dicts; keep `shape["hidden"]` working
        return getattr(self, key)


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
        "openai-community/gpt2": (768, 12, 3072, 12, 12, 64, 50257, True, False, 124_439_808),
    }.items()
}
for _name in ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"):
    KNOWN_CONFIGS[_name] = replace(KNOWN_CONFIGS[_name], qkv_bias=True)
# DeepSeek-V3 (config.json of deepseek-ai/DeepSeek-V3): 61 layers, the first 3 dense, then 256 routed
# experts (8 per token) + 1 shared expert of width 2048; MLA attention. 671B parameters without the
# multi-token-prediction module (which fine-tuning does not load).
KNOWN_CONFIGS["deepseek-ai/DeepSeek-V3"] = Shape(
    hidden=7168, layers=61, intermediate=18432, heads=128, kv_heads=128, head_dim=128, vocab=129280, tied=False,
    experts=256, experts_per_tok=8, shared_experts=1, moe_intermediate=2048, dense_layers=3,
    q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128,
)


def shape_from_hf_config(config: dict) -> Shape:
    """The shape from a Hugging Face config.json (its text_config for multimodal models)."""
    config = config.get("text_config", config)
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
        qkv_bias=bool(config.get("attention_bias")) or kind == "qwen2",
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
        return shape_from_hf_config(json.loads((path / "config.json").read_text(encoding="utf-8"))), str(path / "config.json")
    if path.is_file() and path.suffix == ".gguf":
        try:
            return shape_from_gguf(path), str(path)
        except StudioError as exc:
            return None, f"unreadable GGUF metadata: {exc.what}"
        except Exception as exc:  # a truncated or foreign file: the gguf reader raises many kinds
            return None, f"unreadable GGUF metadata: {type(exc).__name__}"
    if name == BUNDLED_DEMO_MODEL:
        converted = _converted_demo_config()
        if converted is not None:
            return shape_from_hf_config(json.loads(converted.read_text(encoding="utf-8"))), str(converted)
    if name in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[name], "known shapes table"
    return None, "unknown model"


def _converted_demo_config() -> Path | None:
    """config.json of the bundled model if it was already converted (never converts it here)."""
    from .model_source import studio_home

    found = sorted((studio_home() / "models").glob("smollm2-135m-instruct-*/config.json"))
    return found[-1] if found else None


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


def _layer_kinds(shape: Shape) -> list[tuple[bool, int]]:
    """(is MoE, number of layers) groups."""
    if not shape.experts:
        return [(False, shape.layers)]
    return [(False, shape.dense_layers), (True, shape.layers - shape.dense_layers)]


# GPT-2 style names map onto the generic ones above.
_NAME_ALIASES = {"c_attn": ("q_proj", "k_proj", "v_proj"), "c_proj": ("o_proj", "down_proj"), "c_fc": ("up_proj",), "query_key_value": ("q_proj", "k_proj", "v_proj"),
                 "output_proj": ("o_proj",), "w1": ("gate_proj",), "w3": ("up_proj",), "w2": ("down_proj",)}


def _targets(recipe: Recipe) -> set[str] | None:
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


# ---------------------------------------------------------------------------------------------
# The estimate
# ---------------------------------------------------------------------------------------------


@dataclass
class _Terms:
    """Bytes per term for one micro-batch; see the module docstring for each formula."""

    weights: float
    lora: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    cpu_offload: float
    params: int
    lora_params: int
    block_weights: float  # the largest FSDP unit (a block, the embedding or the head), for gathering
    saved_values: int  # values per token kept for backward at the end of the forward pass


def _terms(recipe: Recipe, shape: Shape, batch: int, length: int, loss: str) -> _Terms:
    h, V = shape.hidden, shape.vocab
    model_b = _DTYPE_BYTES[recipe.model.dtype]
    compute_b = _DTYPE_BYTES[recipe.quant.compute_dtype if recipe.adapter_method == "qlora" else recipe.model.dtype]
    targets = _targets(recipe)
    r = recipe.lora.rank

    linear_params = 0
    quant_bytes = 0
    lora_params = 0
    largest_block = 0.0
    for moe, n_layers in _layer_kinds(shape):
        if n_layers <= 0:
            continue
        block_params = 0
        block_quant = 0
        block_lora = 0
        for name, i, o, count in linear_shapes(shape, moe):
            block_params += count * i * o
            block_quant += count * nf4_bytes(i * o, recipe.quant.double_quant)
            if targets is None or name in targets:
                block_lora += count * (r * (i + o) + (o if recipe.adapter_method == "dora" else 0))
        linear_params += n_layers * block_params
        quant_bytes += n_layers * block_quant
        lora_params += n_layers * block_lora
        unit = block_quant if recipe.adapter_method == "qlora" else block_params * model_b
        largest_block = max(largest_block, unit)

    # Embeddings, head, norms, biases, routers: never quantized. The known table's exact count covers
    # biases and extras the shape alone does not show.
    q_dim, kv_dim = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    other = V * h * (1 if shape.tied else 2) + shape.layers * 2 * h + h
    if shape.qkv_bias:
        other += shape.layers * (q_dim + 2 * kv_dim)
    if shape.experts:
        other += (shape.layers - shape.dense_layers) * shape.experts * h
    if shape.params:
        other = shape.params - linear_params
    if recipe.adapter_method == "qlora":
        weights = quant_bytes + other * model_b
    else:
        weights = (linear_params + other) * model_b
    embedding_cpu = V * h * model_b if recipe.train.offload_embeddings and not shape.tied else 0
    weights -= embedding_cpu  # train.offload_embeddings: the input table lives in CPU memory
    largest_block = max(largest_block, V * h * model_b)  # the embedding (and head) gathered whole

    # lora.dtype auto trains a QLoRA adapter in bf16 when the compute dtype is bf16 (studio.train.adapter_dtype):
    # weights, gradients and AdamW moments all take half the fp32 bytes.
    compute_name = "bfloat16" if recipe.quant.compute_dtype == "auto" else recipe.quant.compute_dtype  # auto = bf16 on a GPU
    adapter_scale = 0.5 if recipe.adapter_dtype_for(compute_name) == "bfloat16" else 1.0

    # Activations: values per token per layer (see the docstring).
    tokens = batch * length
    attn_vals = 2 * q_dim + 2 * kv_dim
    if shape.kv_lora_rank:
        attn_vals = shape.q_lora_rank + shape.kv_lora_rank + shape.heads * (2 * (shape.qk_nope_dim + shape.qk_rope_dim) + 2 * shape.v_head_dim)
    per_layer_max = 0
    stored = 0
    for moe, n_layers in _layer_kinds(shape):
        if n_layers <= 0:
            continue
        width = (shape.experts_per_tok + shape.shared_experts) * shape.moe_intermediate if moe else shape.intermediate
        mlp_vals = (4 if shape.gated else 2) * width
        adapter_vals = sum((r + (i if recipe.lora.dropout > 0 else 0)) for name, i, o, count in linear_shapes(shape, moe) if targets is None or name in targets)
        a = 4 * h + attn_vals + mlp_vals + adapter_vals
        per_layer_max = max(per_layer_max, a)
        stored += n_layers * a
    max_width = max(shape.intermediate, (shape.experts_per_tok + shape.shared_experts) * shape.moe_intermediate)
    transient = 2 * h + 2 * max_width + 2 * h  # gradients in flight through a layer + the final norm's input and output
    t = recipe.train
    cpu = 0.0
    if t.gradient_checkpointing and t.offload_activations:
        values = OFFLOAD_IN_FLIGHT * h + per_layer_max
        cpu = tokens * shape.layers * h * compute_b
    elif t.gradient_checkpointing:
        values = shape.layers * h + per_layer_max
    elif t.offload_activations:
        values = 2 * per_layer_max
        cpu = tokens * stored * compute_b
    else:
        values = stored
    activations = tokens * (values + transient) * compute_b

    if loss == "full":
        logits = tokens * V * (compute_b + 4 + 4)
    elif loss == "chunked":
        logits = min(tokens, TRL_TOKEN_TILE) * min(V, TRL_VOCAB_TILE) * compute_b + tokens * h * (compute_b + 4)
    elif loss == "fused":
        chunk = fused_chunk_tokens(V, h, compute_b)
        logits = min(tokens, chunk) * (V + h) * compute_b + tokens * h * 2 * compute_b + tokens * 4
    else:
        raise ValueError(f"loss must be 'full', 'chunked' or 'fused', got {loss!r}")

    return _Terms(
        weights=weights,
        lora=lora_params * ADAPTER_BYTES * adapter_scale,
        gradients=lora_params * GRAD_BYTES * adapter_scale,
        optimizer=lora_params * ADAM_BYTES * adapter_scale,
        activations=activations,
        logits=logits,
        cpu_offload=cpu + embedding_cpu,
        params=int(linear_params + other),
        lora_params=int(lora_params),
        block_weights=largest_block,
        saved_values=int(values + 2 * h),
    )


def fused_chunk_tokens(vocab: int, hidden: int, dtype_bytes: int = 2) -> int:
    """Tokens per chunk of the studio's fused loss (mirrors studio_kernels.fused_ce.chunk_size_for)."""
    rows = FUSED_BUDGET_BYTES // ((vocab + hidden) * dtype_bytes)
    if rows >= 64:
        return int(rows // 64 * 64)
    return 1 << max(0, int(rows).bit_length() - 1)


def loss_kind(recipe: Recipe) -> str:
    """How training computes the loss: the studio's fused kernel, or trl's chunked LM head."""
    return "fused" if recipe.train.fused_loss else "chunked"


def _sum(terms: _Terms, gpus: int = 1) -> tuple[dict, float, float, float]:
    """Breakdown in GiB (sharded terms divided over `gpus`), allocated, reserved and peak GiB."""
    shard = max(1, gpus)
    parts = {
        "weights": terms.weights / shard / GIB,
        "lora": terms.lora / shard / GIB,
        "gradients": terms.gradients / shard / GIB,
        "optimizer": terms.optimizer / shard / GIB,
        "activations": terms.activations / GIB,
        "logits": terms.logits / GIB,
    }
    if gpus > 1:  # FSDP all-gathers one unit while prefetching the next: two unsharded copies
        parts["gathered"] = 2 * terms.block_weights / GIB
    allocated = sum(parts.values())
    parts["overhead"] = CUDA_CONTEXT_GIB + FRAGMENTATION * allocated
    return parts, allocated, allocated * (1 + FRAGMENTATION), allocated + parts["overhead"]


def _peak(recipe: Recipe, shape: Shape, batch: int, length: int, loss: str, gpus: int = 1) -> float:
    return _sum(_terms(recipe, shape, batch, length, loss), gpus)[3]


def _largest(fits, low: int, high: int) -> int:
    """Largest n in [low, high] with fits(n) (fits is monotone: true then false); low - 1 if none."""
    if not fits(low):
        return low - 1
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def estimate(recipe: Recipe, gpu: float | str = 24, model_config: dict | None = None, loss: str | None = None) -> dict:
    """Peak GPU memory of training `recipe` on one GPU, broken down, and what fits.

    `gpu` is GiB as a number, "8GB"/"24GB"/"80GB", or a GPU name ("RTX 4090", "A100-80GB", see GPUS).
    `model_config` is a Hugging Face config.json as a dict; without it the shape comes from the recipe's
    local model directory or GGUF file, or the known-shapes table (never a download). `loss` overrides
    how the loss is computed ("full", "chunked", "fused"; default: what training runs for the recipe).

    Returns `breakdown` (GiB per term, summing to `peak_gib`), `peak_gib`, `allocated_gib` (what
    torch.cuda.max_memory_allocated would report), `reserved_gib`, `fits`, `gpu_gib`, `max_batch_size`
    and `max_length` (the largest that fit with everything else unchanged; 0 when not even 1 / 8 fits),
    `cpu_offload_gib` (pinned host memory used by offload). For an unknown model `known` is False.
    """
    gpu_gib = parse_gpu(gpu)
    shape, source = model_shape(recipe, model_config)
    if shape is None:
        return {"known": False, "source": source, "model": recipe.model.name, "gpu_gib": gpu_gib, "breakdown": {}, "peak_gib": None, "fits": None}
    loss = loss or loss_kind(recipe)
    batch, length = recipe.train.batch_size, recipe.data.max_length
    terms = _terms(recipe, shape, batch, length, loss)
    breakdown, allocated, reserved, peak = _sum(terms)
    max_batch = _largest(lambda b: _peak(recipe, shape, b, length, loss) <= gpu_gib, 1, MAX_BATCH)
    max_len = _largest(lambda n: _peak(recipe, shape, batch, n, loss) <= gpu_gib, 8, MAX_LENGTH)
    return {
        "known": True,
        "source": source,
        "model": recipe.model.name,
        "method": recipe.method,
        "loss": loss,
        "params": terms.params,
        "lora_params": terms.lora_params,
        "tokens_per_batch": batch * length,
        "gpu_gib": gpu_gib,
        "breakdown": breakdown,
        "allocated_gib": allocated,
        "reserved_gib": reserved,
        "peak_gib": peak,
        "fits": peak <= gpu_gib,
        "max_batch_size": max(0, max_batch),
        "max_length": max(0, max_len) if max_len >= 8 else 0,
        "cpu_offload_gib": terms.cpu_offload / GIB,
        "saved_values_per_token": terms.saved_values,
    }


def format_estimate(result: dict) -> str:
    """The estimate as a short markdown table for the UI."""
    if not result.get("known"):
        return f"**Memory estimate:** unknown shape for `{result['model']}` (point model.name at a local folder with config.json)."
    verdict = "fits" if result["fits"] else "does **not** fit"
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in result["breakdown"].items())
    room = f"largest batch that fits: {result['max_batch_size']}, largest max_length: {result['max_length']}"
    return (
        f"**Peak ≈ {result['peak_gib']:.2f} GiB** — {verdict} in {result['gpu_gib']:g} GiB  \n"
        f"{result['params'] / 1e6:,.0f}M params, {result['lora_params'] / 1e6:,.2f}M trainable; shapes from {result['source']}  \n"
        f"{room}\n\n"
        f"| part | GiB |\n|---|---|\n{rows}\n"
    )


# ---------------------------------------------------------------------------------------------
# GPUs
# ---------------------------------------------------------------------------------------------

# Total memory as the driver reports it (nvidia-smi's MiB / 1024), per card sold as "N GB".
GPUS: dict[str, float] = {
    "RTX 3060": 12.0,
    "RTX 3080": 10.0,
    "RTX 3090": 24.0,
    "RTX 4060": 8.0,
    "RTX 4070": 12.0,
    "RTX 4080": 16.0,
    "RTX 4090": 24.0,
    "RTX 5090": 32.0,
    "T4": 15.0,
    "V100-16GB": 16.0,
    "V100-32GB": 32.0,
    "L4": 22.5,
    "A10G": 22.5,
    "A10": 24.0,
    "A6000": 48.0,
    "L40S": 45.0,
    "A100-40GB": 40.0,
    "A100-80GB": 80.0,
    "H100": 79.6,
    "H100 80GB": 79.6,
    "H200": 140.4,
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("nvidia", "").replace("geforce", ""))


def parse_gpu(gpu: float | int | str) -> float:
    """GiB from a number, "24GB"/"24 GiB", or a GPU name from GPUS (case and punctuation ignored)."""
    if isinstance(gpu, bool):
        raise StudioError(f"not a GPU size: {gpu!r}", where="--gpu", fix="give GiB (24), a size (24GB) or a name (RTX 4090)")
    if isinstance(gpu, (int, float)):
        if not math.isfinite(gpu) or gpu <= 0:
            raise StudioError(f"GPU memory must be a positive number of GiB, got {gpu}", where="--gpu", fix="e.g. --gpu 24GB")
        return float(gpu)
    text = str(gpu).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(gib|gb|g)?", text, flags=re.IGNORECASE)
    if m:
        return parse_gpu(float(m.group(1)))
    key = _norm(text)
    table = {_norm(k): v for k, v in GPUS.items()}
    if key in table:
        return table[key]
    # "A100 80GB", "RTX 3060 12GB": a known name followed by its size
    for name, value in table.items():
        if key.startswith(name) or name.startswith(key):
            size = re.search(r"(\d+)gb$", key)
            return float(size.group(1)) if size and key.startswith(name) and not name.endswith("gb") else value
    raise StudioError(f"unknown GPU {text!r}", where="--gpu", fix=f"give its memory (e.g. 24GB) or one of: {', '.join(GPUS)}")


def detect_gpu_gib() -> float | None:
    """Memory free on the first visible CUDA GPU in GiB (what this run can have), or None without one.

    Free, not total: a GPU shared by a class or by other jobs may hold other processes' memory, and a run
    sized for the whole card would then run out of memory minutes into loading.
    """
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    # The free figure leaves out a CUDA context (this process's, or the probe's), which estimate() counts itself.
    return _free_bytes_on_first_gpu(torch) / GIB + CUDA_CONTEXT_GIB


def _free_bytes_on_first_gpu(torch) -> int:
    """Free bytes on GPU 0, asked in a short child process when this one has no CUDA context yet.

    Asking here would create one, holding about 0.5 GiB of GPU 0 for the rest of this process, and the
    launcher of a multi-GPU run lives as long as the run. If the child cannot answer, the GPU's total is used.
    """
    import subprocess
    import sys

    if torch.cuda.is_initialized():
        return torch.cuda.mem_get_info(0)[0]
    try:
        done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.mem_get_info(0)[0])"],
                              capture_output=True, text=True, timeout=120, check=True)
        return int(done.stdout.split()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return torch.cuda.get_device_properties(0).total_memory


# ---------------------------------------------------------------------------------------------
# Settings that fit
# ---------------------------------------------------------------------------------------------


def _shape_or_error(recipe: Recipe, model_config: dict | None) -> Shape:
    shape, _ = model_shape(recipe, model_config)
    if shape is None:
        raise StudioError(f"no shape known for model {recipe.model.name!r}", where="model.name", fix="point model.name at a local folder with config.json (or a .gguf file)")
    return shape


def _with_train(recipe: Recipe, **update) -> Recipe:
    return recipe.model_copy(update={"train": recipe.train.model_copy(update=update)})


def auto_fit(recipe: Recipe, gpu: float | str | None = None, model_config: dict | None = None) -> tuple[Recipe, dict]:
    """A recipe that fits `gpu` (detected when None): batch size, gradient accumulation, checkpointing, offload.

    Tried in order, keeping the first that fits: the recipe's own checkpointing setting, then gradient
    checkpointing, then also the input-embedding table on the CPU (untied tables only), then also the
    layer inputs offloaded to CPU. For each, the batch size is
    the largest divisor of the effective batch (batch_size x grad_accum) that fits and is no larger than
    the recipe's, and grad_accum = effective / batch_size, so the effective batch is kept exactly. A recipe
    that already fits is returned unchanged. Returns (recipe, info) with info["changes"] as
    {dotted key: (old, new)} and info["estimate"] the fitted estimate. Raises StudioError naming the
    setting to change when not even batch 1 with offload fits.
    """
    if gpu is None:
        gpu = detect_gpu_gib()
        if gpu is None:
            raise StudioError("train.auto_fit needs a CUDA GPU to fit to, and none is visible", where="train.auto_fit", fix="set train.auto_fit: false, or run on a GPU")
    gpu_gib = parse_gpu(gpu)
    shape = _shape_or_error(recipe, model_config)
    t = recipe.train
    effective = t.batch_size * t.grad_accum
    loss = loss_kind(recipe)
    # The recipe's own settings, then checkpointing, then the embedding table on the CPU (no cost in step
    # time for a frozen table; only untied tables move), then activation offload.
    emb = t.offload_embeddings
    ladder = [(t.gradient_checkpointing, emb, t.offload_activations)]
    steps = [(True, emb, t.offload_activations)]
    if not shape.tied:
        steps.append((True, True, t.offload_activations))
    steps.append((True, True if not shape.tied else emb, True))
    ladder += [step for step in steps if step not in ladder]
    for ckpt, emb_off, offload in ladder:
        trial = _with_train(recipe, gradient_checkpointing=ckpt, offload_embeddings=emb_off, offload_activations=offload)
        largest = _largest(lambda b, r=trial: _peak(r, shape, b, recipe.data.max_length, loss) <= gpu_gib, 1, t.batch_size)
        if largest < 1:
            continue
        batch = max(d for d in range(1, largest + 1) if effective % d == 0)
        fitted = _with_train(trial, batch_size=batch, grad_accum=effective // batch)
        changes = {f"train.{k}": (getattr(t, k), getattr(fitted.train, k)) for k in ("batch_size", "grad_accum", "gradient_checkpointing", "offload_embeddings", "offload_activations") if getattr(t, k) != getattr(fitted.train, k)}
        return fitted, {"changes": changes, "gpu_gib": gpu_gib, "effective_batch": effective, "estimate": estimate(fitted, gpu_gib, model_config)}
    best = _with_train(recipe, batch_size=1, grad_accum=effective, gradient_checkpointing=True, offload_embeddings=not shape.tied or t.offload_embeddings, offload_activations=True)
    result = estimate(best, gpu_gib, model_config)
    fix = []
    if result["max_length"] >= 8:
        fix.append(f"lower data.max_length to {result['max_length']} or less")
    if recipe.adapter_method != "qlora":
        fix.append("use method: qlora (4-bit base weights)")
    if not recipe.train.fused_loss:
        fix.append("set train.fused_loss: true")
    fix.append(f"use a GPU with at least {math.ceil(result['peak_gib'])} GiB")
    raise StudioError(
        f"{recipe.model.name} does not fit in {gpu_gib:g} GiB even at batch 1 with checkpointing and offload (needs ≈{result['peak_gib']:.1f} GiB)",
        where="data.max_length" if result["max_length"] >= 8 else "method" if recipe.adapter_method != "qlora" else "model.name",
        fix="; ".join(fix),
    )


def estimate_sharded(recipe: Recipe, gpu: float | str, gpus: int, model_config: dict | None = None) -> dict:
    """Per-GPU memory of sharded (FSDP) training on `gpus` GPUs, in the same form as `estimate`.

    Weights, adapters, their gradients and optimizer states are sharded over the GPUs; each GPU also holds
    two unsharded copies of the largest FSDP unit (one block, or the embedding/head) being all-gathered and
    prefetched (`breakdown["gathered"]`); activations and logits are per GPU and not sharded.
    """
    gpu_gib = parse_gpu(gpu)
    shape = _shape_or_error(recipe, model_config)
    terms = _terms(recipe, shape, recipe.train.batch_size, recipe.data.max_length, loss_kind(recipe))
    breakdown, allocated, reserved, peak = _sum(terms, gpus)
    return {"known": True, "model": recipe.model.name, "gpus": gpus, "gpu_gib": gpu_gib, "breakdown": breakdown, "allocated_gib": allocated, "reserved_gib": reserved, "peak_gib": peak, "fits": peak <= gpu_gib, "params": terms.params, "lora_params": terms.lora_params}


def gpus_needed(recipe: Recipe, gpu: float | str, model_config: dict | None = None, max_gpus: int = 4096) -> int:
    """The fewest GPUs of size `gpu` that a sharded (FSDP) run of `recipe` fits on; 1 when one GPU suffices.

    Raises StudioError when no number of GPUs helps: what is not sharded (activations, logits, the gathered
    units, the CUDA context) alone exceeds one GPU.
    """
    gpu_gib = parse_gpu(gpu)
    shape = _shape_or_error(recipe, model_config)
    terms = _terms(recipe, shape, recipe.train.batch_size, recipe.data.max_length, loss_kind(recipe))
    if _sum(terms, 1)[3] <= gpu_gib:
        return 1
    if _sum(terms, max_gpus)[3] > gpu_gib:
        floor = _sum(terms, max_gpus)[0]
        raise StudioError(
            f"{recipe.model.name} cannot fit {gpu_gib:g} GiB GPUs at any count: activations ({floor['activations']:.1f} GiB), logits and gathered layers are not sharded",
            where="train.batch_size / data.max_length",
            fix="lower train.batch_size or data.max_length, or set train.gradient_checkpointing: true",
        )
    low, high = 2, max_gpus
    while low < high:
        mid = (low + high) // 2
        if _sum(terms, mid)[3] <= gpu_gib:
            high = mid
        else:
            low = mid + 1
    return low


def shape_dict(shape: Shape) -> dict:
    """The shape as plain data (for --json and reports)."""
    return asdict(shape)


def check_fits(recipe: Recipe, gpu: float | str, model_config: dict | None = None) -> dict | None:
    """The estimator's verdict before loading anything: None when the model's shape is unknown, else
    the estimate; raises StudioError naming the settings to change when the run cannot fit `gpu`."""
    from .errors import StudioError

    if model_shape(recipe, model_config)[0] is None:
        return None
    result = estimate(recipe, gpu, model_config)
    if result["fits"]:
        return result
    try:
        fitted, info = auto_fit(recipe, gpu, model_config)
        settings = " ".join(f"--set {key}={new}" for key, (_old, new) in info.get("changes", {}).items())
        fix = f"set train.auto_fit: true, or use {settings}" if settings else "set train.auto_fit: true"
    except StudioError as exc:
        fix = exc.fix or "use a smaller model, method qlora, or a shorter data.max_length"
    raise StudioError(
        f"this run needs about {result['peak_gib']:.1f} GiB of GPU memory but the GPU has {result['gpu_gib']:.1f} GiB free",
        where=f"train.batch_size={recipe.train.batch_size}, data.max_length={recipe.data.max_length}, method={recipe.method}",
        fix=fix,
    )


def check_fits_sharded(recipe: Recipe, gpu: float | str, model_config: dict | None = None) -> dict | None:
    """The estimator's verdict for an FSDP run before loading: each of the recipe's `world_size` GPUs must
    hold its share; None when the model's shape is unknown; raises StudioError with the GPU count that fits."""
    from .errors import StudioError

    if model_shape(recipe, model_config)[0] is None:
        return None
    gpus = recipe.distributed.world_size
    result = estimate_sharded(recipe, gpu, gpus, model_config)
    if result["fits"]:
        return result
    try:
        needed = gpus_needed(recipe, gpu, model_config)
        fix = f"train on {needed} GPUs of this size (--gpus {needed}, or more machines), or lower train.batch_size / data.max_length"
    except StudioError as exc:
        fix = exc.fix
    raise StudioError(
        f"this sharded run needs about {result['peak_gib']:.1f} GiB on each of its {gpus} GPUs but each has {result['gpu_gib']:.1f} GiB free",
        where=f"distributed.num_processes={recipe.distributed.num_processes}, num_machines={recipe.distributed.num_machines}, train.batch_size={recipe.train.batch_size}, data.max_length={recipe.data.max_length}",
        fix=fix,
    )
