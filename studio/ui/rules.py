"""The class rules a teacher sets for a shared studio's queue, and the check every change goes through."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from studio.errors import StudioError

WHOLE = ("max_queued", "max_running", "max_steps")


@dataclass(frozen=True)
class Rules:
    """The class rules a teacher sets: a paused queue starts nothing; limits per user (None: no limit) on waiting
    and running jobs; a cap on each job's optimizer steps (checked when it is queued) and minutes (it is stopped,
    with a checkpoint, when they run out)."""

    paused: bool = False
    max_queued: int | None = None
    max_running: int | None = None
    max_steps: int | None = None
    max_minutes: float | None = None


def checked_rules(changes: dict) -> dict:
    """The changes as they are saved: a limit of None or 0 lifted (None), whole-number limits as int; a StudioError
    for an unknown rule or a value that is not a positive number (a teacher's form and the API send anything)."""
    known = {f.name for f in fields(Rules)}
    out = {}
    for key, value in changes.items():
        if key not in known:
            raise StudioError(f"unknown class rule {key!r}", where="class rules", fix=f"use one of {sorted(known)}")
        if key == "paused":
            if not isinstance(value, bool):
                raise StudioError(f"paused must be true or false, got {value!r}", where="class rules", fix="pause or resume the queue")
            out[key] = value
            continue
        if value in (None, 0):
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (key in WHOLE and value != int(value)):
            raise StudioError(f"{key} must be a positive {'whole number' if key in WHOLE else 'number'}, got {value!r}", where=f"class rules: {key}",
                              fix="give a number, or leave it empty (0) for no limit")
        out[key] = int(value) if key in WHOLE else float(value)
    return out
