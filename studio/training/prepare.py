"""Before training: fit the recipe to the GPU, check its inputs, and create the run directory.

All of it happens before a model is loaded, so a recipe that cannot run fails in seconds, and a run
directory that already holds a run is never touched by a start that was going to fail anyway.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from studio.config.schema import Recipe
from studio.config.yaml_text import dump_recipe
from studio.env.environment import environment
from studio.errors import StudioError
from studio.training.rundir import ADAPTER, CHECKPOINTS, DATA, ENV, METRICS, RECIPE, open_run, write_atomic, write_json


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
    from studio.memory.fit import auto_fit, check_fits, check_fits_sharded
    from studio.memory.gpus import computes_bf16, detect_gpu_gib

    config = estimator_config(recipe)
    bf16 = computes_bf16(None)  # the visible GPU's own answer: pre-Ampere cards train fp16 with an fp32 adapter
    if recipe.distributed.strategy == "fsdp":
        check_fits_sharded(recipe, detect_gpu_gib(), config, bf16=bf16)  # auto_fit sizes one GPU's batch; a sharded run is checked as set
        return recipe, None
    if recipe.train.auto_fit:
        return auto_fit(recipe, detect_gpu_gib(), config, bf16=bf16)
    check_fits(recipe, detect_gpu_gib(), config, bf16=bf16)  # a clear verdict before minutes of loading
    return recipe, None


def estimator_config(recipe: Recipe) -> dict | None:
    """The model's config.json for the memory estimator when it knows no shape for the model by name (a hub
    model outside its table); None when it does.

    Such a model is resolved here (from the cache, or downloaded), as `_check_inputs` would do next anyway:
    without its config `auto_fit` can only refuse the run and `check_fits` gives no verdict.
    """
    import json

    from studio.memory.shapes import model_shape
    from studio.modeling.source import resolve_model

    if model_shape(recipe)[0] is not None:
        return None
    config = Path(resolve_model(recipe.model.name, recipe.model.revision)) / "config.json"
    return json.loads(config.read_text(encoding="utf-8")) if config.exists() else None


def resume_recipe(run_dir: str | Path) -> Recipe:
    """The recipe a run directory was started with, for `studio train --resume`."""
    run_dir, recipe = open_run(run_dir, need_adapter=False)
    output = recipe.output.model_copy(update={"dir": str(run_dir.resolve()), "name": recipe.output.name})
    return recipe.model_copy(update={"output": output})


def _check_inputs(recipe: Recipe) -> None:
    """Fail on a missing model or unreadable data now, while an existing run is still intact."""
    from studio.data import load_examples
    from studio.modeling.source import resolve_model

    resolve_model(recipe.model.name, recipe.model.revision)
    if recipe.method == "grpo":
        from studio.training.grpo_data import load_prompt_examples

        load_prompt_examples(recipe)  # the rows and every column the rewards need
        return
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
    if not run_dir.exists():
        return False
    if (run_dir / ADAPTER).exists() or (run_dir / CHECKPOINTS).exists():
        return True
    metrics = run_dir / METRICS
    if metrics.exists() and metrics.stat().st_size > 0:
        return True
    known = {RECIPE, ENV, DATA, METRICS}
    return any(p.name not in known for p in run_dir.iterdir())
