"""Adapter Studio: LoRA/QLoRA fine-tuning with quantized kernels, merged back into the open base model.

    from studio import load_recipe, train, evaluate, merge
    result = train(load_recipe("recipes/smollm2/135m-qlora.yaml"))
    print(evaluate(result.run_dir).adapter_score)
    merge(result.run_dir)

Heavy libraries (torch, transformers) load on first use, so `studio --help` and recipe checks stay fast.
"""

from __future__ import annotations

from .errors import StudioError
from .recipe import Recipe
from .recipe_io import load_recipe

__all__ = ["Recipe", "StudioError", "evaluate", "load_recipe", "merge", "train"]


def train(recipe, **kwargs):
    """Fine-tune a recipe (see studio.train.train)."""
    from .train import train as _train

    return _train(recipe, **kwargs)


def evaluate(run_dir, **kwargs):
    """Score base and adapter on held-out examples (see studio.evaluate.evaluate)."""
    from .evaluate import evaluate as _evaluate

    return _evaluate(run_dir, **kwargs)


def merge(run_dir, **kwargs):
    """Merge the adapter into the base and verify it (see studio.merge.merge)."""
    from .merge import merge as _merge

    return _merge(run_dir, **kwargs)
