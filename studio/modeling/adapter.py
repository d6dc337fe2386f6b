"""A trained run's model for inference: the base in the recipe's precision with the adapter on top.

The one loader evaluation, chat, the Compare tab and merging use, so all of them see the same model:
the base model's own weights (never the 4-bit copy QLoRA trained against), the tokenizer training saved
beside the adapter (it carries the training chat template), and the adapter unmerged, so
`model.disable_adapter()` gives the base model's answers from the same load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.config.schema import Recipe


@dataclass
class LoadedModel:
    """A model ready for inference, its tokenizer, and where and in what precision it runs."""

    model: object
    tokenizer: object
    device: object
    dtype: object
    processor: object = None  # a vision-language run's processor (its tokenizer is `tokenizer`); None for text runs


def load_with_adapter(recipe: Recipe, adapter_dir: Path, with_adapter: bool = True, vision: bool = False) -> LoadedModel:
    """The recipe's base model on the recipe's device (float32 on a CPU), with the adapter in `adapter_dir`
    attached (unless `with_adapter` is False), in eval mode.

    A vision-language run loads only for callers that pass `vision=True` (those that feed it images: evaluation,
    chat, Compare, merge); it then comes with the processor training saved beside the adapter."""
    from peft import PeftModel

    from studio.modeling.loading import load_base, load_tokenizer, pick_device, pick_dtype
    from studio.modeling.source import resolve_model
    from studio.modeling.vision import is_vision_model, refuse_images_unseen

    model_dir = resolve_model(recipe.model.name, recipe.model.revision)
    is_vision = is_vision_model(model_dir)
    if not vision:
        refuse_images_unseen(model_dir, "this check", str(adapter_dir))
    device = pick_device(recipe.train.device)
    dtype = pick_dtype(recipe.model.dtype, device)
    processor = None
    if is_vision:
        from studio.modeling.vision import load_processor

        processor = load_processor(Path(adapter_dir), recipe)  # the adapter folder's: it renders images as training did
        tokenizer = processor.tokenizer
    else:
        tokenizer = load_tokenizer(Path(adapter_dir), recipe)
    model = load_base(model_dir, dtype, device, recipe.model.trust_remote_code, allow_pickle=recipe.model.allow_pickle)
    if with_adapter:
        model = PeftModel.from_pretrained(model, Path(adapter_dir)).eval()
    return LoadedModel(model, tokenizer, device, dtype, processor)
