"""The prompts a trained run is checked on: its held-out examples, else a fixed set the project wrote.

Evaluation scores the held-out examples; merging and exporting compare two models' logits on the same
texts (`probe_texts`), rendered with the training chat template so the check sees what serving will.
"""

from __future__ import annotations

from studio.config.schema import Recipe
from studio.errors import StudioError

# Used when a recipe has no held-out data: short, general, and different in shape (a greeting, a
# sentence, a number, a list), so a layout error shows up on at least one of them.
FIXED_PROMPTS = (
    "Hello! Who are you?",
    "Write one sentence about the sea.",
    "What is 12 plus 30? Answer with a number.",
    "List three colours, separated by commas.",
)


def heldout_examples(recipe: Recipe, path: str | None = None):
    """Held-out chat examples: `path`, else data.test_path, else data.val_path."""
    from studio.data import load_heldout

    source = path or recipe.data.test_path or recipe.data.val_path
    if not source:
        raise StudioError("no held-out examples to evaluate on", where="data.test_path", fix="set data.test_path (or data.val_path) in the recipe, or pass --data FILE")
    _fmt, examples = load_heldout(source, recipe.data)
    usable = [e for e in examples if e.messages and e.messages[-1]["role"] == "assistant"]
    if not usable:
        raise StudioError("held-out data has no examples ending in an assistant answer", where=source, fix="use chat, alpaca or prompt/completion rows")
    return usable


def probe_texts(recipe: Recipe, tokenizer, limit: int) -> list[str]:
    """Up to `limit` held-out conversations rendered as training saw them, else FIXED_PROMPTS (with the
    recipe's system prompt) rendered with the generation prompt."""
    from studio.data import Renderer

    renderer = Renderer(tokenizer, recipe.data.max_length)
    try:
        return [renderer.conversation_text(e.messages) for e in heldout_examples(recipe)[:limit]]
    except StudioError:
        pass
    system = [{"role": "system", "content": recipe.data.system_prompt}] if recipe.data.system_prompt else []
    return [renderer.prompt_text([*system, {"role": "user", "content": p}]) for p in FIXED_PROMPTS[:limit]]


class HeldoutReader:
    """How a run reads held-out conversations: its renderer (the processor's for a vision-language run), the
    collator that adds pixels to a loss batch, and each prompt's decoded images."""

    def __init__(self, recipe, tokenizer, processor=None):
        from studio.data import Renderer
        from studio.data.vision import VisionCollator, VisionRenderer

        spec = recipe.data
        self.max_pixels = spec.image_max_pixels
        self.processor = processor
        if processor is None:
            self.renderer, self.collator = Renderer(tokenizer, spec.max_length, spec.train_on), None
        else:
            self.renderer = VisionRenderer(processor, spec.max_length, spec.train_on, spec.image_max_pixels)
            self.collator = VisionCollator(processor, spec.image_max_pixels)

    def images(self, examples) -> list[list] | None:
        """Per example, the PIL images of its prompt (all turns but the last), or None for a text run."""
        from studio.data.vision import prompt_images

        if self.processor is None:
            return None
        return [prompt_images(e.messages[:-1], self.max_pixels, e.where) for e in examples]
