"""How many training jobs run at once: packed by memory on a GPU, by cores on a CPU, or a fixed number.

On a GPU (`--concurrency auto`, the default) a queued job starts beside the running ones when its estimated
peak memory plus a margin fits into the GPU's measured free memory, after setting aside what each running job
may still grow into (its own estimate and margin, less what the GPU reports it already holds). So a new job
never takes memory a running one is about to need, and a job that does not fit waits its turn. A job whose
peak cannot be estimated, or that trains on several GPUs, runs alone; with nothing running, the next job always
starts (it has the whole GPU).

On a CPU each job gets at least CORES_PER_JOB cores and its threads are capped to its share, so two jobs on
sixteen cores do not fight over the same eight.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable

from studio.memory.gpus import GIB

MARGIN_FRACTION = 0.10  # the estimator's stated accuracy on measured runs, plus allocator fragmentation
MARGIN_GIB = 0.5  # per job: what a process holds beyond the estimate (cuBLAS workspaces, NCCL, Triton's cache)
CORES_PER_JOB = 4  # a CPU job gets at least this many cores
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GpuMemory:
    """One GPU's memory as measured now: total and free bytes, and what each process holds (where reported)."""

    total: float
    free: float
    used_by_pid: dict[int, float] = field(default_factory=dict)


def probe_gpu_memory() -> GpuMemory | None:
    """The first visible GPU's memory from `nvidia-smi` (no CUDA context in this process); None without one.

    nvidia-smi, not torch: asking torch would create a CUDA context here that holds GPU memory for as long as
    the UI runs, taking it from the jobs.
    """
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    select = ["-i", visible] if visible else ["-i", "0"]
    try:
        gpu = subprocess.run([tool, *select, "--query-gpu=memory.total,memory.free,uuid", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=True).stdout.strip().splitlines()[0]
        total, free, uuid = [part.strip() for part in gpu.split(",")]
        apps = subprocess.run([tool, "--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    used = {}
    for line in apps.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3 and parts[0] == uuid and parts[1].isdigit() and parts[2].isdigit():
            used[int(parts[1])] = float(parts[2]) * 2**20
    return GpuMemory(float(total) * 2**20, float(free) * 2**20, used)


def need_bytes(peak_bytes: float) -> float:
    """What a job is given room for: its estimated peak plus the margin."""
    return peak_bytes * (1 + MARGIN_FRACTION) + MARGIN_GIB * GIB


class Packer:
    """Decides whether a queued job may start beside the running ones (`admit`), under one of three rules:
    a fixed number of jobs, memory on a GPU, or cores on a CPU (`concurrency="auto"` picks GPU or CPU)."""

    def __init__(self, concurrency: int | str = "auto", probe: Callable[[], GpuMemory | None] = probe_gpu_memory, cores: int | None = None):
        self.probe = probe
        self.cores = cores or os.cpu_count() or 1
        if concurrency == "auto":
            self.mode = "gpu" if probe() is not None else "cpu"
            self.slots = None if self.mode == "gpu" else max(1, self.cores // CORES_PER_JOB)
        else:
            self.mode, self.slots = "fixed", int(concurrency)

    def describe(self) -> str:
        """The rule in words, for the UI and the log."""
        if self.mode == "gpu":
            return f"packed by GPU memory (estimated peak + {MARGIN_FRACTION:.0%} + {MARGIN_GIB} GiB per job)"
        if self.mode == "cpu":
            return f"{self.slots} at a time ({self.cores} CPU cores, at least {CORES_PER_JOB} per job)"
        return f"at most {self.slots} at a time"

    def threads_per_job(self) -> int | None:
        """The thread cap each CPU job gets when several share the cores (None: no cap)."""
        if self.mode == "cpu" and self.slots and self.slots > 1:
            return max(1, self.cores // self.slots)
        return None

    def admit(self, job, running: list) -> bool:
        """Whether `job` may start now beside `running` (jobs with `peak_bytes`, `gpus` and `pid`)."""
        if not running:
            return True
        if self.mode != "gpu":
            return len(running) < self.slots
        if alone(job) or any(alone(r) for r in running):
            return False
        memory = self.probe()
        if memory is None:
            return False
        reserved = sum(max(0.0, need_bytes(r.peak_bytes) - memory.used_by_pid.get(r.pid, 0.0)) for r in running)
        return need_bytes(job.peak_bytes) <= memory.free - reserved


def alone(job) -> bool:
    """Whether a job needs the GPU to itself: its peak is unknown, or it trains on several GPUs."""
    return job.peak_bytes is None or bool(job.gpus and job.gpus > 1)


def recipe_peak_bytes(recipe_path: str | None, gpu_gib: float | None = None) -> float | None:
    """The estimator's peak GPU memory in bytes for training a recipe file; None when it cannot tell (an unknown
    model, a recipe that does not load)."""
    from studio.config.load import load_recipe
    from studio.errors import StudioError
    from studio.memory.formula import estimate

    if not recipe_path or not os.path.isfile(recipe_path):
        return None
    try:
        result = estimate(load_recipe(recipe_path), gpu=gpu_gib or 80.0)
    except (StudioError, OSError, ValueError, KeyError):
        return None
    return None if result.get("peak_gib") is None else float(result["peak_gib"]) * GIB
