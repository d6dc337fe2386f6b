"""Supervised fine-tuning: trl's SFTTrainer on the studio's pre-tokenized, loss-masked examples.

trl does the optimisation; the studio hands it `input_ids` and `labels` it computed itself (every
assistant turn and its end-of-turn token trained, whatever the chat template), and extends it with
callbacks only. With `train.fused_loss` the one override is `compute_loss`, trl's documented extension
point, so the tokens x vocabulary logits are never materialised.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from transformers import PrinterCallback
from transformers import ProgressCallback as HFProgressCallback
from trl import SFTConfig, SFTTrainer

from studio.config.schema import Recipe
from studio.data import build_data
from studio.data.vision import VisionCollator, is_processor
from studio.modeling.fused_loss import check_fused_loss_supported, fused_causal_lm_loss
from studio.training.arguments import trainer_arguments
from studio.training.callbacks import training_callbacks


class FusedLossSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss goes through the studio's chunked linear + cross-entropy kernel."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = fused_causal_lm_loss(model, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # trl divides by the tokens of every rank; match it
        return (loss, {"loss": loss}) if return_outputs else loss


def build_trainer(recipe: Recipe, model, tokenizer, data, run_dir: Path, device, progress: bool = False):
    """trl's SFTTrainer configured from the recipe, on our pre-tokenized, loss-masked examples."""
    t = recipe.train
    has_val = bool(data.val)
    vision = is_processor(tokenizer)
    extra = {}
    if vision:
        # Rows carry their text and image files to VisionCollator, which makes the pixels per batch: trl must neither
        # drop those columns nor prepare the rows again.
        extra = {"remove_unused_columns": False, "dataset_kwargs": {"skip_prepare_dataset": True}}
    args = SFTConfig(
        **extra,
        **trainer_arguments(recipe, run_dir, device, has_val),
        include_num_input_tokens_seen="non_padding",
        packing=recipe.data.packing,
        packing_strategy="bfd",  # whole examples only: none is split across rows
        dataloader_pin_memory=device.type == "cuda",
        optim="adamw_torch",
        activation_offloading=t.offload_activations,
        prediction_loss_only=True,  # evaluation needs the loss, not every logit
        ddp_find_unused_parameters=False,  # every adapter weight takes part in every forward pass
    )
    train_set = _dataset(data.train, vision)
    val_set = _dataset(data.val, vision) if has_val else None
    datasets.disable_progress_bars()
    if t.fused_loss:
        check_fused_loss_supported(model)
    trainer_class = FusedLossSFTTrainer if t.fused_loss else SFTTrainer
    collator = VisionCollator(tokenizer, recipe.data.image_max_pixels) if vision else None
    trainer = trainer_class(model=model, args=args, train_dataset=train_set, eval_dataset=val_set, processing_class=tokenizer,
                            data_collator=collator, callbacks=training_callbacks(run_dir, progress))
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(HFProgressCallback)
    return trainer


def _dataset(encoded: list, vision: bool) -> datasets.Dataset:
    columns = {"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]}
    if vision:
        columns.update(text=[e.text for e in encoded], images=[list(e.images) for e in encoded], where=[e.where for e in encoded])
    return datasets.Dataset.from_dict(columns)


def sft_trainer(recipe: Recipe, model, tokenizer, run_dir: Path, device, progress: bool):
    """The SFT trainer on the recipe's encoded data, the data manifest, and whether there is validation data."""
    data = build_data(recipe, tokenizer)
    return build_trainer(recipe, model, tokenizer, data, run_dir, device, progress), data.manifest, bool(data.val)
