"""`studio doctor`: what the studio sees on this machine, one line per thing it depends on, each with a fix.

Install trouble (a CPU build of torch on a GPU machine, a CUDA mismatch, no Triton on Windows, a missing
bitsandbytes) is where most people get stuck, so this is where a user starts. Every check is independent:
one that crashes becomes a `fail` line of its own, never a traceback. Verdicts:

    ok     works as the studio needs it
    warn   works, but slower or with less than the studio can do (no GPU, no Triton, little disk)
    fail   something the studio needs is broken; the fix says what to do
    info   a fact (versions, where things are) with no verdict
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Literal

Status = Literal["ok", "warn", "fail", "info"]
MIN_PYTHON = (3, 10)
MIN_FREE_DISK_GIB = 10  # a converted 1B model, a run's checkpoints and a merged copy


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, its verdict, what was found, and what to do about it."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict:
        """The check as JSON-ready data (`studio doctor --json`)."""
        return asdict(self)


def diagnose(port: int = 7860) -> list[Check]:
    """Every check, in the order a user would fix things (Python first, the UI's port last)."""
    probes: list[tuple[str, Callable[[], Check]]] = [
        ("python", check_python),
        ("studio", check_studio),
        ("torch", check_torch),
        ("gpu", check_gpu),
        ("triton", check_triton),
        ("bitsandbytes", check_bitsandbytes),
        ("nf4 path", check_nf4_path),
        ("cache", check_cache),
        ("offline", check_offline),
        ("ui port", lambda: check_port(port)),
    ]
    checks = []
    for name, probe in probes:
        try:
            checks.append(probe())
        except Exception as exc:  # a broken install raises anything; the report must still finish
            checks.append(Check(name, "fail", f"the check itself failed: {type(exc).__name__}: {exc}", "reinstall the package it names (see the lines above)"))
    return checks


def check_python() -> Check:
    """The interpreter version against the studio's minimum."""
    version = platform.python_version()
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", "fail", f"Python {version} ({sys.executable})", f"use Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")
    return Check("python", "ok", f"Python {version} ({sys.executable})")


def check_studio() -> Check:
    """The studio's version and where it is installed from, and whether its kernels package imports."""
    from pathlib import Path

    import studio

    where = Path(studio.__file__).resolve().parent
    try:
        import studio_kernels

        kernels = f"kernels from {Path(studio_kernels.__file__).resolve().parent}"
    except ImportError as exc:
        return Check("studio", "warn", f"adapter-studio {studio.__version__} at {where}; its kernels package does not import ({exc})",
                     "install it beside the studio (`pip install ./kernels` in a checkout, or the adapter-studio-kernels wheel); "
                     "until then QLoRA runs on bitsandbytes")
    return Check("studio", "ok", f"adapter-studio {studio.__version__} at {where}; {kernels}")


def check_torch() -> Check:
    """torch's version and whether it is a CUDA build."""
    try:
        import torch
    except ImportError as exc:
        return Check("torch", "fail", f"torch does not import ({exc})", "pip install torch (the CUDA build on a machine with an NVIDIA GPU)")
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    return Check("torch", "info", f"torch {torch.__version__}, {build}")


def nvidia_smi(*query: str) -> list[str] | None:
    """nvidia-smi's CSV answer for `query` fields, one line per GPU; None when there is no driver tool."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(query)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def check_gpu() -> Check:
    """The GPU torch sees (name, driver, free and total memory), or why it sees none."""
    import torch

    smi = nvidia_smi("name", "driver_version")
    if not torch.cuda.is_available():
        if smi:
            return Check("gpu", "fail", f"a GPU is installed ({smi[0]}) but torch cannot use it ({'CPU-only build' if not torch.version.cuda else 'CUDA ' + torch.version.cuda + ' build, driver too old or GPU hidden'})",
                         "install the torch build for your driver's CUDA version (pytorch.org/get-started), and check CUDA_VISIBLE_DEVICES")
        return Check("gpu", "warn", "no CUDA GPU visible: training runs on the CPU (fine for the bundled 135M model, slow for anything larger)",
                     "on a machine with an NVIDIA GPU, install its driver and the CUDA build of torch")
    index = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    driver = smi[index].split(",")[-1].strip() if smi and len(smi) > index else "unknown"
    from studio.modeling.loading import native_bf16

    bf16 = "native bf16" if native_bf16() else "no native bf16 (trains fp16)"
    return Check("gpu", "ok", f"{torch.cuda.get_device_name(index)} (driver {driver}): {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, "
                 f"{torch.cuda.device_count()} visible, {bf16}")


def check_triton() -> Check:
    """Triton's version and whether it compiles a kernel for this GPU (the studio's NF4 kernels need that)."""
    try:
        import triton
    except ImportError as exc:
        return Check("triton", "warn", f"Triton does not import ({exc}): the studio's NF4 kernels cannot run",
                     "on Linux with an NVIDIA GPU: pip install triton; elsewhere QLoRA uses bitsandbytes (quant.backend: bitsandbytes)")
    import torch

    if not torch.cuda.is_available():
        return Check("triton", "info", f"Triton {triton.__version__}; no GPU, so kernels only run in its CPU interpreter (the tests do)")
    try:
        _compile_probe()
    except Exception as exc:  # a compiler or driver mismatch surfaces as many exception types
        return Check("triton", "fail", f"Triton {triton.__version__} cannot compile for this GPU: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}",
                     "install the Triton that matches your torch (pip install torch brings it), or set quant.backend: bitsandbytes")
    return Check("triton", "ok", f"Triton {triton.__version__} compiles and runs a kernel on this GPU")


def _compile_probe() -> None:
    """Compile and run a one-line Triton kernel on the current GPU; raises when that fails."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def _add_one(x_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=mask) + 1.0, mask=mask)

    x = torch.zeros(64, device="cuda")
    _add_one[(1,)](x, 64, BLOCK=64)
    if float(x.sum()) != 64.0:
        raise RuntimeError("the probe kernel ran but computed a wrong result")


