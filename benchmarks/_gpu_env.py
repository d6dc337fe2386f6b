"""What every GPU benchmark does around its measurements: refuse without CUDA, record the machine, time, write results.

Each benchmark runs as a module of the `benchmarks` package (`python -m benchmarks.bench_nf4` from the repository
root) and imports this one as `benchmarks._gpu_env`.
torch and triton are imported inside the functions so that importing a benchmark (as the tests do) stays cheap.

Every benchmark also has a `--smoke` mode: tiny shapes on the CPU, the Triton kernels in the interpreter. Its
numbers mean nothing (the results say so); it exists so that CI runs every line of a benchmark that otherwise
only ever runs on a GPU, and a GPU session does not spend its few minutes finding a typo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

NO_CUDA_EXIT = 2  # the documented exit status of every benchmark on a machine without a CUDA device
SMOKE_NOTE = "smoke run on the CPU (Triton interpreter, tiny shapes): checks the code paths; the numbers mean nothing"


def cuda_missing(script: str, needs: str) -> bool:
    """Whether there is no CUDA device; if so, print "<script>: no CUDA device found; <needs> and needs one" on stderr."""
    import torch

    if torch.cuda.is_available():
        return False
    print(f"{script}: no CUDA device found; {needs} and needs one (--smoke runs it on the CPU at tiny shapes)", file=sys.stderr)
    return True


def start_smoke() -> str:
    """Prepare a --smoke run and return its device ("cpu"): Triton kernels must run in the interpreter.

    The interpreter is chosen when the kernels are defined, so the flag is set here, before any benchmark
    imports studio_kernels; if they were imported already without it, the smoke run could not run them.
    """
    if os.environ.get("TRITON_INTERPRET") != "1" and "studio_kernels" in sys.modules:
        raise RuntimeError("studio_kernels was imported before --smoke could set TRITON_INTERPRET=1")
    os.environ["TRITON_INTERPRET"] = "1"
    return "cpu"


def driver_version() -> str:
    """The NVIDIA driver version that nvidia-smi reports, or "unknown" when it cannot be asked."""
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def environment(device: str = "cuda", *, gpu_gib: bool = False, bitsandbytes: bool = False) -> dict:
    """GPU name, driver, CUDA, torch and triton versions; with the flags also the GPU's total GiB and bitsandbytes' version.

    Keys keep this order (gpu, gpu_gib, driver, cuda, torch, triton, bitsandbytes): the results' markdown headers
    list them as they come. On the CPU (--smoke) the "gpu" entry says so, and "note" says the numbers mean nothing.
    """
    import torch
    import triton

    if device == "cpu":
        env = {"gpu": "cpu-smoke"}
        if gpu_gib:
            env["gpu_gib"] = None
        env.update(driver="none", cuda=None)
    else:
        env = {"gpu": torch.cuda.get_device_name()}
        if gpu_gib:
            env["gpu_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 2)
        env.update(driver=driver_version(), cuda=torch.version.cuda)
    env.update(torch=torch.__version__, triton=triton.__version__)
    if bitsandbytes:
        try:
            import bitsandbytes as bnb

            env["bitsandbytes"] = bnb.__version__
        except ImportError:
            env["bitsandbytes"] = "not installed"
    if device == "cpu":
        env["note"] = SMOKE_NOTE
    return env


def synchronize(device: str) -> None:
    """Wait for the queued GPU work (a no-op on the CPU, where every op has finished when it returns)."""
    import torch

    if device != "cpu":
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    """Collect garbage and, on CUDA, return cached blocks, so each measurement starts from the same allocator state."""
    import gc

    import torch

    gc.collect()
    if device != "cpu":
        torch.cuda.empty_cache()


def reset_peak_memory(device: str) -> None:
    """Start a new peak-memory window (CUDA only: the CPU has no allocator counters to reset)."""
    import torch

    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()


def peak_allocated_gib(device: str) -> float | None:
    """torch.cuda.max_memory_allocated in GiB since the last reset; None on the CPU, where it is not measured."""
    import torch

    return None if device == "cpu" else torch.cuda.max_memory_allocated() / 2**30


def median_ms(fn: Callable[[], object], device: str, *, warmup: int = 25, rep: int = 100) -> float:
    """Median milliseconds of fn(): triton.testing.do_bench on CUDA (L2 flushed between runs), wall clock on the CPU."""
    if device != "cpu":
        from triton.testing import do_bench

        return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")
    fn()  # the interpreter's first call pays for tracing; the smoke run only needs a number, not a good one
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[1]


def first_and_mean_step(step: Callable[[], object], steps: int, warmup: int = 2, device: str = "cuda") -> tuple[float, float]:
    """Seconds of the first step() (it pays for compiling and autotuning), and the mean over `steps` timed ones after `warmup` untimed.

    The warm-up (the first step included) absorbs autotuning, allocator growth and optimizer-state creation.
    The CUDA device is synchronized around each timed span, so the time covers all the queued GPU work.
    The peak-memory counters are reset after the warm-up: torch.cuda.max_memory_allocated() and
    max_memory_reserved() read afterwards cover the timed steps only.
    """
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    synchronize(device)
    reset_peak_memory(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return first, (time.perf_counter() - start) / steps


class Results:
    """One benchmark run's results file, rewritten after every measurement so a killed run keeps what it measured.

    `<out>/<name>-<gpu>-<time>.json` holds the result dict with "complete": false until finish() writes the
    markdown table beside it and marks the JSON complete. A GPU session is short: a run cut off by its time
    limit still leaves every row measured before the cut.
    """

    def __init__(self, out: Path, name: str, env: dict):
        out.mkdir(parents=True, exist_ok=True)
        # Not Path.with_suffix: GPU names may hold dots.
        self.stem = out / f"{name}-{env['gpu'].replace(' ', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.json_path = Path(f"{self.stem}.json")
        self.md_path = Path(f"{self.stem}.md")

    def save(self, result: dict, complete: bool = False) -> None:
        """Write `result` (with its "complete" flag) atomically: a reader never sees half a file."""
        tmp = self.json_path.with_name(self.json_path.name + ".tmp")
        tmp.write_text(json.dumps({**result, "complete": complete}, indent=2))
        os.replace(tmp, self.json_path)

    def finish(self, result: dict, markdown: Callable[[], str]) -> Path:
        """Write the final JSON, then markdown() beside it; return the path without suffix.

        The markdown is rendered only once the JSON is on disk, so a formatting bug cannot lose the numbers
        of a run that took many minutes.
        """
        self.save(result, complete=True)
        self.md_path.write_text(markdown())
        print(f"wrote {self.json_path} and .md")
        return self.stem

