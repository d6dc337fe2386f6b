"""The Trainer arguments every method shares: warmup is a fraction of the run, as the recipe says."""

from __future__ import annotations

import helpers
import torch
from transformers import TrainingArguments

from studio.config.load import load_recipe
from studio.training.arguments import trainer_arguments


def test_warmup_ratio_becomes_that_fraction_of_the_steps(tmp_path, tiny_llama_dir, tiny_data):
    """transformers 5 has no warmup_ratio; a warmup_steps below 1 is read as a fraction of the run."""
    recipe = load_recipe(helpers.recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "run", train={"warmup_ratio": 0.25, "max_steps": 40}))
    args = TrainingArguments(**{k: v for k, v in trainer_arguments(recipe, tmp_path / "run", torch.device("cpu"), False).items() if k != "max_length"})
    assert args.get_warmup_steps(40) == 10
    assert args.get_warmup_steps(7) == 2  # rounded up, as transformers does for fractions
