"""The vision projector GGUF ("mmproj") that llama.cpp's multimodal loader (tools/mtmd, clip.cpp) reads beside the text GGUF.

A merged vision-language run exports as two files: the language model as an ordinary text GGUF (studio.export.gguf)
and this file, which holds the vision tower and the projector that turns its patch features into the language
model's input embeddings:

    llama-mtmd-cli -m run-f16.gguf --mmproj mmproj-run-f16.gguf      (llama-server takes the same --mmproj)

Supported architectures (transformers model_type -> llama.cpp's clip.projector_type), both a SigLIP-style tower:

- gemma3 -> "gemma3": patch features average-pooled to mm_tokens_per_image, then an RMSNorm (mm.soft_emb_norm) and a
  matrix (mm.input_projection) into the text width;
- idefics3 (SmolVLM), smolvlm -> "idefics3": patch features pixel-shuffled by scale_factor, then one linear layer
  (mm.model.fc).

Anything else (mllama, qwen2_vl, llava, ...) is refused by `vision_plan` before any merging or writing.

What goes in the file, and why:

- metadata under llama.cpp's names (gguf.Keys.Clip / Keys.ClipVision): general.architecture "clip", general.type
  "mmproj" (how `ollama create` tells a projector from a model), clip.has_vision_encoder, clip.projector_type, the
  tower's shape (image and patch size, width, feed-forward width, blocks, heads, layer-norm epsilon), the image
  processor's mean and std, projection_dim (the text model's width), clip.use_gelu (SigLIP's tanh GELU, which is
  ggml's GELU), and clip.vision.projector.scale_factor: the pooling kernel for gemma3 (written always, so a tower whose
  patches per side are not 4x the tokens per side still pools right), the pixel-shuffle factor for idefics3 (plus
  preproc_image_size, the processor's longest edge);
- tensors renamed with gguf-py's own map for MODEL_ARCH.MMPROJ (`...encoder.layers.3.self_attn.q_proj` ->
  `v.blk.3.attn_q`). That map knows the original checkpoints' names, so transformers' in-memory names are first
  written back into that form (Gemma 3: `model.vision_tower.X` -> `vision_tower.vision_model.X`, the parameter
  `mm_input_projection_weight` -> `mm_input_projection.weight`);
- one value change: Gemma's RMSNorm computes x * (1 + w) and clip.cpp computes x * w, so mm.soft_emb_norm is
  written as w + 1 (the SigLIP LayerNorms are standard and written as they are). Shapes are kept: the patch
  embedding stays a 4-D conv kernel (out, channels, patch, patch), mm.input_projection stays (vision width, text
  width), which clip.cpp transposes itself;
- precision: f32 throughout for `--quant f32`; otherwise f16 matrices, with 1-D tensors (norms, biases) and the
  patch and position embeddings in f32 and mm.input_projection in f16 whatever the precision, as llama.cpp's own
  converter writes them. The projector is never q8_0 (a q8_0 export gets an f16 projector): its weights are few, and
  llama.cpp's converter writes projectors in f16 or f32 too.

`check_mmproj` reads the file back with gguf's GGUFReader and compares every tensor and metadata value with what
the merged model holds; the exporter renames the file into place only when that passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.errors import StudioError

# transformers model_type of a vision-language model -> llama.cpp clip.projector_type
PROJECTORS = {"gemma3": "gemma3", "idefics3": "idefics3", "smolvlm": "idefics3"}
# where each architecture keeps its vision side in transformers' in-memory names (the rest is the language model)
_VISION_PREFIXES = {"gemma3": ("model.vision_tower.", "model.multi_modal_projector."), "idefics3": ("model.vision_model.", "model.connector.")}
_F32_NAMES = ("v.patch_embd.", "v.position_embd.")  # llama.cpp's converter keeps the embeddings in f32
_F16_ALWAYS = ("mm.input_projection.",)  # ...and Gemma 3's input projection in f16 (ggml-org/llama.cpp#13025)


@dataclass(frozen=True)
class VisionPlan:
    """What a supported vision-language model exports as: its architecture, projector type and text architecture."""

    model_type: str
    projector: str
    text_type: str


def vision_plan(model_dir: Path) -> VisionPlan | None:
    """None for a text model; for a vision-language model the plan its export follows, or a StudioError naming the
    architecture when the studio cannot write it for llama.cpp (decided from config.json alone, before any work)."""
    from studio.export.gguf import ARCHITECTURES

    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no readable config: the text loader reports what is missing
        return None
    if not isinstance(config, dict) or "vision_config" not in config:
        return None
    model_type = str(config.get("model_type"))
    supported = ", ".join(f"{k} (llama.cpp projector '{v}')" for k, v in PROJECTORS.items())
    if model_type not in PROJECTORS:
        raise StudioError(
            f"GGUF export of the '{model_type}' vision-language architecture is not supported: the studio writes llama.cpp's "
            f"vision projector for {', '.join(PROJECTORS)} only",
            where=str(path),
            fix=f"supported: {supported}; for this model use the merged safetensors folder (`studio merge`), which plain transformers loads",
        )
    text_type = str((config.get("text_config") or {}).get("model_type") or {"gemma3": "gemma3_text"}.get(model_type, "llama"))
    if text_type not in ARCHITECTURES:
        raise StudioError(f"the {model_type} model's language model is '{text_type}', which GGUF export does not write",
                          where=str(path), fix=f"text architectures GGUF export writes: {', '.join(sorted(ARCHITECTURES))}")
    act = str((config.get("vision_config") or {}).get("hidden_act", "gelu_pytorch_tanh"))
    if "gelu" not in act:  # clip.use_gelu is the only activation this file can name for these projectors
        raise StudioError(f"the vision tower's activation is '{act}'; llama.cpp's {PROJECTORS[model_type]} projector runs GELU",
                          where=str(path), fix="use the merged safetensors folder for this model")
    return VisionPlan(model_type, PROJECTORS[model_type], text_type)


def projector_metadata(model, processor, plan: VisionPlan) -> dict:
    """The clip.* metadata llama.cpp needs for this model, keyed by GGUF key (values as Python ints, floats, bools, lists)."""
    import gguf

    vision, text = model.config.vision_config, model.config.text_config
    images = processor.image_processor
    keys, clip = gguf.Keys.ClipVision, gguf.Keys.Clip
    meta = {
        clip.HAS_VISION_ENCODER: True,
        clip.PROJECTOR_TYPE: plan.projector,
        keys.PROJECTION_DIM: int(text.hidden_size),
        keys.IMAGE_SIZE: int(vision.image_size),
        keys.PATCH_SIZE: int(vision.patch_size),
        keys.EMBEDDING_LENGTH: int(vision.hidden_size),
        keys.FEED_FORWARD_LENGTH: int(vision.intermediate_size),
        keys.BLOCK_COUNT: int(vision.num_hidden_layers),
        keys.Attention.HEAD_COUNT: int(vision.num_attention_heads),
        keys.Attention.LAYERNORM_EPS: float(getattr(vision, "layer_norm_eps", None) or 1e-6),
        keys.IMAGE_MEAN: [float(x) for x in _triple(images.image_mean, "image_mean")],
        keys.IMAGE_STD: [float(x) for x in _triple(images.image_std, "image_std")],
        keys.USE_GELU: True,
    }
    if plan.projector == "gemma3":
        # The projector average-pools the (image/patch)^2 patch grid down to mm_tokens_per_image tokens.
        per_side = int(vision.image_size) // int(vision.patch_size)
        tokens_per_side = round(int(model.config.mm_tokens_per_image) ** 0.5)
        if tokens_per_side < 1 or per_side % tokens_per_side:
            raise StudioError(f"Gemma 3's {per_side}x{per_side} patches do not pool evenly to {model.config.mm_tokens_per_image} image tokens",
                              where="config.json mm_tokens_per_image", fix="use the merged safetensors folder for this model")
        meta[keys.Projector.SCALE_FACTOR] = per_side // tokens_per_side
    else:
        meta[keys.Projector.SCALE_FACTOR] = int(model.config.scale_factor)
        size = getattr(images, "size", None)
        edge = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
        meta[keys.PREPROC_IMAGE_SIZE] = int(edge or vision.image_size)
    return meta


def projector_tensors(model, plan: VisionPlan) -> dict[str, np.ndarray]:
    """The vision tower's and projector's tensors under llama.cpp's names, as float32, after the documented transforms."""
    import gguf

    vision_config = model.config.vision_config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, int(vision_config.num_hidden_layers))
    prefixes = _VISION_PREFIXES["gemma3" if plan.projector == "gemma3" else "idefics3"]
    out: dict[str, np.ndarray] = {}
    for hf_name, tensor in model.state_dict().items():
        if not hf_name.startswith(prefixes):
            continue  # the language model: the text GGUF's
        name = _checkpoint_name(hf_name, plan)
        if ".head." in name:
            continue  # SigLIP's pooling head: the projector reads the patch features, not the pooled vector (llama.cpp drops it too)
        base, _, suffix = name.rpartition(".")
        gguf_base = names.get_name(base)
        if gguf_base is None:
            raise StudioError(f"no llama.cpp name for the vision tensor {hf_name}", where="merged model",
                              fix="this vision tower has layers the exporter does not know; report it with the run directory")
        value = tensor.detach().float().cpu().numpy()
        if gguf_base == "mm.soft_emb_norm" and suffix == "weight":
            value = value + 1.0  # Gemma RMSNorm x * (1 + w) -> clip.cpp's x * w
        key = f"{gguf_base}.{suffix}"
        if key in out:
            raise StudioError(f"two vision tensors map to {key}", where=hf_name, fix="report this model; its tensor names are unusual")
        out[key] = np.ascontiguousarray(value, dtype=np.float32)
    if not out:
        raise StudioError("the merged model has no vision tensors under the expected names", where="merged model", fix="report it with the run directory")
    return out


