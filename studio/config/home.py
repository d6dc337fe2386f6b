"""Where the studio keeps its files on this machine: converted models, the UI's workspaces and job queue."""

from __future__ import annotations

import os
from pathlib import Path


def studio_home() -> Path:
    """The studio's cache and state folder: $STUDIO_HOME, else ~/.cache/adapter-studio."""
    return Path(os.environ.get("STUDIO_HOME") or Path.home() / ".cache" / "adapter-studio")
