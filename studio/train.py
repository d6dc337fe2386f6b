"""Training, top to bottom: run directory, seed, model, data, trainer with callbacks, adapter, model card.

trl's SFTTrainer does the optimisation; the studio adds its own tokenization and loss masks (so every
assistant turn and its end-of-turn token are trained, whatever the chat template), metrics, progress,
and a run directory that merge, evaluate and the UI read.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import StudioError
from .recipe import Recipe
from .recipe_io import dump_recipe, load_recipe
from .rundir import (
    ADAPTER,
    CHECKPOINTS,
    DATA,
    ENV,
    RECIPE,
    SUMMARY,
    environment,
    read_metrics,
    truncate_metrics,
    write_atomic,
    write_json,
)


class Interrupted(StudioError):
    """Training stopped by the user (Ctrl-C or the UI's stop); the run is resumable."""

    exit_code = 130


@dataclass
class TrainResult:
    """Where the run went and how it ended."""

    run_dir: Path
    adapter_dir: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None


def train(recipe: Recipe, resume: bool = False, progress: bool = True, overwrite: bool = False, worker: bool = False) -> TrainResult:
    """Fine-tune the recipe's base model and write the run directory; return where the adapter is.

    With `resume`, training continues from the run directory's last complete checkpoint. With `worker`,
    this is one process of a distributed run (started by `launch_distributed`): the run directory is
    already prepared, every rank trains, and only rank 0 writes files.
    """
    from .distributed import process_info
    from .models import pick_device, quiet_libraries

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
            from .distributed import enable_fsdp_over_gloo

            enable_fsdp_over_gloo()
    else:
        # 1. The run directory records what is about to happen before anything expensive starts.
        recipe, run_dir = prepare_run(recipe, device, resume, overwrite)
    if recipe.train.offload_activations and device.type != "cuda":
        raise StudioError("train.offload_activations moves activations from GPU to CPU memory; this run is on the CPU", where="train.offload_activations", fix="set train.offload_activations: false (or train on a GPU)")

    # 2. Seeded model with fresh adapters, and the tokenized, loss-masked data.
    from transformers import set_seed

    from .data import build_data
    from .models import load_for_training

    set_seed(recipe.train.seed)
    model, tokenizer, model_dir = _load_or_explain(recipe, device, load_for_training)
    if recipe.distributed.strategy == "fsdp" and recipe.adapter_method == "qlora":
        from .quant import make_quantized_weights_shardable

        make_quantized_weights_shardable(model)
    if recipe.method in ("dpo", "orpo"):
        from .preference import build_preference_data, build_preference_trainer

        pairs, val_pairs, manifest = build_preference_data(recipe, tokenizer)
        has_val = bool(val_pairs)
    else:
        data = build_data(recipe, tokenizer)
        manifest, has_val = data.manifest, bool(data.val)
    if rank.is_main:
        write_json(run_dir / DATA, {**manifest, "model_dir": str(model_dir)})

    # 3. The trainer, extended with callbacks only.
    import torch

    if recipe.method in ("dpo", "orpo"):
        trainer = build_preference_trainer(recipe, model, tokenizer, pairs, val_pairs, run_dir, device, training_callbacks(run_dir, progress))
    else:
        trainer = build_trainer(recipe, model, tokenizer, data, run_dir, device, progress)
    set_adapter_dtype(trainer.model, adapter_dtype(recipe, device))  # after trl's own cast, before the optimizer exists
    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and rank.is_main:
        # Steps logged after the checkpoint (or any, when there is none) will be run and logged again.
        truncate_metrics(run_dir, int(checkpoint.name.split("-")[-1]) if checkpoint else 0)
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
    if _stop_requested(trainer) or (rank.distributed and output.global_step < trainer.state.max_steps):  # a rank's Ctrl-C stops all
        done = last_checkpoint(run_dir)
        raise Interrupted(f"training stopped at step {output.global_step}; saved {done.name if done else 'no checkpoint'}", where=str(run_dir), fix=f"resume with `studio train --resume {run_dir}`")

    # 4. Final validation loss, the adapter (a standard peft adapter), summary and model card.
    eval_loss = None
    if has_val:
        eval_loss = float(trainer.evaluate()["eval_loss"])
    adapter_dir = run_dir / ADAPTER
    ranks = _rank_agreement(recipe, trainer) if rank.distributed else None
    _save_adapter(model, tokenizer, adapter_dir, rank.is_main)
    train_loss = _last_train_loss(run_dir) if rank.is_main else None
    if rank.is_main:
        summary = {"steps": int(output.global_step), "train_loss": train_loss, "eval_loss": eval_loss, "model_dir": str(model_dir), "device": str(device)}
        if ranks:
            summary["distributed"] = ranks
        write_json(run_dir / SUMMARY, summary)
        from .model_card import write_model_card

        write_model_card(run_dir)
    if rank.distributed:
        from .distributed import barrier

        barrier()  # the other ranks return once rank 0 has written everything
    return TrainResult(run_dir, adapter_dir, int(output.global_step), train_loss, eval_loss)


def _load_or_explain(recipe: Recipe, device, load):
    """`load(recipe, device)`, with running out of GPU memory while loading turned into a StudioError.

    The estimator's check before loading cannot catch every case (a model whose shape it does not know, a
    GPU other processes share), and the design promises a clear error for a GPU that is too small.
    """
    import torch

    try:
        return load(recipe, device)
    except torch.cuda.OutOfMemoryError:
        smaller = "a smaller model" if recipe.adapter_method == "qlora" else "method: qlora (4-bit base weights), a smaller model"
        raise StudioError(
            f"out of GPU memory while loading {recipe.model.name} for {recipe.adapter_method}",
            where=f"model.name={recipe.model.name}, method={recipe.method}",
            fix=f"use {smaller}, or a GPU with more free memory; `studio estimate RECIPE` shows what fits",
        ) from None


def prepare_run(recipe: Recipe, device, resume: bool, overwrite: bool) -> tuple[Recipe, Path]:
    """Fit the recipe to the GPU, check its inputs, create the run directory, write recipe.yaml and env.json.

    Done once per run, by the single process or by the launcher of a distributed run (before any worker starts).
    """
    fitted = None
    if device.type == "cuda" and not resume:
        recipe, fitted = fit_to_gpu(recipe)
    run_dir = recipe.run_dir()
    if not resume:
        _check_inputs(recipe)  # before anything in the run directory is touched (--overwrite deletes it)
    _prepare_run_dir(run_dir, resume, overwrite)
    if not resume:
        # The resolved recipe is written after auto_fit, so a resume or a reproduction uses the fitted settings.
        write_atomic(run_dir / RECIPE, dump_recipe(recipe))
        write_json(run_dir / ENV, {**environment(device), "auto_fit": fitted and {k: list(v) for k, v in fitted.get("changes", {}).items()}})
    return recipe, run_dir


def fit_to_gpu(recipe: Recipe) -> tuple[Recipe, dict | None]:
    """Check the recipe against the visible GPU before anything is loaded (with `train.auto_fit`, pick the
    settings that fit); returns the recipe to run and auto_fit's report (None when nothing was fitted)."""
    from .memory import auto_fit, check_fits, check_fits_sharded, detect_gpu_gib

    config = estimator_config(recipe)
    if recipe.distributed.strategy == "fsdp":
        check_fits_sharded(recipe, detect_gpu_gib(), config)  # auto_fit sizes one GPU's batch; a sharded run is checked as set
        return recipe, None
    if recipe.train.auto_fit:
        return auto_fit(recipe, model_config=config)
    check_fits(recipe, detect_gpu_gib(), config)  # a clear verdict before minutes of loading
    return recipe, None


def estimator_config(recipe: Recipe) -> dict | None:
    """The model's config.json for the memory estimator when it knows no shape for the model by name (a hub
    model outside its table); None when it does.

    Such a model is resolved here (from the cache, or downloaded), as `_check_inputs` would do next anyway:
    without its config `auto_fit` can only refuse the run and `check_fits` gives no verdict.
    """
    import json

    from .memory import model_shape
    from .model_source import resolve_model

    if model_shape(recipe)[0] is not None:
        return None
    config = Path(resolve_model(recipe.model.name, recipe.model.revision)) / "config.json"
    return json.loads(config.read_text(encoding="utf-8")) if config.exists() else None


def launch_distributed(recipe: Recipe, resume: bool = False, progress: bool = True, overwrite: bool = False) -> Path:
    """Prepare the run directory, write RUN_DIR/accelerate.yaml and run one worker per process through
    `accelerate launch`; return the run directory once every worker has finished."""
    from .distributed import check_launchable, launch, write_accelerate_config
    from .models import pick_device

    device = pick_device(recipe.train.device)
    cuda = device.type == "cuda"
    check_launchable(recipe, cuda)
    if recipe.distributed.machine_rank == 0:
        recipe, run_dir = prepare_run(recipe, device, resume, overwrite)
    else:
        # Machines other than 0 train but write nothing to the run directory; they only need the recipe and config.
        run_dir = recipe.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_atomic(run_dir / RECIPE, dump_recipe(recipe))
    config = write_accelerate_config(run_dir, recipe, cuda)
    code, interrupted = launch(config, run_dir, resume, progress, cuda)
    if interrupted:
        done = last_checkpoint(run_dir)
        raise Interrupted(f"training stopped; saved {done.name if done else 'no checkpoint'}", where=str(run_dir), fix=f"resume with `studio train --resume {run_dir}`")
    if code != 0:
        raise StudioError(f"a training process failed (exit status {code}); its error is printed above", where=str(run_dir), fix="fix the reported problem, then start again or `studio train --resume " + str(run_dir) + "`")
    return run_dir


def _rank_agreement(recipe: Recipe, trainer) -> dict:
    """Every rank's adapter digest (equal when the ranks agree) and, under FSDP, the share of the model's
    bytes each rank held (about 1/N when the base is really sharded)."""
    from .distributed import gather_digests, gather_objects, held_fraction

    model = trainer.model_wrapped if hasattr(trainer, "model_wrapped") else trainer.model
    info = {"strategy": recipe.distributed.strategy, "world_size": trainer.accelerator.num_processes, "accelerate_type": str(trainer.accelerator.distributed_type.value)}
    if recipe.distributed.strategy == "fsdp":
        info["held_fraction_per_rank"] = [round(f, 4) for f in gather_objects(held_fraction(model))]
    # Under FSDP the digest is of the gathered adapter: every rank must see the same whole adapter.
    digests = gather_digests(model)
    info["adapter_sha256_per_rank"] = digests
    info["ranks_agree"] = len(set(digests)) == 1
    return info


def resume_recipe(run_dir: str | Path) -> Recipe:
    """The recipe a run directory was started with, for `studio train --resume`."""
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE).exists():
        raise StudioError(f"{run_dir} is not a run directory (no {RECIPE})", where=str(run_dir), fix="pass the folder a previous `studio train` created")
    recipe = load_recipe(run_dir / RECIPE)
    output = recipe.output.model_copy(update={"dir": str(run_dir.resolve()), "name": recipe.output.name})
    return recipe.model_copy(update={"output": output})


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose manifest verifies (torn or half-written ones are skipped)."""
    from .checkpoints import last_intact_checkpoint

    return last_intact_checkpoint(Path(run_dir) / CHECKPOINTS)


def _check_inputs(recipe: Recipe) -> None:
    """Fail on a missing model or unreadable data now, while an existing run is still intact."""
    from .data import load_examples
    from .model_source import resolve_model

    resolve_model(recipe.model.name, recipe.model.revision)
    for path in (recipe.data.path, recipe.data.val_path):
        if path:
            load_examples(path, recipe.data)


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (run_dir / RECIPE).exists():
            raise StudioError(f"nothing to resume in {run_dir}", where=str(run_dir), fix="start the run without --resume")
        return
    if _holds_a_run(run_dir):
        if not overwrite:
            raise StudioError(
                f"run directory {run_dir} already holds a run",
                where="output.dir",
                fix=f"resume it with `studio train --resume {run_dir}`, pick another output.name, or pass --overwrite",
            )
    try:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudioError(f"cannot create the run directory: {exc.strerror}", where=f"output.dir: {run_dir}", fix="choose a shorter, writable output.dir / output.name") from None


def _holds_a_run(run_dir: Path) -> bool:
    """A run that trained at least a step (a run that failed while loading can simply be started again)."""
    from .rundir import METRICS

    if not run_dir.exists():
        return False
    if (run_dir / ADAPTER).exists() or (run_dir / CHECKPOINTS).exists():
        return True
    metrics = run_dir / METRICS
    if metrics.exists() and metrics.stat().st_size > 0:
        return True
    known = {RECIPE, ENV, DATA, METRICS}
    return any(p.name not in known for p in run_dir.iterdir())


def adapter_dtype(recipe: Recipe, device):
    """The dtype the adapter trains in on `device` (`lora.dtype`, see Recipe.adapter_dtype_for)."""
    import torch

    from .models import pick_dtype

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

    It is the dtype the base model was loaded in (models.pick_dtype), read from the recipe rather than from
    `model.dtype`: that property reports the first floating parameter, which is a float32 adapter weight when
    the embedding table is offloaded and the QLoRA layers hold no float weight, so a bf16 model would then
    train without autocast (and an fp16 one without loss scaling). Mixed precision is a GPU matter only.
    """
    import torch

    from .models import pick_dtype

    if device.type != "cuda":
        return None
    dtype = pick_dtype(recipe.model.dtype, device)
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def trainer_arguments(recipe: Recipe, model, run_dir: Path, device, has_val: bool) -> dict:
    """The Trainer arguments every studio trainer shares (SFT, DPO, ORPO), from the recipe."""
    import torch

    from .distributed import fsdp_state_prepared

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


