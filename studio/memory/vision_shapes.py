"""The image side of a vision-language model, for the memory estimate: its vision tower and projector, what one
image costs in tokens and tower positions, and the bytes that adds to a training step.

A vision-language model is a language model (`studio.memory.shapes.Shape`) plus a vision tower (a ViT) and a
projector into the language model's width. Five kinds of image plumbing decide what one image costs:

    merge    Qwen2-VL / Qwen2.5-VL: the processor resizes the image to multiples of 28 px within its pixel bounds;
             the tower runs on its 14 px patches and the projector merges 2 x 2 of them into one token, so the
             sequence gets about pixels / (28 x 28) tokens: both grow with data.image_max_pixels.
    pooled   Gemma 3: every image is resized to 896 x 896 (4096 patches of 14 px) and pooled to 256 tokens, whatever
             its size (pan-and-scan, off by default, is not modelled).
    tiles    Idefics3 / SmolVLM: the processor rescales the longest edge to its own size (2048 px for SmolVLM-256M and
             500M), cuts 512 px tiles and adds the whole image as one more, global, tile; each tile is 1024 patches
             of 16 px, pixel-shuffled by scale_factor 4 to 64 tokens. The processor upscales small images too, so
             data.image_max_pixels does not change the count; a square image is the worst case (4 x 4 + 1 = 17 tiles,
             1088 tokens).
    cross    Llama 3.2 Vision (Mllama): an image is up to 4 tiles of 560 px, each 40 x 40 patches of 14 px + a class
             token = 1601 positions, and the processor pads every image to 4 tiles. The language sequence holds one
             <|image|> token; the 4 x 1601 image states are what its cross-attention layers attend to.
    fixed    other LLaVA-style models: one image_size x image_size input, (image_size / patch)^2 tokens.

The estimate assumes IMAGES_PER_ROW image per row at the recipe's data.image_max_pixels (or bigger): a worst
case for the pixels, and an overstatement for rows without images (a text-only run of a multimodal model).
Nothing here imports torch or transformers: `studio recipes` estimates every shipped recipe without them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

IMAGES_PER_ROW = 1  # the estimate's assumption: one image per training row
OFFLOAD_IN_FLIGHT = 5  # as studio.memory.formula: trl's max_fwd_stash_size for offloaded activations


@dataclass(frozen=True)
class VisionShape:
    """What the estimate needs of a vision tower, its projector and its processor. Fields a kind does not use are 0."""

    kind: str  # merge, pooled, tiles, cross or fixed (see the module docstring)
    hidden: int
    layers: int  # every encoder layer (Mllama: the local and the global ones)
    intermediate: int
    patch: int
    image_size: int  # the fixed input or tile side in pixels (0 for merge: the image keeps its own size)
    out_hidden: int  # the projector's output: the language model's width
    gated: bool = False  # Qwen2.5-VL's tower MLP is gated (gate/up/down), SigLIP's and Mllama's are not (fc1/fc2)
    rms_norm: bool = False  # Qwen2.5-VL's norms have no bias
    merge: int = 1  # merge: spatial_merge_size (2 x 2 patches per token); tiles: scale_factor (4 x 4 per token)
    tokens_per_image: int = 0  # pooled: mm_tokens_per_image
    longest_edge: int = 0  # tiles: the processor's size.longest_edge (0: no splitting, one tile)
    min_pixels: int = 0  # merge: the processor's pixel bounds
    max_pixels: int = 0
    max_tiles: int = 1  # cross: max_num_tiles
    global_layers: int = 0  # cross: num_global_layers (gated, counted in layers)
    output_dim: int = 0  # cross: vision_output_dim, the projector's input
    cross_layers: int = 0  # cross: the language model's cross-attention layers
    params: int | None = None  # exact tower + projector count from the checkpoint, when known


@dataclass(frozen=True)
class ImageCost:
    """What one image costs: tokens in the language sequence (inside data.max_length), positions the tower runs on,
    and (Mllama) the image states each cross-attention layer attends to."""

    tokens: int
    tower_tokens: int
    tiles: int = 1
    cross_tokens: int = 0


# The shipped vision recipes' towers (from each model's config.json and preprocessor_config.json). params is the
# checkpoint's tower + projector count: the total minus the language model's.
KNOWN_VISION: dict[str, VisionShape] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": VisionShape(
        "merge", hidden=1280, layers=32, intermediate=3420, patch=14, image_size=0, out_hidden=2048, gated=True, rms_norm=True,
        merge=2, min_pixels=56 * 56, max_pixels=12_845_056, params=668_684_288),
    "google/gemma-3-4b-it": VisionShape(
        "pooled", hidden=1152, layers=27, intermediate=4304, patch=14, image_size=896, out_hidden=2560, tokens_per_image=256,
        params=419_816_304),
    "HuggingFaceTB/SmolVLM-256M-Instruct": VisionShape(
        "tiles", hidden=768, layers=12, intermediate=3072, patch=16, image_size=512, out_hidden=576, merge=4, longest_edge=2048,
        params=93_510_912),
    "HuggingFaceTB/SmolVLM-500M-Instruct": VisionShape(
        "tiles", hidden=768, layers=12, intermediate=3072, patch=16, image_size=512, out_hidden=960, merge=4, longest_edge=2048,
        params=98_229_504),
    "meta-llama/Llama-3.2-11B-Vision-Instruct": VisionShape(
        "cross", hidden=1280, layers=40, intermediate=5120, patch=14, image_size=560, out_hidden=4096, max_tiles=4,
        global_layers=8, output_dim=7680, cross_layers=8, params=895_028_755),
}


def vision_shape_from_config(config: dict, folder: Path | None = None) -> VisionShape | None:
    """The tower's shape from a Hugging Face config.json (None without a vision_config), with the image sizes of the
    folder's preprocessor_config.json when there is one (else the processors' defaults)."""
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        return None
    text = config.get("text_config") or config
    out = text.get("hidden_size") or config.get("hidden_size") or 0
    kind = config.get("model_type", "")
    pre = _preprocessor(folder)
    h = vision.get("hidden_size") or vision.get("embed_dim") or 0
    layers = vision.get("num_hidden_layers") or vision.get("depth") or 0
    patch, size = vision.get("patch_size", 14), vision.get("image_size", 0)
    if kind.startswith(("qwen2_vl", "qwen2_5_vl")) or "spatial_merge_size" in vision:
        legacy = "embed_dim" in vision  # Qwen2-VL: embed_dim is the width, hidden_size the projector's output
        h = vision.get("embed_dim") or h
        bounds = pre.get("size") if isinstance(pre.get("size"), dict) else {}
        return VisionShape(
            "merge", hidden=h, layers=layers, intermediate=int(h * vision.get("mlp_ratio", 4)) if legacy else vision["intermediate_size"],
            patch=patch, image_size=0, out_hidden=(vision.get("hidden_size") if legacy else vision.get("out_hidden_size")) or out,
            gated=not legacy, rms_norm=not legacy, merge=vision.get("spatial_merge_size", 2),
            min_pixels=pre.get("min_pixels") or bounds.get("shortest_edge") or 56 * 56,
            max_pixels=pre.get("max_pixels") or bounds.get("longest_edge") or 12_845_056)
    common = dict(hidden=h, layers=layers, intermediate=vision.get("intermediate_size") or 4 * h, patch=patch, image_size=size, out_hidden=out)
    if kind == "gemma3":
        return VisionShape("pooled", tokens_per_image=config.get("mm_tokens_per_image", 256), **common)
    if kind in ("idefics3", "smolvlm"):
        tile = (pre.get("max_image_size") or {}).get("longest_edge", size)
        splitting = pre.get("do_image_splitting", True)
        edge = (pre.get("size") or {}).get("longest_edge", 4 * tile) if splitting else 0
        return VisionShape("tiles", merge=config.get("scale_factor", 2), longest_edge=edge, **{**common, "image_size": tile})
    if kind == "mllama":
        local, extra = vision.get("num_hidden_layers", 32), vision.get("num_global_layers", 8)
        return VisionShape("cross", max_tiles=vision.get("max_num_tiles", 4), global_layers=extra, output_dim=vision.get("vision_output_dim", 7680),
                           cross_layers=len(text.get("cross_attention_layers") or ()), **{**common, "layers": local + extra})
    return VisionShape("fixed", **common)


def _preprocessor(folder: Path | None) -> dict:
    # The image processor's sizes live next to config.json: in preprocessor_config.json (the Hub's checkpoints), or
    # under "image_processor" in processor_config.json (what transformers 5 saves). A bare config has neither.
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        try:
            data = json.loads((Path(folder) / name).read_text(encoding="utf-8")) if folder is not None else None
        except (OSError, ValueError):
            continue
        data = data.get(key) if key and isinstance(data, dict) else data
        if isinstance(data, dict):
            return data
    return {}


def image_cost(v: VisionShape, max_pixels: int) -> ImageCost:
    """What one image of `max_pixels` pixels (the recipe's data.image_max_pixels, a square image: the worst case)
    costs once the model's processor has resized it; see the module docstring for each kind."""
    if v.kind == "merge":
        factor = v.patch * v.merge
        side = math.isqrt(min(max_pixels, v.max_pixels) if v.max_pixels else max_pixels)
        side = _smart_resize(side, factor, v.min_pixels, v.max_pixels or side * side)
        tokens = (side // factor) ** 2
        return ImageCost(tokens=tokens, tower_tokens=tokens * v.merge**2)
    patches = (v.image_size // v.patch) ** 2
    if v.kind == "pooled":
        return ImageCost(tokens=v.tokens_per_image, tower_tokens=patches)
    if v.kind == "tiles":
        tiles = math.ceil(v.longest_edge / v.image_size) ** 2 + 1 if v.longest_edge > v.image_size else 1
        return ImageCost(tokens=tiles * patches // v.merge**2, tower_tokens=tiles * patches, tiles=tiles)
    if v.kind == "cross":
        positions = patches + 1  # + the class token
        padded = positions + (-positions) % 8  # the tower pads each tile's positions to a multiple of 8
        return ImageCost(tokens=1, tower_tokens=v.max_tiles * padded, tiles=v.max_tiles, cross_tokens=v.max_tiles * positions)
    return ImageCost(tokens=patches, tower_tokens=patches)


def _smart_resize(side: int, factor: int, min_pixels: int, max_pixels: int) -> int:
    # Qwen2-VL's smart_resize for a square image: the nearest multiple of `factor`, kept within the pixel bounds.
    new = max(factor, round(side / factor) * factor)
    if new * new > max_pixels:
        new = max(factor, math.floor(side / math.sqrt(side * side / max_pixels) / factor) * factor)
    elif new * new < min_pixels:
        new = math.ceil(side * math.sqrt(min_pixels / (side * side)) / factor) * factor
    return new


def vision_linears(v: VisionShape) -> list[tuple[str, int, int, int, bool]]:
    """(module name, in, out, count, has bias) of the tower's linear layers (count = layers) and the projector's
    (count 1), named as in transformers, so lora.targets selects them as peft would with lora.vision."""
    h, inter, n = v.hidden, v.intermediate, v.layers
    if v.kind == "merge":
        attn = [("qkv", h, 3 * h, n, True), ("proj", h, h, n, True)]
    else:
        biased = v.kind != "cross"  # Mllama's tower attention has no biases
        attn = [(name, h, h, n, biased) for name in ("q_proj", "k_proj", "v_proj", "o_proj" if v.kind == "cross" else "out_proj")]
    if v.gated:
        mlp = [("gate_proj", h, inter, n, True), ("up_proj", h, inter, n, True), ("down_proj", inter, h, n, True)]
    else:
        mlp = [("fc1", h, inter, n, True), ("fc2", inter, h, n, True)]
    merged = h * v.merge**2
    projector = {
        "merge": [("0", merged, merged, 1, True), ("2", merged, v.out_hidden, 1, True)],  # the merger's mlp.0 and mlp.2
        "pooled": [],  # Gemma 3 projects with a bare weight matrix, not a linear layer: no adapter goes there
        "tiles": [("proj", merged, v.out_hidden, 1, False)],
        "cross": [("multi_modal_projector", v.output_dim, v.out_hidden, 1, True)],
        "fixed": [("linear_1", h, v.out_hidden, 1, True), ("linear_2", v.out_hidden, v.out_hidden, 1, True)],
    }[v.kind]
    return attn + mlp + projector


def vision_params(v: VisionShape) -> int:
    """Parameters of the tower and the projector: the checkpoint's count when known, else from the shape (exact for
    the SigLIP towers of Gemma 3 and Idefics3, Qwen2.5-VL's and Mllama's; close for the others)."""
    if v.params:
        return v.params
    h, p = v.hidden, v.patch
    linear = sum(count * (i * o + (o if bias else 0)) for _, i, o, count, bias in vision_linears(v))
    norm = h if v.rms_norm else 2 * h
    patches = (v.image_size // p) ** 2
    if v.kind == "merge":
        # A Conv3d over 2 frames without bias; rotary positions carry no weights; two norms a block, the merger's ln_q.
        return linear + 3 * 2 * p * p * h + (2 * v.layers + 1) * norm
    if v.kind == "cross":
        ratios = sum(1 for w in range(1, v.max_tiles + 1) for t in range(1, v.max_tiles + 1) if w * t <= v.max_tiles)
        rows = (ratios + 1) * v.max_tiles  # the aspect-ratio embeddings' rows: one per supported ratio + padding, per tile
        positions = (patches + 1) * h
        embed = 3 * p * p * h + h + 1 + positions + rows * positions + 2 * (rows * h + 1)  # conv, class, gated positions, tile positions
        return linear + embed + (2 * v.layers + 2) * norm + 2 * v.global_layers  # + layernorm_pre/post, two gates a global layer
    embed = 3 * p * p * h + h + patches * h  # patch conv with bias, learned positions
    pooled = h * v.out_hidden + h if v.kind == "pooled" else 0  # Gemma 3's projection matrix and soft-embedding norm
    return linear + embed + (2 * v.layers + 1) * norm + pooled


@dataclass(frozen=True)
class VisionBytes:
    """The image side of one micro-batch: tower weights, adapter parameters there, and activation bytes (saved for
    backward, and the frozen tower's forward working set)."""

    params: int
    weights: float
    lora_params: int
    saved: float
    transient: float
    cost: ImageCost


def vision_bytes(recipe, shape, batch: int, compute_b: int, model_b: int) -> VisionBytes:
    """Bytes the vision tower adds to a training step of `batch` rows of `recipe` on the language model `shape`.

    N = batch x IMAGES_PER_ROW x tower positions per image (image_cost); h, I the tower's width and MLP width, L its
    layers, b the compute dtype's bytes.

        weights    tower + projector parameters x the model dtype's bytes, for qlora too: the studio keeps them
                   16-bit (only the language model's linear layers are quantized, studio.modeling.vision).
        lora       with lora.vision: r x (in + out) per adapted linear of the tower and projector (+ out for DoRA).
        saved      with lora.vision, values kept for backward as in the language model: A = 4h norms + 4h attention
                   (q, k, v, output) + 4I gated / 2I plain MLP + r per adapted linear; N x L x A, or with gradient
                   checkpointing N x (L x h + A) (offload: N x (5h + A)), + N x (2h + 2I) gradients in flight.
                   Frozen (the default) nothing: no tensor in the tower needs a gradient, so autograd keeps none.
                   Mllama adds its cross-attention: C = batch x 4 x 1601 image states of the language model's width,
                   and per cross-attention layer (one, recomputed, with checkpointing) keys before and after their
                   norm and values, 3 x kv, + r per adapted k_proj / v_proj.
        transient  the frozen tower's forward working set, N x (2h + max(4h, 2I or 3I gated)) x b (Mllama also keeps
                   its intermediate layers' states, N x vision_output_dim). It ends before the language model runs,
                   so the formula counts only what it needs beyond the language model's activations and logits.
    """
    v = shape.vision
    cost = image_cost(v, recipe.data.image_max_pixels)
    targets = None if recipe.lora.targets == "all-linear" else set(recipe.lora.targets)
    r, t = recipe.lora.rank, recipe.train
    linears = [(name, i, o, count) for name, i, o, count, _ in vision_linears(v) if targets is None or name in targets]
    dora = recipe.adapter_method == "dora"
    lora_params = sum(count * (r * (i + o) + (o if dora else 0)) for name, i, o, count in linears) if recipe.lora.vision else 0
    tokens = batch * IMAGES_PER_ROW * cost.tower_tokens
    h, inter = v.hidden, v.intermediate
    if recipe.lora.vision:
        adapters = sum(r + (i if recipe.lora.dropout > 0 else 0) for name, i, o, count in linears if count == v.layers)
        a = 8 * h + (4 if v.gated else 2) * inter + adapters
        if t.gradient_checkpointing:
            values = (OFFLOAD_IN_FLIGHT if t.offload_activations else v.layers) * h + a
        else:
            values = 2 * a if t.offload_activations else v.layers * a
        saved, transient = tokens * (values + 2 * h + 2 * inter), 0
    else:
        saved, transient = 0, tokens * (2 * h + max(4 * h, (3 if v.gated else 2) * inter))
    if v.kind == "cross":
        states = batch * IMAGES_PER_ROW * cost.cross_tokens
        kv = shape.kv_heads * shape.head_dim
        per_layer = 3 * kv + sum(r for name in ("k_proj", "v_proj") if targets is None or name in targets)
        saved += states * (shape.hidden + (1 if t.gradient_checkpointing else v.cross_layers) * per_layer)
        transient += tokens * v.output_dim
    params = vision_params(v)
    return VisionBytes(params=params, weights=float(params * model_b), lora_params=int(lora_params), saved=float(saved * compute_b),
                       transient=float(transient * compute_b), cost=cost)