def check_bitsandbytes() -> Check:
    """bitsandbytes' version (the other QLoRA backend, and what `quant.backend: bitsandbytes` needs)."""
    try:
        import bitsandbytes
    except ImportError as exc:
        return Check("bitsandbytes", "warn", f"bitsandbytes does not import ({exc}): quant.backend bitsandbytes is unavailable",
                     "pip install bitsandbytes (needed only for quant.backend: bitsandbytes)")
    return Check("bitsandbytes", "ok", f"bitsandbytes {bitsandbytes.__version__}")


def check_nf4_path() -> Check:
    """Which 4-bit implementation a QLoRA run would take here, and which matmul path, and why."""
    import torch

    from studio.config.schema import Recipe
    from studio.errors import StudioError
    from studio.modeling.loading import quant_backend

    try:
        backend, why = quant_backend(Recipe())
    except StudioError as exc:
        return Check("nf4 path", "fail", exc.what, exc.fix)
    if backend != "studio":
        return Check("nf4 path", "warn", f"QLoRA runs on {backend}: {why}", "see the triton and studio lines above")
    if not torch.cuda.is_available():
        return Check("nf4 path", "info", f"QLoRA runs on the studio's kernels ({why}); on this CPU through their plain-torch reference")
    from studio_kernels.dispatch import large_m_threshold

    threshold = large_m_threshold(torch.device("cuda", torch.cuda.current_device()))
    return Check("nf4 path", "ok", f"QLoRA runs on the studio's fused NF4 kernels ({why}); dequantize + cuBLAS from {threshold} rows per matmul")


def check_cache() -> Check:
    """The studio's home folder (converted models, UI state) and the free disk under it."""
    from studio.config.home import studio_home

    home = studio_home()
    probe = home
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    writable = os.access(probe, os.W_OK)
    detail = f"{home} ({'exists' if home.exists() else 'created on first use'}), {free:.1f} GiB free"
    if not writable:
        return Check("cache", "fail", detail + ", not writable", "set STUDIO_HOME to a folder you can write")
    if free < MIN_FREE_DISK_GIB:
        return Check("cache", "warn", detail, f"free some disk or set STUDIO_HOME to a disk with {MIN_FREE_DISK_GIB} GiB or more")
    return Check("cache", "ok", detail)


def check_offline() -> Check:
    """Whether the hub is switched off (HF_HUB_OFFLINE), and whether the bundled demo model is installed."""
    from studio.errors import StudioError
    from studio.modeling.source import demo_gguf_path, hub_offline

    offline = hub_offline()
    hub = "offline (HF_HUB_OFFLINE=1): only models on disk load" if offline else "online: hub models not on disk are downloaded"
    try:
        demo = f"bundled demo model at {demo_gguf_path()}"
    except StudioError as exc:
        return Check("offline", "warn", f"{hub}; {exc.what}", exc.fix)
    return Check("offline", "ok", f"{hub}; {demo}")


def check_port(port: int, host: str = "127.0.0.1") -> Check:
    """Whether `studio ui` could listen on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return Check("ui port", "warn", f"{host}:{port} is taken ({exc.strerror})", "stop what uses it, or run `studio ui --port N` with a free port")
    return Check("ui port", "ok", f"{host}:{port} is free for `studio ui`")
