"""Durations as people read them (the progress bar's ETA, the Train tab's); no dependencies, so the UI can
import it without the training libraries."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """Seconds as `1h02m`, `3m05s` or `12s`."""
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
