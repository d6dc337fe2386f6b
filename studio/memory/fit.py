"""Settings that fit a GPU: the checks training runs before loading anything, and what to change when not.

`check_fits` / `check_fits_sharded` give the verdict for one GPU / a sharded run, `auto_fit` picks batch
size, gradient accumulation, checkpointing and offload that fit while keeping the effective batch,
`gpus_needed` says how many GPUs a sharded run needs, and `fit_report` puts all of it together for
`studio estimate`. `bf16` everywhere: whether "auto" precision computes in bfloat16 on the GPU (None:
from the GPU's name, see studio.memory.gpus.computes_bf16).
"""

from __future__ import annotations

import math

from studio.config.schema import Recipe
from studio.errors import StudioError
from studio.memory.formula import estimate, largest_fitting, loss_kind, peak_of, sequence_tokens, terms_for, totals
from studio.memory.gpus import computes_bf16, detect_gpu_gib, parse_gpu
from studio.memory.shapes import known_shape, model_shape


def _with_train(recipe: Recipe, **update) -> Recipe:
    return recipe.model_copy(update={"train": recipe.train.model_copy(update=update)})


def auto_fit(recipe: Recipe, gpu: float | str | None = None, model_config: dict | None = None, bf16: bool | None = None) -> tuple[Recipe, dict]:
    """A recipe that fits `gpu` (detected when None): batch size, gradient accumulation, checkpointing, offload.

    Tried in order, keeping the first that fits: the recipe's own checkpointing setting, then gradient
    checkpointing, then also the input-embedding table on the CPU (untied tables only), then also the
    layer inputs offloaded to CPU. For each, the batch size is
    the largest divisor of the effective batch (batch_size x grad_accum) that fits and is no larger than
    the recipe's, and grad_accum = effective / batch_size, so the effective batch is kept exactly. A recipe
    that already fits is returned unchanged. Returns (recipe, info) with info["changes"] as
    {dotted key: (old, new)} and info["estimate"] the fitted estimate. Raises StudioError naming the
    setting to change when not even batch 1 with offload fits.
    """
    if gpu is None:
        gpu = detect_gpu_gib()
        if gpu is None:
            raise StudioError("train.auto_fit needs a CUDA GPU to fit to, and none is visible", where="train.auto_fit", fix="set train.auto_fit: false, or run on a GPU")
        bf16 = computes_bf16(None) if bf16 is None else bf16
    bf16 = computes_bf16(gpu) if bf16 is None else bf16
    gpu_gib = parse_gpu(gpu)
    shape = known_shape(recipe, model_config)
    t = recipe.train
    effective = t.batch_size * t.grad_accum
    loss = loss_kind(recipe)
    # The recipe's own settings, then checkpointing, then the embedding table on the CPU (no cost in step
    # time for a frozen table; only untied tables move), then activation offload.
    emb = t.offload_embeddings
    ladder = [(t.gradient_checkpointing, emb, t.offload_activations)]
    steps = [(True, emb, t.offload_activations)]
    if not shape.tied:
        steps.append((True, True, t.offload_activations))
    steps.append((True, True if not shape.tied else emb, True))
    ladder += [step for step in steps if step not in ladder]
    for ckpt, emb_off, offload in ladder:
        trial = _with_train(recipe, gradient_checkpointing=ckpt, offload_embeddings=emb_off, offload_activations=offload)
        largest = largest_fitting(lambda b, r=trial: peak_of(r, shape, b, sequence_tokens(recipe), loss, bf16=bf16) <= gpu_gib, 1, t.batch_size)
        if largest < 1:
            continue
        batch = max(d for d in range(1, largest + 1) if effective % d == 0)
        fitted = _with_train(trial, batch_size=batch, grad_accum=effective // batch)
        changes = {f"train.{k}": (getattr(t, k), getattr(fitted.train, k)) for k in ("batch_size", "grad_accum", "gradient_checkpointing", "offload_embeddings", "offload_activations") if getattr(t, k) != getattr(fitted.train, k)}
        return fitted, {"changes": changes, "gpu_gib": gpu_gib, "effective_batch": effective, "estimate": estimate(fitted, gpu_gib, model_config, bf16=bf16)}
    best = _with_train(recipe, batch_size=1, grad_accum=effective, gradient_checkpointing=True, offload_embeddings=not shape.tied or t.offload_embeddings, offload_activations=True)
    result = estimate(best, gpu_gib, model_config, bf16=bf16)
    fix = []
    if result["max_length"] >= 8:
        fix.append(f"lower data.max_length to {result['max_length']} or less")
    if recipe.adapter_method != "qlora":
        fix.append("use method: qlora (4-bit base weights)")
    if not recipe.train.fused_loss:
        fix.append("set train.fused_loss: true")
    fix.append(f"use a GPU with at least {math.ceil(result['peak_gib'])} GiB")
    raise StudioError(
        f"{recipe.model.name} does not fit in {gpu_gib:g} GiB even at batch 1 with checkpointing and offload (needs ≈{result['peak_gib']:.1f} GiB)",
        where="data.max_length" if result["max_length"] >= 8 else "method" if recipe.adapter_method != "qlora" else "model.name",
        fix="; ".join(fix),
    )


def estimate_sharded(recipe: Recipe, gpu: float | str, gpus: int, model_config: dict | None = None, bf16: bool | None = None) -> dict:
    """Per-GPU memory of sharded (FSDP) training on `gpus` GPUs, in the same form as `estimate`.

    Weights, adapters, their gradients and optimizer states are sharded over the GPUs; each GPU also holds
    two unsharded copies of the largest FSDP unit (one block, or the embedding/head) being all-gathered and
    prefetched (`breakdown["gathered"]`); activations and logits are per GPU and not sharded.
    """
    gpu_gib = parse_gpu(gpu)
    shape = known_shape(recipe, model_config)
    terms = terms_for(recipe, shape, recipe.train.batch_size, sequence_tokens(recipe), loss_kind(recipe), computes_bf16(gpu) if bf16 is None else bf16)
    breakdown, allocated, reserved, peak = totals(terms, gpus)
    return {"known": True, "model": recipe.model.name, "gpus": gpus, "gpu_gib": gpu_gib, "breakdown": breakdown, "allocated_gib": allocated, "reserved_gib": reserved, "peak_gib": peak, "fits": peak <= gpu_gib, "params": terms.params, "lora_params": terms.lora_params}


def gpus_needed(recipe: Recipe, gpu: float | str, model_config: dict | None = None, max_gpus: int = 4096, bf16: bool | None = None) -> int:
    """The fewest GPUs of size `gpu` that a sharded (FSDP) run of `recipe` fits on; 1 when one GPU suffices.

    Raises StudioError when no number of GPUs helps: what is not sharded (activations, logits, the gathered
    units, the CUDA context) alone exceeds one GPU.
    """
    gpu_gib = parse_gpu(gpu)
    shape = known_shape(recipe, model_config)
    terms = terms_for(recipe, shape, recipe.train.batch_size, sequence_tokens(recipe), loss_kind(recipe), computes_bf16(gpu) if bf16 is None else bf16)
    if totals(terms, 1)[3] <= gpu_gib:
        return 1
    if totals(terms, max_gpus)[3] > gpu_gib:
        floor = totals(terms, max_gpus)[0]
        raise StudioError(
            f"{recipe.model.name} cannot fit {gpu_gib:g} GiB GPUs at any count: activations ({floor['activations']:.1f} GiB), logits and gathered layers are not sharded",
            where="train.batch_size / data.max_length",
            fix="lower train.batch_size or data.max_length, or set train.gradient_checkpointing: true",
        )
    low, high = 2, max_gpus
    while low < high:
        mid = (low + high) // 2
        if totals(terms, mid)[3] <= gpu_gib:
            high = mid
        else:
            low = mid + 1
    return low


def check_fits(recipe: Recipe, gpu: float | str, model_config: dict | None = None, bf16: bool | None = None) -> dict | None:
    """The estimator's verdict before loading anything: None when the model's shape is unknown, else
    the estimate; raises StudioError naming the settings to change when the run cannot fit `gpu`."""
    if model_shape(recipe, model_config)[0] is None:
        return None
    result = estimate(recipe, gpu, model_config, bf16=bf16)
    if result["fits"]:
        return result
    try:
        fitted, info = auto_fit(recipe, gpu, model_config, bf16=bf16)
        settings = " ".join(f"--set {key}={new}" for key, (_old, new) in info.get("changes", {}).items())
        fix = f"set train.auto_fit: true, or use {settings}" if settings else "set train.auto_fit: true"
    except StudioError as exc:
        fix = exc.fix or "use a smaller model, method qlora, or a shorter data.max_length"
    raise StudioError(
        f"this run needs about {result['peak_gib']:.1f} GiB of GPU memory but the GPU has {result['gpu_gib']:.1f} GiB free",
        where=f"train.batch_size={recipe.train.batch_size}, data.max_length={recipe.data.max_length}, method={recipe.method}",
        fix=fix,
    )


def check_fits_sharded(recipe: Recipe, gpu: float | str, model_config: dict | None = None, bf16: bool | None = None) -> dict | None:
    """The estimator's verdict for an FSDP run before loading: each of the recipe's `world_size` GPUs must
    hold its share; None when the model's shape is unknown; raises StudioError with the GPU count that fits."""
    if model_shape(recipe, model_config)[0] is None:
        return None
    gpus = recipe.distributed.world_size
    result = estimate_sharded(recipe, gpu, gpus, model_config, bf16=bf16)
    if result["fits"]:
        return result
    try:
        needed = gpus_needed(recipe, gpu, model_config, bf16=bf16)
        fix = f"train on {needed} GPUs of this size (--gpus {needed}, or more machines), or lower train.batch_size / data.max_length"
    except StudioError as exc:
        fix = exc.fix
    raise StudioError(
        f"this sharded run needs about {result['peak_gib']:.1f} GiB on each of its {gpus} GPUs but each has {result['gpu_gib']:.1f} GiB free",
        where=f"distributed.num_processes={recipe.distributed.num_processes}, num_machines={recipe.distributed.num_machines}, train.batch_size={recipe.train.batch_size}, data.max_length={recipe.data.max_length}",
        fix=fix,
    )


def fit_report(recipe: Recipe, gpu: float | str) -> dict:
    """The estimate on `gpu` plus, when it does not fit, what would: auto_fit's settings and the sharded GPU
    count (each with the reason when none helps). What `studio estimate` prints."""
    result = estimate(recipe, gpu)
    if not result["known"]:
        raise StudioError(f"no shape known for model {recipe.model.name!r}, so memory cannot be estimated", where="model.name",
                          fix="point model.name at a local folder with config.json or a .gguf file")
    report = dict(result)
    if not result["fits"]:
        try:
            report["gpus_needed"] = gpus_needed(recipe, gpu)
        except StudioError as exc:
            report["gpus_needed"], report["gpus_needed_error"] = None, exc.what
        try:
            _, info = auto_fit(recipe, gpu)
            report["auto_fit"] = {key: new for key, (_, new) in info["changes"].items()}
        except StudioError as exc:
            report["auto_fit"], report["auto_fit_error"] = None, exc.what
    return report


def shipped_estimates(gpu: float | str) -> list[dict]:
    """Each shipped recipe's name, model, method and the estimator's peak GPU memory (and fit) on `gpu`:
    what `studio recipes` lists."""
    from studio.config.load import load_recipe
    from studio.config.shipped import shipped_recipe, shipped_recipes

    rows = []
    for name in shipped_recipes():
        recipe = load_recipe(shipped_recipe(name))
        result = estimate(recipe, gpu)
        rows.append({"name": name, "model": recipe.model.name, "method": recipe.method,
                     "peak_gib": result["peak_gib"], "fits": result["fits"], "gpu_gib": result["gpu_gib"]})
    return rows
