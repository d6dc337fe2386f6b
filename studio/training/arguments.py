"""What every studio trainer (SFT, DPO, ORPO, and each method after them) shares: its arguments and dtypes.

One builder for the Trainer arguments, so a new method is a new file that adds its own few keys; one
rule for the adapter's dtype and one for mixed precision, both derived from the recipe.
"""

from __future__ import annotations

from pathlib import Path

from studio.config.schema import Recipe
from studio.training.rundir import CHECKPOINTS


def adapter_dtype(recipe: Recipe, device):
    """The dtype the adapter trains in on `device` (`lora.dtype`, see Recipe.adapter_dtype_for)."""
    import torch

    from studio.modeling.loading import pick_dtype

    compute = str(pick_dtype(recipe.quant.compute_dtype, device)).removeprefix("torch.")
    return getattr(torch, recipe.adapter_dtype_for(compute))


def set_adapter_dtype(model, dtype) -> int:
    """Cast the trainable adapter weights to `dtype`; returns how many changed.

    trl casts every 4-bit (bitsandbytes) model's adapter to bfloat16 whatever the recipe says, and leaves
    the studio's own 4-bit layers alone: one explicit rule here keeps both backends the same. DoRA's
    magnitude vector stays float32, as in trl: its updates are often smaller than bfloat16 can represent.
    """
    changed = 0
    for name, param in model.named_parameters():
        if param.requires_grad and "lora_magnitude_vector" not in name and param.dtype != dtype:
            param.data = param.data.to(dtype)
            changed += 1
    return changed


def mixed_precision_dtype(recipe: Recipe, device):
    """The half dtype the trainer's mixed precision (bf16/fp16 flags) follows, or None for none.

    It is the dtype the base model was loaded in (studio.modeling.loading.pick_dtype), read from the recipe rather than from
    `model.dtype`: that property reports the first floating parameter, which is a float32 adapter weight when
    the embedding table is offloaded and the QLoRA layers hold no float weight, so a bf16 model would then
    train without autocast (and an fp16 one without loss scaling). Mixed precision is a GPU matter only.
    """
    import torch

    from studio.modeling.loading import pick_dtype

    if device.type != "cuda":
        return None
    dtype = pick_dtype(recipe.model.dtype, device)
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def trainer_arguments(recipe: Recipe, run_dir: Path, device, has_val: bool) -> dict:
    """The Trainer arguments every studio trainer shares (SFT, DPO, ORPO), from the recipe."""
    import torch

    from studio.training.distributed import fsdp_state_prepared

    t = recipe.train
    half = mixed_precision_dtype(recipe, device)
    return dict(
        output_dir=str(Path(run_dir) / CHECKPOINTS),
        max_steps=t.max_steps or -1,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        # transformers 5 reads a warmup_steps below 1 as a fraction of the run (it has no warmup_ratio);
        # TrainSpec.warmup_ratio is bounded to [0, 1), so it is always read as the fraction it is.
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if (has_val and t.eval_steps) else "no",
        eval_steps=t.eval_steps,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device.type == "cpu",
        bf16=half == torch.bfloat16,
        fp16=half == torch.float16,
        max_length=recipe.data.max_length,
        gradient_checkpointing=False,  # enabled on the model already, before adapters were attached
        # Every rank quantizes the same weights, so DDP's per-forward broadcast of module buffers would only
        # resend the whole 4-bit base (QuantLinear keeps it in buffers) from rank 0 on every micro-batch.
        ddp_broadcast_buffers=False,
        # A CPU FSDP worker has prepared accelerate's state itself (distributed.enable_fsdp_over_gloo);
        # the trainer must use it instead of resetting it to plain data parallel.
        accelerator_config={"use_configured_state": fsdp_state_prepared()},
    )
