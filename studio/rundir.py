"""The run directory: the contract between training, merging, evaluation and the UI.

Layout: recipe.yaml (resolved), env.json, data.json, metrics.jsonl, adapter/, checkpoints/, README.md,
summary.json. Every file is written atomically (temp file, fsync, rename), so a crash never leaves a
half-written file that a later step would read as valid.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .errors import StudioError

RECIPE = "recipe.yaml"
ENV = "env.json"
DATA = "data.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"
CARD = "README.md"


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


def read_json(path: Path) -> dict:
    """Read a JSON file of the run directory, with a StudioError when it is missing or damaged."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudioError(f"{path.name} is missing", where=str(path), fix="is this a run directory? `studio train` creates one") from None
    except json.JSONDecodeError as exc:
        raise StudioError(f"{path.name} is not valid JSON ({exc.msg})", where=f"{path}:{exc.lineno}", fix="the file was edited or damaged; restore it or re-run training") from None


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append one line to metrics.jsonl and flush it to disk, so a watcher sees every step as it happens."""
    with open(run_dir / METRICS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_metrics(run_dir: Path) -> list[dict]:
    """Every complete line of metrics.jsonl (a torn last line from a crash is ignored)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(run_dir: Path, after_step: int) -> None:
    """Drop metric lines past a checkpoint's step, so a resumed run does not log those steps twice."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= after_step]
    write_atomic(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def check_run_dir(run_dir: str | Path, need_adapter: bool = True) -> Path:
    """Validate that a path is a run directory (with a trained adapter when needed) and return it."""
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE).exists():
        raise StudioError(f"{run_dir} is not a run directory (no {RECIPE})", where=str(run_dir), fix="pass the folder `studio train` printed at the end")
    if need_adapter and not (run_dir / ADAPTER / "adapter_config.json").exists():
        raise StudioError(f"{run_dir} has no trained adapter yet", where=str(run_dir / ADAPTER), fix=f"finish training first, or resume it with `studio train --resume {run_dir}`")
    return run_dir


def environment(device=None) -> dict:
    """Versions, device and project commit: what env.json records to make a run reproducible.

    `device` is where the run trains (a torch.device); a run on the CPU records the CPU even where a GPU is
    visible. Without it the first visible GPU is recorded when there is one.
    """
    import accelerate
    import peft
    import torch
    import transformers
    import trl

    env = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "trl": trl.__version__,
            "accelerate": accelerate.__version__,
        },
        "device": "cpu",
        "project_commit": _git_commit(),
    }
    try:
        import bitsandbytes

        env["packages"]["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        pass
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        env["device"] = torch.cuda.get_device_name(0 if device is None or device.index is None else device.index)
        env["cuda"] = torch.version.cuda
    else:
        env["cpu_count"] = os.cpu_count()
    return env


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def delete_run(run_dir: str | Path) -> Path:
    """Remove a run directory: adapter, checkpoints, merged model and exports all live inside it, and the
    studio keeps no other copy of the training data (uploads stay where the user put them)."""
    import shutil

    run_dir = check_run_dir(run_dir, need_adapter=False).resolve()
    if run_dir == Path.cwd().resolve() or run_dir == Path.home().resolve() or len(run_dir.parts) < 3:
        raise StudioError(f"refusing to delete {run_dir}", where=str(run_dir), fix="pass the run directory itself")
    shutil.rmtree(run_dir)
    return run_dir
