"""Preference training (DPO, ORPO) through trl, on the same LoRA/QLoRA models as supervised training.

Pairs are rendered with the model's chat template by the studio (studio.data.render_pairs, so prompts look
exactly as they will at inference), then handed to trl as plain prompt/chosen/rejected text: each answer is
the assistant turn through its end-of-turn token. With peft, DPO's reference model is the base with the
adapter disabled.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from transformers import PrinterCallback, ProgressCallback

from studio.config.schema import Recipe
from studio.data import Renderer, load_examples, render_pairs
from studio.data.manifest import sha256_of
from studio.data.split import seeded_split
from studio.errors import StudioError
from studio.training.arguments import trainer_arguments
from studio.training.callbacks import training_callbacks


def build_preference_data(recipe: Recipe, tokenizer) -> tuple[list[dict], list[dict], dict]:
    """Training and validation pairs plus the manifest written to data.json."""
    spec = recipe.data
    fmt, examples = load_examples(spec.path, spec)
    if fmt != "preference":
        raise StudioError(f"method {recipe.method} needs preference data (prompt/chosen/rejected), but {spec.path} is {fmt} data", where=spec.path, fix="use rows with chosen and rejected answers, or method qlora/lora for supervised data")
    renderer = Renderer(tokenizer, spec.max_length)
    pairs = render_pairs(renderer, examples)
    if spec.val_path:
        val = render_pairs(renderer, load_examples(spec.val_path, spec)[1])
    else:
        pairs, val = seeded_split(pairs, spec.val_split, recipe.train.seed, what="pairs")
    manifest = {"path": spec.path, "sha256": sha256_of(spec.path), "format": fmt, "rows": len(examples), "train": {"pairs": len(pairs)}, "val": {"pairs": len(val)}, "max_length": spec.max_length}
    return pairs, val, manifest


def build_preference_trainer(recipe: Recipe, model, tokenizer, pairs: list[dict], val: list[dict], run_dir: Path, device, callbacks: list):
    """trl's DPOTrainer or ORPOTrainer configured from the recipe (the reference model is the base itself)."""
    common = {**trainer_arguments(recipe, run_dir, device, bool(val)), "beta": recipe.preference.beta}
    train_set = datasets.Dataset.from_list(pairs)
    val_set = datasets.Dataset.from_list(val) if val else None
    datasets.disable_progress_bars()
    if recipe.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=train_set, eval_dataset=val_set, processing_class=tokenizer, callbacks=callbacks)
    else:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer = ORPOTrainer(model=model, args=ORPOConfig(**common), train_dataset=train_set, eval_dataset=val_set, processing_class=tokenizer, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def preference_trainer(recipe: Recipe, model, tokenizer, run_dir: Path, device, progress: bool):
    """The DPO/ORPO trainer on the recipe's pairs, the data manifest, and whether there are validation pairs."""
    pairs, val, manifest = build_preference_data(recipe, tokenizer)
    trainer = build_preference_trainer(recipe, model, tokenizer, pairs, val, run_dir, device, training_callbacks(run_dir, progress))
    return trainer, manifest, bool(val)
