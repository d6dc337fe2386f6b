"""From the recipe's data section to encoded training and validation examples and the data.json manifest."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from studio.config.schema import DataSpec, Recipe
from studio.data.formats import Example, normalize, reference_of
from studio.data.images import has_images, resolve_images
from studio.data.manifest import images_digest, length_stats, sha256_of
from studio.data.readers import read_rows
from studio.data.render import Encoded, Renderer
from studio.data.split import seeded_split
from studio.data.vision import VisionRenderer, is_processor
from studio.errors import StudioError


@dataclass
class BuiltData:
    """Encoded training and validation examples, plus the manifest written to data.json."""

    train: list[Encoded]
    val: list[Encoded]
    format: str
    manifest: dict = field(default_factory=dict)


def load_examples(path: str, spec: DataSpec) -> tuple[str, list[Example]]:
    """Read and normalize one dataset file with the recipe's format, column mapping and system prompt; image paths
    become absolute and every image is checked (studio.data.images), so bad images fail before a model loads."""
    fmt, examples = normalize(read_rows(path), spec.format, spec.columns, spec.system_prompt)
    return fmt, resolve_images(examples, path, spec.image_max_pixels)


def load_heldout(path: str, spec: DataSpec) -> tuple[str, list[Example]]:
    """Held-out examples for evaluation: read like the training data, except that preference runs are
    scored on ordinary prompt/answer rows (their format is detected, not taken from data.format), and prompt
    rows (GRPO) end in their reference answer as the assistant turn, keeping their columns for the rewards."""
    if spec.format == "preference":
        spec = spec.model_copy(update={"format": "auto"})
    fmt, examples = load_examples(path, spec)
    if fmt == "prompt":
        examples = [_with_reference(e) for e in examples]
    return fmt, examples


def _with_reference(example: Example) -> Example:
    reference = reference_of(example)
    if reference is None:
        raise StudioError("a held-out prompt row has no `answer` column to score against", where=example.where, fix="give every held-out row an `answer` (the reference the metric compares with)")
    return replace(example, messages=(*example.messages, {"role": "assistant", "content": reference}))


def build_data(recipe: Recipe, tokenizer) -> BuiltData:
    """Encode the recipe's training (and validation) data and describe it in a manifest."""
    spec = recipe.data
    fmt, examples = load_examples(spec.path, spec)
    renderer = _renderer(tokenizer, spec, examples)
    if fmt == "preference":
        raise StudioError("this is preference data (prompt/chosen/rejected), which trains with method dpo or orpo", where=spec.path, fix="set method: dpo (or orpo), or use chat / alpaca / text data for supervised fine-tuning")
    if fmt == "prompt":
        raise StudioError("these rows are prompts without answers, which train with method grpo (the model writes the answers and rewards score them)", where=spec.path, fix="set method: grpo, or use chat / alpaca / prompt_completion data for supervised fine-tuning")
    n_rows = len(examples)
    if spec.val_path:
        _, val_examples = load_examples(spec.val_path, spec)
    else:
        examples, val_examples = seeded_split(examples, spec.val_split, recipe.train.seed)
    train, train_info = _encode_all(renderer, examples)
    val, val_info = _encode_all(renderer, val_examples)
    if not train:
        raise StudioError("no training example has any trained token left after truncation", where=spec.path, fix="raise data.max_length or shorten the prompts")
    manifest = {
        "path": spec.path,
        "sha256": sha256_of(spec.path),
        "format": fmt,
        "rows": n_rows,
        "train": {**train_info, "lengths": length_stats(train)},
        "val": {**val_info, "lengths": length_stats(val)},
        "max_length": spec.max_length,
        "train_on": spec.train_on,
    }
    if spec.val_path:
        manifest["val_path"] = spec.val_path
        manifest["val_sha256"] = sha256_of(spec.val_path)
    if is_processor(tokenizer):
        manifest["images"] = images_digest([*examples, *val_examples])
        manifest["image_max_pixels"] = spec.image_max_pixels
    return BuiltData(train=train, val=val, format=fmt, manifest=manifest)


def _renderer(tokenizer, spec: DataSpec, examples: list[Example]) -> Renderer:
    """The vision renderer for a model with a processor, the text renderer otherwise (refusing data with images)."""
    if is_processor(tokenizer):
        return VisionRenderer(tokenizer, spec.max_length, spec.train_on, spec.image_max_pixels)
    if has_images(examples):
        raise StudioError("the data holds images but model.name is a text-only model", where=spec.path,
                          fix="use a vision-language model (one whose folder has a processor, e.g. SmolVLM or Gemma 3), or data without images")
    return Renderer(tokenizer, spec.max_length, spec.train_on)


def _encode_all(renderer: Renderer, examples: list[Example]) -> tuple[list[Encoded], dict]:
    encoded, dropped, truncated, seen, duplicates = [], [], 0, set(), 0
    for example in examples:
        item = renderer.encode(example)
        key = (tuple(item.input_ids), item.images)  # rows that differ only in their pictures are not duplicates
        duplicates += key in seen
        seen.add(key)
        if item.trained_tokens == 0:
            dropped.append(example.where)
            continue
        truncated += item.truncated
        encoded.append(item)
    info = {"examples": len(encoded), "dropped": len(dropped), "truncated": truncated, "duplicates": duplicates}
    if dropped:
        info["dropped_where"] = dropped[:20]
    return encoded, info
