"""Standard benchmarks through lm-evaluation-harness, on the base and the adapter with identical settings.

    studio eval RUN_DIR --tasks hellaswag,arc_easy           # tasks whose data is on this machine
    studio eval RUN_DIR --tasks my_task --task-dir tasks/     # a task YAML of your own over local files

lm-eval is an optional extra (`pip install 'adapter-studio[eval]'`). The run's model is loaded once, the way
`studio eval` loads it, and handed to the harness as a model object; the base is the same model with the
adapter disabled, so both runs share every setting (tasks, few-shot count, limit, seed, batch size) and differ
only by the adapter. The results go to eval.json under "harness" (beside what `studio eval` wrote there) and
into the model card.

Every task is resolved and its data loaded before the model is: a task the harness does not know, or a hub
task whose dataset is not on this machine (the studio never downloads one while offline), is a StudioError
naming the task, before any minute is spent loading weights.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from pathlib import Path

from studio.errors import StudioError

HARNESS = "harness"  # eval.json's key for these results
SEED = 1234  # the harness's random, numpy and torch seeds, the same for base and adapter


def _lm_eval():
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise StudioError("lm-evaluation-harness is not installed", where="--tasks",
                          fix="pip install 'adapter-studio[eval]' (it pins lm-eval), then run the command again") from None
    return lm_eval, TaskManager


def task_names(text: str | list[str]) -> list[str]:
    """Task names from `a,b c` or a list, de-duplicated in order; a StudioError when none is given."""
    names = text if isinstance(text, list) else text.replace(",", " ").split()
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise StudioError("no task named", where="--tasks", fix="name one or more lm-eval tasks, e.g. --tasks arc_easy,hellaswag")
    return names


def task_manager(names: list[str], task_dir: str | Path | None = None):
    """The harness's task index: only `task_dir`'s YAML files when they define every task named (indexing the
    harness's thousands of built-in tasks takes half a minute), else those plus the built-in ones."""
    _, TaskManager = _lm_eval()
    include = None
    if task_dir is not None:
        folder = Path(task_dir).expanduser()
        if not folder.is_dir():
            raise StudioError(f"task folder not found: {folder}", where="--task-dir", fix="name a folder of lm-eval task YAML files")
        include = str(folder.resolve())
        local = TaskManager(include_path=include, include_defaults=False)
        if all(n in local.all_tasks for n in names):
            return local
    manager = TaskManager(include_path=include)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        hints = {n: difflib.get_close_matches(n, manager.all_tasks, n=3) for n in unknown}
        said = "; ".join(f"{n} (did you mean {', '.join(h)}?)" if h else n for n, h in hints.items())
        raise StudioError(f"lm-eval knows no task {said}", where="--tasks",
                          fix="check the name with `python -m lm_eval ls tasks`, or put your task's YAML in a folder and pass --task-dir")
    return manager


def load_tasks(names: list[str], manager) -> dict:
    """Every task built with its data loaded; a StudioError naming the task whose data is not on this machine."""
    from lm_eval.tasks import get_task_dict

    tasks = {}
    for name in names:
        try:
            tasks.update(get_task_dict([name], manager))
        except Exception as exc:  # noqa: BLE001 - the harness and datasets raise many kinds; each means "no data here"
            reason = " ".join(str(exc).split())[:300]
            raise StudioError(f"task {name} cannot load its data here: {reason}", where=f"--tasks {name}",
                              fix="run it once where the hub is reachable (the dataset is then cached), or write a task YAML over "
                                  "local files (dataset_path: json, dataset_kwargs.data_files) and pass --task-dir") from None
    return tasks


def _scores(results: dict) -> dict:
    """{task: {metric: value}} from the harness's results, without its bookkeeping fields and stderr entries."""
    out = {}
    for task, values in results.items():
        out[task] = {key.split(",")[0]: value for key, value in values.items()
                     if "," in key and "_stderr" not in key and isinstance(value, (int, float))}
    return out


def run_tasks(run_dir: str | Path, tasks: str | list[str], task_dir: str | Path | None = None, limit: int | None = None,
              num_fewshot: int | None = None, batch_size: int = 8) -> dict:
    """Run lm-eval `tasks` on the run's base and adapter with identical settings; add them to eval.json and the
    model card, and return {"tasks", "settings", "scores": {task: {metric: {"base", "adapter"}}}, "lm_eval"}."""
    from studio.modeling.adapter import load_with_adapter
    from studio.training.model_card import write_model_card
    from studio.training.rundir import ADAPTER, EVAL, open_run, read_json_or_empty, write_json

    names = task_names(tasks)
    if limit is not None and limit < 1:
        raise StudioError(f"--limit must be at least 1, got {limit}", where="--limit", fix="pass a positive number of examples per task")
    lm_eval, _ = _lm_eval()
    from lm_eval.models.huggingface import HFLM

    run_dir, recipe = open_run(run_dir)
    from studio.modeling.source import resolve_model
    from studio.modeling.vision import refuse_images_unseen

    refuse_images_unseen(resolve_model(recipe.model.name, recipe.model.revision), "lm-eval's benchmark tasks", str(run_dir))
    manager = task_manager(names, task_dir)
    load_tasks(names, manager)  # before the model: a task without its data fails in seconds, not after loading
    loaded = load_with_adapter(recipe, run_dir / ADAPTER)
    model = loaded.model
    lm = HFLM(pretrained=model, tokenizer=loaded.tokenizer, batch_size=batch_size, device=str(model.device))
    settings = {"limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size, "seed": SEED}

    def evaluate() -> dict:
        out = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit, num_fewshot=num_fewshot, log_samples=False,
                                      random_seed=SEED, numpy_random_seed=SEED, torch_random_seed=SEED, fewshot_random_seed=SEED)
        return _scores(out["results"])

    with model.disable_adapter():
        base = evaluate()
    adapter = evaluate()
    scores = {task: {metric: {"base": base.get(task, {}).get(metric), "adapter": value} for metric, value in metrics.items()}
              for task, metrics in adapter.items()}
    result = {"tasks": names, "task_dir": str(Path(task_dir).resolve()) if task_dir else None, "settings": settings,
              "scores": scores, "lm_eval": importlib.metadata.version("lm_eval")}
    record = read_json_or_empty(run_dir / EVAL)
    record[HARNESS] = result
    write_json(run_dir / EVAL, record)
    write_model_card(run_dir)
    return result
