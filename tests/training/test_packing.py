"""Packing: several examples per row, attention and positions kept inside each, loss unchanged."""

from __future__ import annotations

import torch
from helpers import recipe_dict

from studio.config.load import load_recipe
from studio.data import build_data
from studio.modeling.loading import load_for_training
from studio.training.sft import build_trainer


def _first_batch_loss(recipe, run_dir):
    model, tokenizer, _ = load_for_training(recipe, torch.device("cpu"))
    data = build_data(recipe, tokenizer)
    trainer = build_trainer(recipe, model, tokenizer, data, run_dir, torch.device("cpu"))
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    with torch.no_grad():
        loss = model(**{k: v for k, v in batch.items() if k in ("input_ids", "labels", "attention_mask", "position_ids")}).loss
    return float(loss), batch


def test_packed_and_unpacked_losses_match(tiny_llama_dir, tiny_data, tmp_path):
    # Every example fits in one batch either way, so both losses average the same trained tokens.
    def recipe(packing):
        raw = recipe_dict(tiny_llama_dir, tiny_data, tmp_path / str(packing), data={"packing": packing, "max_length": 64}, train={"batch_size": 32})
        return load_recipe(raw)

    unpacked, plain_batch = _first_batch_loss(recipe(False), tmp_path / "a")
    packed, packed_batch = _first_batch_loss(recipe(True), tmp_path / "b")
    assert "position_ids" in packed_batch and "attention_mask" not in packed_batch
    # Packing removed the padding: fewer token slots than the padded batch.
    assert packed_batch["input_ids"].numel() < plain_batch["input_ids"].numel()
    # Positions restart at every example, once per example.
    assert int((packed_batch["position_ids"] == 0).sum()) == plain_batch["input_ids"].shape[0]
    assert (packed_batch["labels"] != -100).sum() == (plain_batch["labels"][:, 1:] != -100).sum()
    assert abs(packed - unpacked) < 1e-5 * max(1.0, abs(unpacked))


def test_packing_trains(tiny_llama_dir, tiny_data, tmp_path):
    from studio.training.train import train

    raw = recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "run", data={"packing": True}, train={"max_steps": 2})
    result = train(load_recipe(raw), progress=False)
    assert result.steps == 2 and result.train_loss is not None and result.train_loss == result.train_loss
