"""Adapter Studio: LoRA/QLoRA fine-tuning with quantized kernels, merged back into the open base model.

    from studio import load_recipe, train, evaluate, merge
    result = train(load_recipe("smollm2/135m-qlora"))      # a shipped recipe's name, or a YAML file
    print(evaluate(result.run_dir).adapter_score)
    merge(result.run_dir)

Nothing heavy is imported here: torch and transformers load when a function that needs them runs, so
`studio --help` and recipe checks stay fast. The packages, one job each:

    config/      the Recipe schema, YAML and `--set` overrides, shipped recipes
    data/        dataset files -> chat-templated, loss-masked tokens
    modeling/    base models, 4-bit backends, adapters
    training/    SFT, DPO/ORPO, callbacks, distributed runs, the run directory
    memory/      GPU memory before the run, and settings that fit
    evaluation/  held-out scores, generation, probe prompts
    export/      merge, GGUF, Ollama, round-trip checks
    report/      `studio report`: a run directory on one self-contained HTML page
    env/         env.json's record of the machine, `studio doctor`
    cli/, ui/    the two shells
"""

from __future__ import annotations

from studio.errors import StudioError

__version__ = "0.1.0"
__all__ = ["Recipe", "StudioError", "__version__", "evaluate", "load_recipe", "merge", "reproduce", "train"]


def __getattr__(name: str):
    # Recipe and load_recipe import pydantic; resolved on first use so `import studio` costs nothing.
    if name == "Recipe":
        from studio.config.schema import Recipe

        return Recipe
    if name == "load_recipe":
        from studio.config.load import load_recipe

        return load_recipe
    raise AttributeError(f"module 'studio' has no attribute {name!r}")


def train(recipe, **kwargs):
    """Fine-tune a recipe and write its run directory (see studio.training.train.train)."""
    from studio.training.train import train as _train

    return _train(recipe, **kwargs)


def evaluate(run_dir, **kwargs):
    """Score base and adapter on held-out examples (see studio.evaluation.evaluate.evaluate)."""
    from studio.evaluation.evaluate import evaluate as _evaluate

    return _evaluate(run_dir, **kwargs)


def merge(run_dir, **kwargs):
    """Merge the adapter into the base and verify it (see studio.export.merge.merge)."""
    from studio.export.merge import merge as _merge

    return _merge(run_dir, **kwargs)


def reproduce(run_dir, **kwargs):
    """Train a run again from its directory and compare losses and adapters (see studio.training.reproduce.reproduce)."""
    from studio.training.reproduce import reproduce as _reproduce

    return _reproduce(run_dir, **kwargs)
