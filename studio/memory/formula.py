"""Peak GPU memory of a recipe, from the model's shape alone (no download, no GPU): the estimate formula.

`estimate(recipe, gpu)` adds up what a LoRA/QLoRA training step keeps on the GPU at its peak. Sizes are
bytes, reported in GiB. T = batch_size x max_length tokens per micro-batch (the worst case: a padded
batch at the length limit; with `data.packing` every row is full, so it is also the typical case).
L layers, h hidden, q = heads x head_dim, kv = kv_heads x head_dim, I the MLP width, V the vocabulary,
b = bytes of the compute dtype (bf16: 2).

    weights      qlora: every adapted-or-not linear of the blocks in NF4 (blocksize 64), per layer of n
                 weights: ceil(n/2) packed bytes + ceil(n/64) block scales (uint8 with double quant, else
                 fp32) + with double quant ceil(n/64/256) fp32 second-level scales, one fp32 offset and
                 the 256-entry fp32 code (exactly the QuantLinear buffers of `studio.modeling.loading.quantize_onto`,
                 byte-identical to bitsandbytes' Linear4bit). Embeddings, lm_head, norms and biases stay
                 16-bit (model dtype). lora/dora: every parameter in the model dtype. With
                 train.offload_embeddings an untied input embedding (V x h x b) is in CPU memory instead.
    lora         adapter parameters x 4 (fp32), or x 2 when the adapter trains in bf16 (lora.dtype; auto
                 = bf16 for QLoRA with bf16 compute, which "auto" compute is on every GPU but the
                 pre-Ampere ones (T4, V100: fp16 compute, fp32 adapter); gradients and optimizer halve
                 too); parameters =
                 sum over adapted linears of r x (in + out) (+ out magnitudes for DoRA)
    gradients    adapter parameters x 4 (fp32)
    optimizer    adapter parameters x 8 (AdamW's two fp32 moments; `optim="adamw_torch"` in studio.training.sft)
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
                 `studio_kernels.ops.fused_ce`): one C x (V + h) x b chunk buffer (C = chunk_size_for(V, h), 256 MiB)
                 + T x h x 2b (the contiguous hidden rows and dX) + T x 4 (per-token losses).
    generation   grpo only: sampling the completions happens between optimizer steps, when no gradients,
                 activations or logits of a training step are alive, so it adds only what it needs beyond
                 them: max(0, G - gradients - activations - logits), G = S x P' x kv x L x 2 x b (the KV
                 cache of S = grpo.generation_batch_size sequences of P' = max_length + max_completion_length
                 tokens; MLA models cache full per-head keys and values) + S x max_length x (4h + 3I) x b (one
                 layer's prefill values) + S x V x 8 (one decode step's fp32 logits and probabilities). The
                 training micro-batch of grpo is batch_size rows of max_length + max_completion_length tokens.
                 With a LoRA adapter the KL reference (grpo.beta > 0) is the base with the adapter switched off:
                 a no-grad forward pass, no second copy of the weights, so beta adds no term.
    vision_tower vision-language models: the tower's and projector's parameters x the model dtype's bytes,
                 under qlora too (the studio quantizes the language model only); with lora.vision their
                 adapters join the lora, gradients and optimizer terms.
    image_activations  what one image per row costs beyond the language sequence (its image tokens are
                 inside max_length, so T above already counts them): the tower's saved values when
                 lora.vision trains it, Llama 3.2 Vision's cross-attention states, and the frozen tower's
                 forward working set where it exceeds the language model's activations and logits
                 (it ends before they are made). Formulas: studio.memory.vision_shapes.vision_bytes.
    overhead     CUDA_CONTEXT_GIB (CUDA context, cuBLAS workspace; not in torch.cuda.max_memory_allocated)
                 + FRAGMENTATION x allocated (the caching allocator's reserved-but-unused blocks)

`allocated_gib` (what torch.cuda.max_memory_allocated reports) is the sum of all but overhead;
`reserved_gib` (torch.cuda.max_memory_reserved) adds fragmentation; `peak_gib` (what the GPU must have
free, nvidia-smi's number) adds the CUDA context, and is what `fits` compares to the GPU.

Constants, none tuned to a published measurement: CUDA_CONTEXT_GIB = 0.5 (see studio.memory.gpus);
FRAGMENTATION = 0.05 is an assumed allocator slack. benchmarks/bench_memory.py measures both against real runs. The estimate is an
upper bound for typical data: rows shorter than max_length use less.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.config.schema import Recipe
from studio.memory.gpus import CUDA_CONTEXT_GIB, DEFAULT_GPU, GIB, computes_bf16, parse_gpu
from studio.memory.shapes import Shape, adapted_names, layer_groups, linear_shapes, model_shape, nf4_bytes
from studio.memory.vision_shapes import IMAGES_PER_ROW, VisionBytes, vision_bytes

FRAGMENTATION = 0.05
ADAPTER_BYTES = 4  # fp32 adapter weights
GRAD_BYTES = 4  # fp32 adapter gradients
ADAM_BYTES = 8  # AdamW exp_avg + exp_avg_sq, fp32
TRL_TOKEN_TILE = 4096  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
TRL_VOCAB_TILE = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE
FUSED_BUDGET_BYTES = 256 * 2**20  # studio_kernels.ops.fused_ce.DEFAULT_BUDGET_BYTES
OFFLOAD_IN_FLIGHT = 5  # trl get_act_offloading_ctx_manager(max_fwd_stash_size=5)
MAX_BATCH = 4096  # TrainSpec.batch_size's bound
MAX_LENGTH = 1_048_576  # DataSpec.max_length's bound

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # auto = bf16 (or fp16) on a GPU


@dataclass
class Terms:
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
    generation: float = 0.0  # grpo: the peak of sampling completions (KV cache, prefill, decode logits)
    vision: VisionBytes | None = None  # a vision-language model's tower: weights, adapters, image activations


def terms_for(recipe: Recipe, shape: Shape, batch: int, length: int, loss: str, bf16: bool = True) -> Terms:
    """Bytes per term of one micro-batch of `batch` rows of `length` tokens (see the module docstring); `bf16`:
    whether \"auto\" compute is bfloat16 on the GPU (False on pre-Ampere cards)."""
    h, V = shape.hidden, shape.vocab
    model_b = _DTYPE_BYTES[recipe.model.dtype]
    compute_b = _DTYPE_BYTES[recipe.quant.compute_dtype if recipe.adapter_method == "qlora" else recipe.model.dtype]
    targets = adapted_names(recipe)
    r = recipe.lora.rank

    linear_params = 0
    quant_bytes = 0
    lora_params = 0
    largest_block = 0.0
    for moe, n_layers in layer_groups(shape):
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

    # lora.dtype auto trains a QLoRA adapter in bf16 when the compute dtype is bf16 (studio.training.arguments.adapter_dtype):
    # weights, gradients and AdamW moments all take half the fp32 bytes.
    auto_compute = "bfloat16" if bf16 else "float16"
    compute_name = auto_compute if recipe.quant.compute_dtype == "auto" else recipe.quant.compute_dtype
    adapter_scale = 0.5 if recipe.adapter_dtype_for(compute_name) == "bfloat16" else 1.0

    # Activations: values per token per layer (see the docstring).
    tokens = batch * length
    attn_vals = 2 * q_dim + 2 * kv_dim
    if shape.kv_lora_rank:
        attn_vals = shape.q_lora_rank + shape.kv_lora_rank + shape.heads * (2 * (shape.qk_nope_dim + shape.qk_rope_dim) + 2 * shape.v_head_dim)
    per_layer_max = 0
    stored = 0
    for moe, n_layers in layer_groups(shape):
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

    # The vision tower of a vision-language model (studio.memory.vision_shapes): 16-bit weights, its adapters
    # with lora.vision, and the image activations, kept apart so the breakdown shows them.
    vision = vision_bytes(recipe, shape, batch, compute_b, model_b) if shape.vision else None
    if vision:
        lora_params += vision.lora_params

    return Terms(
        generation=generation_bytes(recipe, shape, compute_b) if recipe.method == "grpo" else 0.0,
        vision=vision,
        weights=weights,
        lora=lora_params * ADAPTER_BYTES * adapter_scale,
        gradients=lora_params * GRAD_BYTES * adapter_scale,
        optimizer=lora_params * ADAM_BYTES * adapter_scale,
        activations=activations,
        logits=logits,
        cpu_offload=cpu + embedding_cpu,
        params=int(linear_params + other + (vision.params if vision else 0)),
        lora_params=int(lora_params),
        block_weights=largest_block,
        saved_values=int(values + 2 * h),
    )