def build_trainer(recipe: Recipe, model, tokenizer, data, run_dir: Path, device, progress: bool = False):
    """trl's SFTTrainer configured from the recipe, on our pre-tokenized, loss-masked examples."""
    import datasets
    from trl import SFTConfig

    t = recipe.train
    has_val = bool(data.val)
    args = SFTConfig(
        **trainer_arguments(recipe, model, run_dir, device, has_val),
        include_num_input_tokens_seen="non_padding",
        packing=recipe.data.packing,
        packing_strategy="bfd",  # whole examples only: none is split across rows
        dataloader_pin_memory=device.type == "cuda",
        optim="adamw_torch",
        activation_offloading=t.offload_activations,
        prediction_loss_only=True,  # evaluation needs the loss, not every logit
        ddp_find_unused_parameters=False,  # every adapter weight takes part in every forward pass
    )
    train_set = datasets.Dataset.from_dict({"input_ids": [e.input_ids for e in data.train], "labels": [e.labels for e in data.train]})
    val_set = None
    if has_val:
        val_set = datasets.Dataset.from_dict({"input_ids": [e.input_ids for e in data.val], "labels": [e.labels for e in data.val]})
    callbacks = training_callbacks(run_dir, progress)
    datasets.disable_progress_bars()
    if t.fused_loss:
        from .fused_loss import check_fused_loss_supported

        check_fused_loss_supported(model)
    trainer = _trainer_class(t.fused_loss)(model=model, args=args, train_dataset=train_set, eval_dataset=val_set, processing_class=tokenizer, callbacks=callbacks)
    from transformers import PrinterCallback, ProgressCallback as HFProgress

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(HFProgress)
    return trainer


