"""Vision-language models: how one is recognised, its processor, what a recipe may ask of it, and where LoRA goes.

A model folder whose config.json has a `vision_config` is a vision-language model: it loads through
AutoModelForImageTextToText and AutoProcessor (the processor turns images into pixel values and expands each image
placeholder into the tokens that carry its features). By default the vision tower and the projector stay frozen and
LoRA goes on the language model only; `lora.vision: true` adds the tower's and the projector's linear layers.
QLoRA quantizes the language model's linear layers only: the tower and the projector are small next to it, and
their 16-bit weights keep the image features the base model was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

from studio.config.schema import Recipe
from studio.errors import StudioError


def is_vision_model(model_dir: Path) -> bool:
    """Whether the model folder holds a vision-language model (its config has a vision tower)."""
    config = Path(model_dir) / "config.json"
    try:
        return "vision_config" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no config.json (a GGUF file, say): the text loader reports what is missing
        return False


def check_vision_recipe(recipe: Recipe) -> None:
    """Refuse, before loading, what this release does not do with a vision-language model."""
    if recipe.method not in ("lora", "qlora", "dora"):
        raise StudioError(f"method {recipe.method} trains text models; vision-language models train with supervised chat data", where="method",
                          fix="set method: lora (or qlora, dora)")
    for key, on in (("data.packing", recipe.data.packing), ("train.fused_loss", recipe.train.fused_loss)):
        if on:
            raise StudioError(f"{key} is not supported for vision-language models (image tokens must stay with their pixels)", where=key, fix=f"set {key}: false")


def refuse_images_unseen(model_dir: Path, what: str, where: str) -> None:
    """Refuse a text-only check (`what`) of a vision-language model: it would feed no image, and so check nothing of
    what the run learned about images."""
    if is_vision_model(model_dir):
        raise StudioError(f"{what} is a text-only check and does not support vision-language runs (studio eval, chat, Compare and merge do)", where=where,
                          fix="evaluate the run on held-out image questions with `studio eval`")


def load_processor(model_dir: Path, recipe: Recipe | None = None):
    """The model's processor, its chat template (the recipe's, when it sets one) also on its tokenizer, and a pad token."""
    from transformers import AutoProcessor

    from studio.data import prepare_tokenizer, template_text

    trust = bool(recipe and recipe.model.trust_remote_code)
    try:
        processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=trust)
    except (OSError, ValueError, TypeError, AttributeError) as exc:  # a missing file, or a processor class that cannot be built here
        raise StudioError(f"cannot load the model's processor: {str(exc).splitlines()[0][:200]}", where=str(model_dir),
                          fix="the folder needs processor_config.json / preprocessor_config.json and the tokenizer files (some processors also need torchvision)") from None
    template = recipe.data.chat_template if recipe else None
    if template:
        processor.chat_template = template_text(template)
    if not getattr(processor, "chat_template", None):
        raise StudioError("the model's processor has no chat template, so image turns cannot be rendered", where=str(model_dir),
                          fix="set data.chat_template to the model's template")
    processor.tokenizer.chat_template = processor.chat_template  # the adapter folder's tokenizer renders as training did
    prepare_tokenizer(processor.tokenizer)
    return processor


def lora_targets(model, recipe: Recipe) -> list[str]:
    """Full names of the linear layers that get adapters: the language model's (those lora.targets names, or every
    linear layer for all-linear), plus the vision tower's and projector's with lora.vision; never the output head."""
    import torch

    head = model.get_output_embeddings()
    language = model.get_decoder()
    inside = {id(m) for m in language.modules()}
    wanted = recipe.lora.targets
    names = []
    for name, module in model.named_modules():
        # nn.Linear, or a 4-bit layer standing in for one (the studio's QuantLinear): a leaf with in/out features.
        linear = isinstance(module, torch.nn.Linear) or (hasattr(module, "in_features") and hasattr(module, "out_features") and not any(module.children()))
        if not linear or module is head:
            continue
        if not recipe.lora.vision and id(module) not in inside:
            continue
        if wanted != "all-linear" and name.rsplit(".", 1)[-1] not in wanted:
            continue
        names.append(name)
    if not names:
        raise StudioError(f"no linear layer of the {'model' if recipe.lora.vision else 'language model'} matches lora.targets {wanted}", where="lora.targets",
                          fix="use all-linear, or module names of the language model such as [q_proj, v_proj]")
    return names


def outside_language_model(model) -> list[str]:
    """Names of the top-most modules outside the language model (vision tower, projector, output head): what a
    4-bit load keeps in 16-bit. Works on a model built on the meta device, so it costs no memory."""
    language = model.get_decoder()
    inside = {id(m) for m in language.modules()}
    holds = {id(m) for m in model.modules() if any(c is language for c in m.modules())}  # the language model's ancestors
    names = []
    for name, module in model.named_modules():
        if not name or id(module) in inside or id(module) in holds:
            continue
        if any(name.startswith(kept + ".") for kept in names) or not any(True for _ in module.parameters()):
            continue
        names.append(name)
    return names


def kept_in_16_bit(model_dir: Path, trust_remote_code: bool = False) -> list[str]:
    """`outside_language_model` for a model folder, from its config alone (the model is built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
    return outside_language_model(model)
