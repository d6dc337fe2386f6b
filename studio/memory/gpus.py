"""GPUs: sizes by name, what a size or a name given on the command line means, and the GPU this run has.

CUDA_CONTEXT_GIB is the usual context of torch 2.x on CUDA 12 with lazy module loading (0.3 to 0.6 GiB
across cards): memory a process holds that torch.cuda.max_memory_allocated never reports.
"""

from __future__ import annotations

import math
import re

from studio.errors import StudioError

GIB = 1024**3
CUDA_CONTEXT_GIB = 0.5
DEFAULT_GPU = "24GB"  # what `studio estimate`, `studio recipes` and the UI judge a recipe against unless told

# Total memory as the driver reports it (nvidia-smi's MiB / 1024), per card sold as "N GB".
GPUS: dict[str, float] = {
    "RTX 3060": 12.0,
    "RTX 3080": 10.0,
    "RTX 3090": 24.0,
    "RTX 4060": 8.0,
    "RTX 4070": 12.0,
    "RTX 4080": 16.0,
    "RTX 4090": 24.0,
    "RTX 5090": 32.0,
    "T4": 15.0,
    "V100-16GB": 16.0,
    "V100-32GB": 32.0,
    "L4": 22.5,
    "A10G": 22.5,
    "A10": 24.0,
    "A6000": 48.0,
    "L40S": 45.0,
    "A100-40GB": 40.0,
    "A100-80GB": 80.0,
    "H100": 79.6,
    "H100 80GB": 79.6,
    "H200": 140.4,
}
# Pre-Ampere cards hold bf16 tensors but only emulate bf16 math: "auto" trains them in fp16 (with an fp32
# adapter), which the estimate must count (studio.modeling.loading.pick_dtype makes the same choice).
NO_NATIVE_BF16 = ("T4", "V100")  # name prefixes: "V100-32GB", "Tesla V100-SXM2-16GB", "Tesla T4"


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("nvidia", "").replace("geforce", "").replace("tesla", ""))


def parse_gpu(gpu: float | int | str) -> float:
    """GiB from a number, "24GB"/"24 GiB", or a GPU name from GPUS (case and punctuation ignored)."""
    if isinstance(gpu, bool):
        raise StudioError(f"not a GPU size: {gpu!r}", where="--gpu", fix="give GiB (24), a size (24GB) or a name (RTX 4090)")
    if isinstance(gpu, (int, float)):
        if not math.isfinite(gpu) or gpu <= 0:
            raise StudioError(f"GPU memory must be a positive number of GiB, got {gpu}", where="--gpu", fix="e.g. --gpu 24GB")
        return float(gpu)
    text = str(gpu).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(gib|gb|g)?", text, flags=re.IGNORECASE)
    if m:
        return parse_gpu(float(m.group(1)))
    key = _norm(text)
    table = {_norm(k): v for k, v in GPUS.items()}
    if key in table:
        return table[key]
    # "A100 80GB", "RTX 3060 12GB": a known name followed by its size
    for name, value in table.items():
        if key.startswith(name) or name.startswith(key):
            size = re.search(r"(\d+)gb$", key)
            return float(size.group(1)) if size and key.startswith(name) and not name.endswith("gb") else value
    raise StudioError(f"unknown GPU {text!r}", where="--gpu", fix=f"give its memory (e.g. 24GB) or one of: {', '.join(GPUS)}")


def detect_gpu_gib() -> float | None:
    """Memory free on the first visible CUDA GPU in GiB (what this run can have), or None without one.

    Free, not total: a GPU shared by a class or by other jobs may hold other processes' memory, and a run
    sized for the whole card would then run out of memory minutes into loading.
    """
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    # The free figure leaves out a CUDA context (this process's, or the probe's), which estimate() counts itself.
    return _free_bytes_on_first_gpu(torch) / GIB + CUDA_CONTEXT_GIB


def _free_bytes_on_first_gpu(torch) -> int:
    """Free bytes on GPU 0, asked in a short child process when this one has no CUDA context yet.

    Asking here would create one, holding about 0.5 GiB of GPU 0 for the rest of this process, and the
    launcher of a multi-GPU run lives as long as the run. If the child cannot answer, the GPU's total is used.
    """
    import subprocess
    import sys

    if torch.cuda.is_initialized():
        return torch.cuda.mem_get_info(0)[0]
    try:
        done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.mem_get_info(0)[0])"],
                              capture_output=True, text=True, timeout=120, check=True)
        return int(done.stdout.split()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return torch.cuda.get_device_properties(0).total_memory


def computes_bf16(gpu: float | int | str | None = None) -> bool:
    """Whether "auto" precision means bfloat16 on `gpu`: False for the pre-Ampere cards of the table (and, with
    `gpu` None, for the visible GPU when it lacks native bf16); True otherwise, a size alone included."""
    if gpu is None:
        import torch

        from studio.modeling.loading import native_bf16

        return not torch.cuda.is_available() or native_bf16()
    if isinstance(gpu, str):
        return not _norm(gpu).startswith(tuple(_norm(n) for n in NO_NATIVE_BF16))
    return True
