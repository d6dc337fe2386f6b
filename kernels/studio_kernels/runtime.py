"""Where kernels can run (CUDA, or Triton's CPU interpreter with TRITON_INTERPRET=1 set before import), and
the one rule every op uses to pick its implementation for a tensor."""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from studio_kernels.triton_import import IMPORT_ERROR, missing_reason

log = logging.getLogger("studio_kernels")


def interpreting() -> bool:
    """Whether Triton kernels were defined under the interpreter (tests on CPU).

    Read at launch, not used to pick implementations at import: the interpreter flag only
    changes which launch configuration is used (a fixed one instead of autotuning).
    """
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    """Whether Triton imported on this machine (it has Linux wheels only; see triton_import)."""
    return IMPORT_ERROR is None


def triton_can_run(t: torch.Tensor) -> bool:
    """Whether a Triton kernel can take tensor `t`: a CUDA tensor, or any tensor under the interpreter."""
    return triton_available() and (t.is_cuda or interpreting())


def check_triton_device(*tensors: torch.Tensor) -> None:
    """Raise a clear error when a Triton kernel is asked to run where it cannot."""
    if not triton_available():
        raise RuntimeError(f"{missing_reason()}: the Triton kernels cannot run here; use backend='torch' (the reference path), "
                           "or install Triton (Linux: pip install triton)")
    for t in tensors:
        if not triton_can_run(t):
            raise ValueError(
                f"the Triton kernels need CUDA tensors, got a tensor on {t.device}; "
                "use backend='torch' (the reference path) on CPU, or set TRITON_INTERPRET=1 "
                "before importing studio_kernels to run the kernels in Triton's interpreter"
            )


def _switch(name: str, default: str) -> bool:
    """An on/off environment switch of the kernels; anything but the accepted spellings is refused."""
    value = os.environ.get(name, default).strip().lower()
    if value not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
        raise ValueError(f"{name} must be 1 or 0 (or true/false, on/off, yes/no), got {value!r}")
    return value in ("1", "true", "on", "yes")


def deterministic() -> bool:
    """Whether the kernels avoid run-to-run differences (STUDIO_KERNEL_DETERMINISTIC=1; the studio sets it
    from train.deterministic).

    The small-M matmul then never splits R: split partial sums meet through fp32 atomic adds, whose order,
    and so whose rounding, changes from run to run. Costs decode speed only (training's M is large).
    """
    return _switch("STUDIO_KERNEL_DETERMINISTIC", "0")


def on_device(t: torch.Tensor):
    """The context every launcher runs in: `t`'s CUDA device as the current one (a model on cuda:1 must not
    launch on cuda:0), nothing for a CPU tensor."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def autotuning() -> bool:
    """Whether compiled launches autotune (the default), or use one fixed config each (STUDIO_KERNEL_AUTOTUNE=0).

    Tuning compiles and times every candidate config once per shape, which is what a GPU test run that
    checks values at many shapes cannot afford; the benchmarks and training keep it on.
    """
    return _switch("STUDIO_KERNEL_AUTOTUNE", "1")


BACKENDS = ("auto", "triton", "torch")


def resolve_backend(backend: str, t: torch.Tensor) -> str:
    """"triton" or "torch" for an op on tensor `t`: "auto" is the Triton kernel for a CUDA tensor and the
    plain-torch reference elsewhere; an explicit choice stands ("triton" on a CPU tensor runs under
    TRITON_INTERPRET=1, as the tests do, and fails clearly without it).

    A CUDA tensor on a machine without Triton gets the reference, and the log says so once: the same
    numbers, much slower (the dense weight is rebuilt for every product).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if not t.is_cuda:
        return "torch"
    if triton_available():
        return "triton"
    _say_once(f"{missing_reason()}: the NF4 and cross-entropy kernels run their plain-torch references on the GPU "
              "(correct but slow; install Triton, or use quant.backend: bitsandbytes)")
    return "torch"


_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.warning(message)