def stored_dtype(name: str, value: np.ndarray, quant: str):
    """The numpy dtype a projector tensor is written in for this export precision (see the module docstring)."""
    if name.startswith(_F16_ALWAYS) and value.ndim >= 2:
        return np.float16
    if quant == "f32" or value.ndim <= 1 or name.startswith(_F32_NAMES):
        return np.float32
    return np.float16


def write_mmproj(model, processor, path: Path, quant: str, plan: VisionPlan, name: str) -> tuple[dict, dict]:
    """Write the projector GGUF of a loaded (float32) vision-language model to path; return (tensors, metadata) as written."""
    import gguf

    tensors = projector_tensors(model, plan)
    meta = projector_metadata(model, processor, plan)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ], use_temp_file=False)
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_name(f"{name}-mmproj")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if quant == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    for key, value in meta.items():
        _add_value(writer, key, value)
    for key, value in tensors.items():
        writer.add_tensor(key, value.astype(stored_dtype(key, value, quant)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors, meta


def check_mmproj(path: Path, tensors: dict[str, np.ndarray], meta: dict, quant: str) -> dict:
    """Read the projector GGUF back with gguf's reader: every tensor must be present with its shape and equal the merged
    model's (after the transforms, cast to the stored precision), with nothing extra, and every metadata value must read
    back. Returns the figures; raises a StudioError naming what differs."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise StudioError(f"the vision projector GGUF cannot be read back: {exc}", where=str(path), fix="report this with the run directory") from None
    problems = []
    expected_meta = {gguf.Keys.General.ARCHITECTURE: "clip", gguf.Keys.General.TYPE: gguf.GGUFType.MMPROJ, **meta}
    for key, want in expected_meta.items():
        field = reader.fields.get(key)
        got = None if field is None else field.contents()
        if not _same_value(got, want):
            problems.append(f"metadata {key} is {got!r}, expected {want!r}")
    stored = {t.name: t for t in reader.tensors}
    problems += [f"tensor {n} is missing" for n in tensors if n not in stored]
    problems += [f"tensor {n} is not the merged model's" for n in stored if n not in tensors]
    max_diff = 0.0
    for key, want in tensors.items():
        if key not in stored:
            continue
        got = np.asarray(stored[key].data)
        dtype = stored_dtype(key, want, quant)
        if got.shape != want.shape:
            problems.append(f"tensor {key} has shape {got.shape}, the merged model's is {want.shape}")
        elif got.dtype != dtype or not np.array_equal(got, want.astype(dtype)):
            problems.append(f"tensor {key} ({got.dtype}) differs from the merged model's ({np.dtype(dtype).name})")
        else:
            max_diff = max(max_diff, float(np.abs(got.astype(np.float32) - want).max(initial=0.0)))
    if problems:
        raise StudioError(f"the vision projector GGUF does not hold the merged model's vision tower: {'; '.join(problems[:5])}"
                          + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "") + "; nothing was written",
                          where=str(path), fix="report this with the run directory")
    return {"tensors": len(tensors), "metadata_keys": len(expected_meta), "max_abs_diff": max_diff,
            "projector_type": meta[gguf.Keys.Clip.PROJECTOR_TYPE]}


def _checkpoint_name(name: str, plan: VisionPlan) -> str:
    """transformers' in-memory name written back in the original checkpoint's form, which gguf-py's map knows."""
    if plan.projector != "gemma3":
        return name  # Idefics3 / SmolVLM keep `model.vision_model.` and `model.connector.` in memory and on the hub
    name = name.removeprefix("model.")
    if name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model."):
        name = "vision_tower.vision_model." + name.removeprefix("vision_tower.")
    # a bare nn.Parameter in transformers, a `.weight` in gguf-py's map (llama.cpp renames it the same way)
    return name.replace("mm_input_projection_weight", "mm_input_projection.weight")


def _triple(values, what: str) -> list:
    values = list(values) if isinstance(values, (list, tuple)) else [values] * 3
    if len(values) != 3:
        raise StudioError(f"the image processor's {what} has {len(values)} values, not one per RGB channel", where="processor_config.json",
                          fix="use the model's own image processor")
    return values


def _add_value(writer, key: str, value) -> None:
    # The types clip.cpp reads: bool flags, uint32 sizes, float32 epsilons, float32 arrays, strings.
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, list(value))


def _same_value(got, want) -> bool:
    if isinstance(want, float):
        return isinstance(got, float) and np.float32(got) == np.float32(want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_same_value(g, w) for g, w in zip(got, want))
    return type(got) is type(want) and got == want
