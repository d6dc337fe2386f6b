"""train.deterministic: the switches that make a GPU run repeat itself, and the autotune record a resume reuses."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import TrainerCallback

from studio.training.rundir import AUTOTUNE, CHECKPOINT_PREFIX, write_json


def apply_determinism(deterministic: bool) -> None:
    """Set the kernels' switch (read at every launch, inherited by the processes of a distributed run) and cuDNN's."""
    import torch

    os.environ["STUDIO_KERNEL_DETERMINISTIC"] = "1" if deterministic else "0"
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False  # benchmarking picks algorithms by timing, which varies


def restore_autotune(checkpoint: Path) -> int:
    """Load the autotuned configs saved with `checkpoint` into the kernels; return how many (0 when none were saved)."""
    from studio_kernels.autotune_record import restore

    path = checkpoint / AUTOTUNE
    if not path.is_file():
        return 0
    return restore(json.loads(path.read_text(encoding="utf-8")))


class AutotuneRecordCallback(TrainerCallback):
    """Writes the kernels' autotune choices into each checkpoint, before its manifest is written.

    A resumed run that timed its configs afresh could pick others and sum in another order; with the
    record it launches exactly what the interrupted run did.
    """

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from studio_kernels.autotune_record import choices

            write_json(Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}" / AUTOTUNE, choices())
