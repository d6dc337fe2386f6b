"""The software and hardware a run trained on, as env.json records it (versions, device, project commit)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path


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

    from studio import __version__

    env = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "studio": __version__,
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
    """The commit of the studio's own checkout; None for an installed wheel (or no git).

    Only a checkout whose root holds this package is asked: an installed studio may sit inside someone
    else's repository (a virtual environment in a project folder), whose commit says nothing about the studio.
    """
    root = Path(__file__).resolve().parents[2]
    if not ((root / ".git").exists() and (root / "pyproject.toml").exists()):
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
