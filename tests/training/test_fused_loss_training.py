"""`train.fused_loss` trains through the studio's fused linear + cross-entropy kernel with the same losses."""

from __future__ import annotations

import pytest
from helpers import recipe_dict

from studio.config.load import load_recipe
from studio.errors import StudioError
from studio.training.rundir import read_metrics
from studio.training.train import train


def _losses(run_dir):
    return [r["train_loss"] for r in read_metrics(run_dir) if "train_loss" in r]


def test_fused_loss_matches_the_default_loss(tiny_llama_dir, tiny_data, tmp_path):
    plain = train(load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "plain", train={"max_steps": 3})), progress=False)
    fused = train(load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "fused", train={"max_steps": 3, "fused_loss": True})), progress=False)
    a, b = _losses(plain.run_dir), _losses(fused.run_dir)
    assert len(a) == len(b) == 3
    # Same data, seed and masks: the losses (and so the updates) agree step by step.
    for x, y in zip(a, b):
        assert y == pytest.approx(x, rel=2e-4)


def test_fused_loss_with_gradient_accumulation(tiny_llama_dir, tiny_data, tmp_path):
    raw = recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "acc", train={"max_steps": 2, "batch_size": 2, "grad_accum": 2, "fused_loss": True})
    ref = recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "ref", train={"max_steps": 2, "batch_size": 2, "grad_accum": 2})
    a, b = _losses(train(load_recipe(ref), progress=False).run_dir), _losses(train(load_recipe(raw), progress=False).run_dir)
    for x, y in zip(a, b):
        assert y == pytest.approx(x, rel=2e-4)


def test_offload_on_cpu_is_refused_clearly(tiny_llama_dir, tiny_data, tmp_path):
    raw = recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "off", train={"max_steps": 1, "offload_activations": True})
    with pytest.raises(StudioError, match="offload_activations"):
        train(load_recipe(raw), progress=False)
