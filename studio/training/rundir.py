"""The run directory: the contract between training, merging, evaluation and the UI.

Every name in it is a constant here, used by every module that reads or writes the folder:

    recipe.yaml     the resolved recipe (every default filled in, paths absolute)
    env.json        versions, device, commit; auto_fit's changes
    data.json       what was trained on (sha256, counts, token lengths)
    metrics.jsonl   one line per logged step
    completions.jsonl  grpo: a sample of prompts, completions and their rewards every few steps
    adapter/        the trained adapter (standard peft format) and its tokenizer
    checkpoints/    resumable checkpoints, each with a manifest of its files
    summary.json    how training ended
    README.md       the model card
    eval.json       `studio eval` (`--forgetting` adds "forgetting");  merge.json + merged/: `studio merge`;  export.json: `studio export`;
    reproduce.json  `studio reproduce`;  accelerate.yaml: a distributed run's launcher config
    report.html     `studio report`: one self-contained page of the run's curves, scores, checks and provenance

Every file is written atomically (temp file, fsync, rename), so a crash never leaves a half-written
file that a later step would read as valid.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from studio.errors import StudioError

RECIPE = "recipe.yaml"
ENV = "env.json"
DATA = "data.json"
METRICS = "metrics.jsonl"
COMPLETIONS = "completions.jsonl"
SUMMARY = "summary.json"
ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"
CARD = "README.md"
EVAL = "eval.json"
MERGE = "merge.json"
MERGED = "merged"
EXPORT = "export.json"
EXPORTS = "export"  # folder of GGUF files (`studio export --format gguf`)
OLLAMA = "ollama"  # folder of model.gguf + Modelfile (`studio export --format ollama`)
REPRODUCE = "reproduce.json"
REPORT = "report.html"  # `studio report` (also the Export tab's Report button)
ACCELERATE = "accelerate.yaml"
CHECKPOINT_PREFIX = "checkpoint-"  # checkpoints/checkpoint-N, N the optimizer step (the Trainer's naming)
AUTOTUNE = "autotune-rank{rank}.json"  # in each checkpoint, per process: the kernels' autotuned configs, reused on resume
MANIFEST = "manifest.json"  # in each checkpoint: size and sha256 of its files, written last  # a distributed run's accelerate config (machine N > 0: accelerate-machine-N.yaml)


def write_atomic(path: Path, text: str) -> None:
    """Write text to path so readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value) -> None:
    """Atomically write value as indented JSON."""
    write_atomic(path, json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


@dataclass
class TrainResult:
    """Where a run went and how it ended (what summary.json records)."""

    run_dir: Path
    adapter_dir: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None


def train_result(run_dir: Path) -> TrainResult:
    """The result of a finished run, read from its summary.json; 0 steps when there is none (a distributed run's
    machines other than 0 write no run directory)."""
    run_dir = Path(run_dir)
    summary = read_json_or_empty(run_dir / SUMMARY)
    return TrainResult(run_dir, run_dir / ADAPTER, summary.get("steps", 0), summary.get("train_loss"), summary.get("eval_loss"))


def checkpoint_step(checkpoint: Path) -> int | None:
    """The step of a `checkpoint-N` folder, or None for a folder that is not one."""
    tail = Path(checkpoint).name.removeprefix(CHECKPOINT_PREFIX)
    return int(tail) if Path(checkpoint).name.startswith(CHECKPOINT_PREFIX) and tail.isdigit() else None


def merged_dir(run_dir: str | Path) -> Path | None:
    """Where the run's merged model is (merge.json says, since `studio merge --out` may have put it anywhere), or
    None when the run has not been merged or its merged folder is gone."""
    run_dir = Path(run_dir)
    folder = Path(read_json(run_dir / MERGE)["merged_dir"]) if (run_dir / MERGE).exists() else run_dir / MERGED
    return folder if (folder / "config.json").exists() else None


def read_json_or_empty(path: Path) -> dict:
    """A JSON object of the run directory, or {} when it is missing, damaged or not an object: for readers
    that show what they can (the model card, the UI) rather than fail."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_json(path: Path) -> dict:
    """Read a JSON file of the run directory, with a StudioError when it is missing or damaged."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudioError(f"{path.name} is missing", where=str(path), fix="is this a run directory? `studio train` creates one") from None
    except json.JSONDecodeError as exc:
        raise StudioError(f"{path.name} is not valid JSON ({exc.msg})", where=f"{path}:{exc.lineno}", fix="the file was edited or damaged; restore it or re-run training") from None


def append_metrics(run_dir: Path, record: dict, name: str = METRICS) -> None:
    """Append one line to metrics.jsonl (or another per-step log, `name`) and flush it to disk, so a watcher
    sees every step as it happens."""
    with open(Path(run_dir) / name, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_metrics(run_dir: Path, name: str = METRICS) -> list[dict]:
    """Every record of metrics.jsonl (or another per-step log, `name`, such as completions.jsonl).

    Only the last line may be incomplete (a crash, or a step being written right now): it is skipped. A
    malformed line before it means the file was damaged, and is a StudioError naming the line.
    """
    path = Path(run_dir) / name
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it yet: a torn or half-written last line
                continue
            raise StudioError(f"{name} is damaged: line {number} is not a JSON record", where=f"{path}:{number}",
                              fix="restore the file, or delete that line (the other steps' metrics are kept)") from None
    return records


def truncate_metrics(run_dir: Path, after_step: int) -> None:
    """Drop metric (and completion-sample) lines past a checkpoint's step, so a resumed run does not log those
    steps twice."""
    for name in (METRICS, COMPLETIONS):
        if name == METRICS or (Path(run_dir) / name).exists():
            kept = [r for r in read_metrics(run_dir, name) if r.get("step", 0) <= after_step]
            write_atomic(Path(run_dir) / name, "".join(json.dumps(r) + "\n" for r in kept))


def has_adapter(run_dir: str | Path) -> bool:
    """Whether the run has finished training: its adapter folder holds a peft adapter."""
    return (Path(run_dir) / ADAPTER / "adapter_config.json").exists()


def check_run_dir(run_dir: str | Path, need_adapter: bool = True) -> Path:
    """Validate that a path is a run directory (with a trained adapter when needed) and return it."""
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE).exists():
        raise StudioError(f"{run_dir} is not a run directory (no {RECIPE})", where=str(run_dir), fix="pass the folder `studio train` printed at the end")
    if need_adapter and not has_adapter(run_dir):
        raise StudioError(f"{run_dir} has no trained adapter yet", where=str(run_dir / ADAPTER), fix=f"finish training first, or resume it with `studio train --resume {run_dir}`")
    return run_dir


def open_run(run_dir: str | Path, need_adapter: bool = True):
    """(run directory, its recipe) after checking it is a run directory (with an adapter when needed)."""
    from studio.config.load import load_recipe

    run_dir = check_run_dir(run_dir, need_adapter)
    return run_dir, load_recipe(run_dir / RECIPE)


def delete_run(run_dir: str | Path) -> Path:
    """Remove a run directory: adapter, checkpoints, merged model and exports all live inside it, and the
    studio keeps no other copy of the training data (uploads stay where the user put them)."""
    import shutil

    run_dir = check_run_dir(run_dir, need_adapter=False).resolve()
    if run_dir == Path.cwd().resolve() or run_dir == Path.home().resolve() or len(run_dir.parts) < 3:
        raise StudioError(f"refusing to delete {run_dir}", where=str(run_dir), fix="pass the run directory itself")
    shutil.rmtree(run_dir)
    return run_dir
