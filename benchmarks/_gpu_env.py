"""What every GPU benchmark does around its measurements: refuse without CUDA, record the machine, write results.

Each benchmark imports it relatively when it is imported as `benchmarks.bench_x` (the tests), and as the
top-level module `_gpu_env` when it runs as `python benchmarks/bench_x.py` (its own folder is then on sys.path).
torch and triton are imported inside the functions so that importing a benchmark (as the tests do) stays cheap.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

NO_CUDA_EXIT = 2  # the documented exit status of every benchmark on a machine without a CUDA device


def cuda_missing(script: str, needs: str) -> bool:
    """Whether there is no CUDA device; if so, print "<script>: no CUDA device found; <needs> and needs one" on stderr."""
    import torch

    if torch.cuda.is_available():
        return False
    print(f"{script}: no CUDA device found; {needs} and needs one", file=sys.stderr)
    return True


def driver_version() -> str:
    """The NVIDIA driver version that nvidia-smi reports, or "unknown" when it cannot be asked."""
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def environment(*, gpu_gib: bool = False, bitsandbytes: bool = False) -> dict:
    """GPU name, driver, CUDA, torch and triton versions; with the flags also the GPU's total GiB and bitsandbytes' version.

    Keys keep this order (gpu, gpu_gib, driver, cuda, torch, triton, bitsandbytes): the results' markdown headers
    list them as they come.
    """
    import torch
    import triton

    env = {"gpu": torch.cuda.get_device_name()}
    if gpu_gib:
        env["gpu_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 2)
    env.update(driver=driver_version(), cuda=torch.version.cuda, torch=torch.__version__, triton=triton.__version__)
    if bitsandbytes:
        try:
            import bitsandbytes as bnb

            env["bitsandbytes"] = bnb.__version__
        except ImportError:
            env["bitsandbytes"] = "not installed"
    return env


def timed_steps(step: Callable[[], object], steps: int, warmup: int = 2) -> float:
    """Mean seconds of one step() over `steps` timed calls, after `warmup` untimed ones.

    The warm-up absorbs autotuning, allocator growth and optimizer-state creation. The CUDA device is
    synchronized before the timer starts and before it stops, so the time covers all the queued GPU work.
    The peak-memory counters are reset after the warm-up: torch.cuda.max_memory_allocated() and
    max_memory_reserved() read afterwards cover the timed steps only.
    """
    import torch

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def write_results(out: Path, name: str, env: dict, result: dict, markdown: Callable[[], str]) -> Path:
    """Write `result` to <out>/<name>-<gpu>-<time>.json and markdown() to the .md beside it; return that path without suffix."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{name}-{env['gpu'].replace(' ', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    # Not Path.with_suffix: GPU names may hold dots. The markdown is rendered only once the JSON is on disk,
    # so a formatting bug cannot lose the numbers of a run that took many minutes.
    Path(f"{stem}.json").write_text(json.dumps(result, indent=2))
    Path(f"{stem}.md").write_text(markdown())
    print(f"wrote {stem}.json and .md")
    return stem
