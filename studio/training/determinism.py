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


def restore_autotune(checkpoint: Path, rank: int) -> int:
    """Load the configs process `rank` autotuned before `checkpoint` into the kernels; return how many (0 when
    none were saved, or they were tuned on another GPU model or Triton version)."""
    from studio_kernels.autotune_record import restore

    path = checkpoint / AUTOTUNE.format(rank=rank)
    if not path.is_file():
        return 0
    return restore(json.loads(path.read_text(encoding="utf-8")))


class AutotuneRecordCallback(TrainerCallback):
    """Every process writes its kernels' autotune choices into each checkpoint (one file per rank: each
    tuned on its own GPU), before the barrier that precedes the manifest.

    A resumed run that timed its configs afresh could pick others and sum in another order; with the
    record each process launches exactly what it did before the interruption.
    """

    def on_save(self, args, state, control, **kwargs):
        from studio_kernels.autotune_record import choices

        folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
        write_json(folder / AUTOTUNE.format(rank=args.process_index), choices())
