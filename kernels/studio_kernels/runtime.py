"""Where kernels can run (CUDA, or Triton's CPU interpreter with TRITON_INTERPRET=1 set before import), and
the one rule every op uses to pick its implementation for a tensor."""

from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """Whether Triton kernels were defined under the interpreter (tests on CPU).

    Read at launch, not used to pick implementations at import: the interpreter flag only
    changes which launch configuration is used (a fixed one instead of autotuning).
    """
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    """Whether the triton package imports at all (it is a hard dependency, but be explicit)."""
    try:
        import triton  # noqa: F401
    except ImportError:  # pragma: no cover - triton is pinned in pyproject
        return False
    return True


def triton_can_run(t: torch.Tensor) -> bool:
    """Whether a Triton kernel can take tensor `t`: a CUDA tensor, or any tensor under the interpreter."""
    return triton_available() and (t.is_cuda or interpreting())


def check_triton_device(*tensors: torch.Tensor) -> None:
    """Raise a clear error when a Triton kernel is asked to run where it cannot."""
    for t in tensors:
        if not triton_can_run(t):
            raise ValueError(
                f"the Triton kernels need CUDA tensors, got a tensor on {t.device}; "
                "use backend='torch' (the reference path) on CPU, or set TRITON_INTERPRET=1 "
                "before importing studio_kernels to run the kernels in Triton's interpreter"
            )


def autotuning() -> bool:
    """Whether compiled launches autotune (the default), or use one fixed config each (STUDIO_KERNEL_AUTOTUNE=0).

    Tuning compiles and times every candidate config once per shape, which is what a GPU test run that
    checks values at many shapes cannot afford; the benchmarks and training keep it on.
    """
    value = os.environ.get("STUDIO_KERNEL_AUTOTUNE", "1").strip().lower()
    if value not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
        raise ValueError(f"STUDIO_KERNEL_AUTOTUNE must be 1 or 0 (or true/false, on/off, yes/no), got {value!r}")
    return value in ("1", "true", "on", "yes")


BACKENDS = ("auto", "triton", "torch")


def resolve_backend(backend: str, t: torch.Tensor) -> str:
    """"triton" or "torch" for an op on tensor `t`: "auto" is the Triton kernel for a CUDA tensor and the
    plain-torch reference elsewhere; an explicit choice stands ("triton" on a CPU tensor runs under
    TRITON_INTERPRET=1, as the tests do, and fails clearly without it)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if t.is_cuda and triton_can_run(t) else "torch"
    return backend
