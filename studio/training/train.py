"""Training, top to bottom: run directory, seed, model, data, trainer with callbacks, adapter, model card.

trl's SFTTrainer does the optimisation; the studio adds its own tokenization and loss masks (so every
assistant turn and its end-of-turn token are trained, whatever the chat template), metrics, progress,
and a run directory that merge, evaluate and the UI read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from studio.config.schema import Recipe
from studio.errors import Interrupted, StudioError
from studio.training.arguments import adapter_dtype, set_adapter_dtype
from studio.training.callbacks import stop_requested
from studio.training.checkpoints import last_checkpoint
from studio.training.prepare import prepare_run
from studio.training.rundir import ADAPTER, DATA, SUMMARY, TrainResult, checkpoint_step, read_metrics, truncate_metrics, write_json


def train(recipe: Recipe, resume: bool = False, progress: bool = True, overwrite: bool = False, worker: bool = False) -> TrainResult:
    """Fine-tune the recipe's base model and write the run directory; return where the adapter is.

    With `resume`, training continues from the run directory's last complete checkpoint. With `worker`,
    this is one process of a distributed run (started by `launch_distributed`): the run directory is
    already prepared, every rank trains, and only rank 0 writes files.
    """
    from studio.modeling.loading import pick_device
    from studio.modeling.quiet import quiet_libraries
    from studio.training.distributed import process_info

    quiet_libraries()
    rank = process_info()
    device = pick_device(recipe.train.device)
    if worker and device.type == "cuda":
        import torch

        device = torch.device("cuda", rank.local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    if worker:
        run_dir = recipe.run_dir()  # prepared by the launcher; no rank deletes or recreates it
        if recipe.distributed.strategy == "fsdp":
            from studio.training.distributed import enable_fsdp_over_gloo

            enable_fsdp_over_gloo()
    else:
        # 1. The run directory records what is about to happen before anything expensive starts.
        recipe, run_dir = prepare_run(recipe, device, resume, overwrite)
    if recipe.train.offload_activations and device.type != "cuda":
        raise StudioError("train.offload_activations moves activations from GPU to CPU memory; this run is on the CPU", where="train.offload_activations", fix="set train.offload_activations: false (or train on a GPU)")

    # 2. Seeded model with fresh adapters, and the tokenized, loss-masked data.
    from transformers import set_seed

    from studio.training.determinism import apply_determinism, restore_autotune

    set_seed(recipe.train.seed)
    apply_determinism(recipe.train.deterministic)
    model, tokenizer, model_dir = _load_or_explain(recipe, device)
    if recipe.distributed.strategy == "fsdp" and recipe.adapter_method == "qlora":
        from studio.modeling.quant import make_quantized_weights_shardable

        make_quantized_weights_shardable(model)

    # 3. The method's trainer (SFT, DPO, ORPO, GRPO) on its data, extended with callbacks only.
    import torch

    trainer, manifest, has_val = method_trainer(recipe, model, tokenizer, run_dir, device, progress)
    if rank.is_main:
        write_json(run_dir / DATA, {**manifest, "model_dir": str(model_dir)})
    set_adapter_dtype(trainer.model, adapter_dtype(recipe, device))  # after trl's own cast, before the optimizer exists
    checkpoint = last_checkpoint(run_dir) if resume else None
    if checkpoint and recipe.train.deterministic:
        restore_autotune(checkpoint, rank.rank)
    if resume and rank.is_main:
        # Steps logged after the checkpoint (or any, when there is none) will be run and logged again.
        truncate_metrics(run_dir, checkpoint_step(checkpoint) if checkpoint else 0)
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.cuda.OutOfMemoryError:
        done = last_checkpoint(run_dir)
        raise StudioError(
            f"out of GPU memory at step {trainer.state.global_step}; the run can continue from {done.name if done else 'the start'}",
            where=f"train.batch_size={recipe.train.batch_size}, data.max_length={recipe.data.max_length}, train.gradient_checkpointing={recipe.train.gradient_checkpointing}",
            fix=f"lower train.batch_size (raising train.grad_accum keeps the effective batch), turn on train.gradient_checkpointing, or set train.auto_fit: true; then `studio train --resume {run_dir}` or start again",
        ) from None
    except KeyboardInterrupt:
        done = last_checkpoint(run_dir)
        since = f"from {done.name}" if done else "from the start (no checkpoint was complete yet)"
        raise Interrupted(f"training aborted; it can continue {since}", where=str(run_dir), fix=f"resume with `studio train --resume {run_dir}`") from None
    if stop_requested(trainer) or (rank.distributed and output.global_step < trainer.state.max_steps):  # a rank's Ctrl-C stops all
        done = last_checkpoint(run_dir)
        raise Interrupted(f"training stopped at step {output.global_step}; saved {done.name if done else 'no checkpoint'}", where=str(run_dir), fix=f"resume with `studio train --resume {run_dir}`")

    # 4. Final validation loss, the adapter (a standard peft adapter), summary and model card.
    eval_loss = None
    if has_val:
        eval_loss = float(trainer.evaluate()["eval_loss"])
    adapter_dir = run_dir / ADAPTER
    ranks = _rank_agreement(recipe, trainer) if rank.distributed else None
    _save_adapter(model, tokenizer, adapter_dir, rank.is_main)
    train_loss = _last_logged(run_dir, "train_loss") if rank.is_main else None
    if rank.is_main:
        summary = {"steps": int(output.global_step), "train_loss": train_loss, "eval_loss": eval_loss, "model_dir": str(model_dir), "device": str(device)}
        if recipe.method == "grpo":  # its loss hovers near 0 whatever happens; the reward says how it went
            summary["train_reward"] = _last_logged(run_dir, "reward")
        if ranks:
            summary["distributed"] = ranks
        write_json(run_dir / SUMMARY, summary)
        from studio.training.model_card import write_model_card

        write_model_card(run_dir)
    if rank.distributed:
        from studio.training.distributed import barrier

        barrier()  # the other ranks return once rank 0 has written everything
    return TrainResult(run_dir, adapter_dir, int(output.global_step), train_loss, eval_loss)


def method_trainer(recipe: Recipe, model, tokenizer, run_dir: Path, device, progress: bool):
    """The trainer of the recipe's method on its data, the data manifest (data.json) and whether there is
    validation data. Each method lives in its own file of studio.training; a new one is added here."""
    if recipe.method in ("dpo", "orpo"):
        from studio.training.preference import preference_trainer as build
    elif recipe.method == "grpo":
        from studio.training.grpo import grpo_trainer as build
    else:
        from studio.training.sft import sft_trainer as build
    return build(recipe, model, tokenizer, run_dir, device, progress)


def _load_or_explain(recipe: Recipe, device):
    """The base model with fresh adapters (load_for_training), with running out of GPU memory while loading
    turned into a StudioError.

    The estimator's check before loading cannot catch every case (a model whose shape it does not know, a
    GPU other processes share), and a GPU that is too small must end in an error that says what to change, not a traceback.
    """
    import torch

    from studio.modeling.loading import load_for_training

    try:
        return load_for_training(recipe, device)
    except torch.cuda.OutOfMemoryError:
        smaller = "a smaller model" if recipe.adapter_method == "qlora" else "method: qlora (4-bit base weights), a smaller model"
        raise StudioError(
            f"out of GPU memory while loading {recipe.model.name} for {recipe.adapter_method}",
            where=f"model.name={recipe.model.name}, method={recipe.method}",
            fix=f"use {smaller}, or a GPU with more free memory; `studio estimate RECIPE` shows what fits",
        ) from None


def _rank_agreement(recipe: Recipe, trainer) -> dict:
    """Every rank's adapter digest (equal when the ranks agree) and, under FSDP, the share of the model's
    bytes each rank held (about 1/N when the base is really sharded)."""
    from studio.training.distributed import (
        gather_digests,
        gather_objects,
        held_fraction,
    )

    model = trainer.model_wrapped if hasattr(trainer, "model_wrapped") else trainer.model
    info = {"strategy": recipe.distributed.strategy, "world_size": trainer.accelerator.num_processes, "accelerate_type": str(trainer.accelerator.distributed_type.value)}
    if recipe.distributed.strategy == "fsdp":
        info["held_fraction_per_rank"] = [round(f, 4) for f in gather_objects(held_fraction(model))]
    # Under FSDP the digest is of the gathered adapter: every rank must see the same whole adapter.
    digests = gather_digests(model)
    info["adapter_sha256_per_rank"] = digests
    info["ranks_agree"] = len(set(digests)) == 1
    return info


def _save_adapter(model, tokenizer, adapter_dir: Path, is_main: bool = True) -> None:
    """Save the peft adapter and the tokenizer (with the training chat template) to a temp folder, then rename.

    In a DDP run every rank holds the same adapter (summary.json records each rank's digest); rank 0 writes it.
    Under FSDP every rank first takes part in gathering the adapter's shards, then rank 0 writes it.
    """
    from studio.training.distributed import is_sharded, trainable_state

    state = trainable_state(model) if is_sharded(model) else None  # collective: before the rank check
    if not is_main:
        return
    tmp = adapter_dir.with_name(adapter_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(adapter_dir, ignore_errors=True)
    os.replace(tmp, adapter_dir)


def _last_logged(run_dir: Path, key: str) -> float | None:
    values = [r[key] for r in read_metrics(run_dir) if r.get(key) is not None]
    return float(values[-1]) if values else None