def training_callbacks(run_dir: Path, progress: bool) -> list:
    """The studio's callbacks for any trl trainer: metrics, checkpoint manifests, Ctrl-C, progress bar."""
    from .callbacks import CheckpointManifestCallback, GracefulStopCallback, MetricsCallback, ProgressCallback

    from .distributed import agree_on_stop_callback, training_barrier_callback

    # The barrier comes before the manifest, so rank 0 hashes a checkpoint only when every rank has written to it.
    callbacks = [MetricsCallback(run_dir), training_barrier_callback(), CheckpointManifestCallback(), GracefulStopCallback(), agree_on_stop_callback()]
    if progress:
        callbacks.append(ProgressCallback())
    return callbacks


def _stop_requested(trainer) -> bool:
    from .callbacks import GracefulStopCallback

    return any(isinstance(cb, GracefulStopCallback) and cb.requested for cb in trainer.callback_handler.callbacks)


def _trainer_class(fused_loss: bool):
    """SFTTrainer, or (for `train.fused_loss`) SFTTrainer with only its loss replaced, trl's documented extension point."""
    from trl import SFTTrainer

    if not fused_loss:
        return SFTTrainer

    from .fused_loss import fused_causal_lm_loss

    class FusedLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = fused_causal_lm_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, {"loss": loss}) if return_outputs else loss

    return FusedLossSFTTrainer


def _save_adapter(model, tokenizer, adapter_dir: Path, is_main: bool = True) -> None:
    """Save the peft adapter and the tokenizer (with the training chat template) to a temp folder, then rename.

    In a DDP run every rank holds the same adapter (summary.json records each rank's digest); rank 0 writes it.
    Under FSDP every rank first takes part in gathering the adapter's shards, then rank 0 writes it.
    """
    from .distributed import is_sharded, trainable_state

    state = trainable_state(model) if is_sharded(model) else None  # collective: before the rank check
    if not is_main:
        return
    tmp = adapter_dir.with_name(adapter_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(adapter_dir, ignore_errors=True)
    os.replace(tmp, adapter_dir)


def _last_train_loss(run_dir: Path) -> float | None:
    losses = [r["train_loss"] for r in read_metrics(run_dir) if "train_loss" in r]
    return float(losses[-1]) if losses else None