def generation_bytes(recipe: Recipe, shape: Shape, b: int) -> float:
    """Bytes alive while GRPO samples its completions (see `generation` in the module docstring)."""
    g, t = recipe.grpo, recipe.train
    seqs = g.generation_batch_size or t.batch_size * t.grad_accum
    tokens = recipe.data.max_length + g.max_completion_length
    if shape.kv_lora_rank:
        per_token = shape.heads * (shape.qk_nope_dim + shape.qk_rope_dim + shape.v_head_dim)
    else:
        per_token = 2 * shape.kv_heads * shape.head_dim
    kv = seqs * tokens * per_token * shape.layers * b
    width = max(shape.intermediate, (shape.experts_per_tok + shape.shared_experts) * shape.moe_intermediate)
    prefill = seqs * recipe.data.max_length * (4 * shape.hidden + 3 * width) * b
    return float(kv + prefill + seqs * shape.vocab * 8)


def sequence_tokens(recipe: Recipe) -> int:
    """Tokens per training row: data.max_length, plus grpo.max_completion_length for grpo (prompt and completion)."""
    return recipe.data.max_length + (recipe.grpo.max_completion_length if recipe.method == "grpo" else 0)


def fused_chunk_tokens(vocab: int, hidden: int, dtype_bytes: int = 2) -> int:
    """Tokens per chunk of the studio's fused loss (mirrors studio_kernels.ops.fused_ce.chunk_size_for)."""
    rows = FUSED_BUDGET_BYTES // ((vocab + hidden) * dtype_bytes)
    if rows >= 64:
        return int(rows // 64 * 64)
    return 1 << max(0, int(rows).bit_length() - 1)


def loss_kind(recipe: Recipe) -> str:
    """How training computes the loss: the studio's fused kernel, or trl's chunked LM head."""
    return "fused" if recipe.train.fused_loss else "chunked"


def totals(terms: Terms, gpus: int = 1) -> tuple[dict, float, float, float]:
    """Breakdown in GiB (sharded terms divided over `gpus`), allocated, reserved and peak GiB."""
    shard = max(1, gpus)
    parts = {"weights": terms.weights / shard / GIB}
    vision = terms.vision
    if vision:
        parts["vision_tower"] = vision.weights / shard / GIB
    parts.update(lora=terms.lora / shard / GIB, gradients=terms.gradients / shard / GIB, optimizer=terms.optimizer / shard / GIB,
                 activations=terms.activations / GIB)
    if vision:  # the frozen tower's working set ends before the language model's activations and logits exist
        parts["image_activations"] = (vision.saved + max(0.0, vision.transient - terms.activations - terms.logits)) / GIB
    parts["logits"] = terms.logits / GIB
    if gpus > 1:  # FSDP all-gathers one unit while prefetching the next: two unsharded copies
        parts["gathered"] = 2 * terms.block_weights / GIB
    if terms.generation:  # sampling and a training step never overlap: only the excess over the step counts
        parts["generation"] = max(0.0, terms.generation - terms.gradients - terms.activations - terms.logits) / GIB
    allocated = sum(parts.values())
    parts["overhead"] = CUDA_CONTEXT_GIB + FRAGMENTATION * allocated
    return parts, allocated, allocated * (1 + FRAGMENTATION), allocated + parts["overhead"]


def peak_of(recipe: Recipe, shape: Shape, batch: int, length: int, loss: str, gpus: int = 1, bf16: bool = True) -> float:
    """Peak GiB of one setting (what `fits` compares to the GPU)."""
    return totals(terms_for(recipe, shape, batch, length, loss, bf16), gpus)[3]


def largest_fitting(fits, low: int, high: int) -> int:
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


def estimate(recipe: Recipe, gpu: float | str = DEFAULT_GPU, model_config: dict | None = None, loss: str | None = None, bf16: bool | None = None) -> dict:
    """Peak GPU memory of training `recipe` on one GPU, broken down, and what fits.

    `gpu` is GiB as a number, "8GB"/"24GB"/"80GB", or a GPU name ("RTX 4090", "A100-80GB", see GPUS).
    `model_config` is a Hugging Face config.json as a dict; without it the shape comes from the recipe's
    local model directory or GGUF file, or the known-shapes table (never a download). `loss` overrides
    how the loss is computed ("full", "chunked", "fused"; default: what training runs for the recipe).
    `bf16`: whether "auto" precision computes in bfloat16 there (default: from the GPU's name: False for
    the pre-Ampere cards, which train fp16 with an fp32 adapter; True for a size alone).

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
    bf16 = computes_bf16(gpu) if bf16 is None else bf16
    batch, length = recipe.train.batch_size, sequence_tokens(recipe)
    extra = length - recipe.data.max_length  # grpo's completion tokens: max_length below is the prompt's
    terms = terms_for(recipe, shape, batch, length, loss, bf16)
    breakdown, allocated, reserved, peak = totals(terms)
    max_batch = largest_fitting(lambda b: peak_of(recipe, shape, b, length, loss, bf16=bf16) <= gpu_gib, 1, MAX_BATCH)
    max_len = largest_fitting(lambda n: peak_of(recipe, shape, batch, n + extra, loss, bf16=bf16) <= gpu_gib, 8, MAX_LENGTH)
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
        "bf16": bf16,
        **({"vision": vision_summary(recipe, terms.vision)} if terms.vision else {}),
    }


def vision_summary(recipe: Recipe, vision: VisionBytes) -> dict:
    """What the estimate assumed of the images and what one costs, for the shells to show next to the breakdown."""
    cost = vision.cost
    return {"tower_params": vision.params, "trained": recipe.lora.vision, "images_per_row": IMAGES_PER_ROW,
            "image_max_pixels": recipe.data.image_max_pixels, "tokens_per_image": cost.tokens, "tower_tokens_per_image": cost.tower_tokens,
            "tiles_per_image": cost.tiles, "cross_attention_tokens": cost.cross_tokens, "max_length": recipe.data.max_length,
            "fits_max_length": cost.tokens * IMAGES_PER_ROW < recipe.data.max_length}
