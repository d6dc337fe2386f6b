"""Checkpoint manifests: which checkpoints are complete and intact, so resuming never reads a torn one."""

from __future__ import annotations

import json
from pathlib import Path

from studio.data.manifest import sha256_of
from studio.training.rundir import CHECKPOINT_PREFIX, CHECKPOINTS, MANIFEST, checkpoint_step, write_json


def write_manifest(checkpoint: Path) -> None:
    """Record size and sha256 of every file of a finished checkpoint (written last, atomically)."""
    files = {str(p.relative_to(checkpoint)): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.name != MANIFEST}
    write_json(checkpoint / MANIFEST, {"step": checkpoint_step(checkpoint), "files": files})


def is_intact(checkpoint: Path) -> bool:
    """True when the checkpoint has a manifest and every file in it is present with the recorded bytes."""
    try:
        manifest = json.loads((checkpoint / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not files:
        return False
    for name, info in files.items():
        path = checkpoint / name
        if not path.is_file() or path.stat().st_size != info["bytes"] or sha256_of(path) != info["sha256"]:
            return False
    return True


def last_intact_checkpoint(folder: Path) -> Path | None:
    """The newest intact `checkpoint-N` under folder, or None."""
    if not folder.exists():
        return None
    candidates = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if checkpoint_step(p) is not None]
    for checkpoint in sorted(candidates, key=checkpoint_step, reverse=True):
        if is_intact(checkpoint):
            return checkpoint
    return None


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose manifest verifies (torn or half-written ones are skipped)."""
    return last_intact_checkpoint(Path(run_dir) / CHECKPOINTS)
