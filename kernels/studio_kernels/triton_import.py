"""Triton when this machine has it; otherwise stand-ins that let every kernel module import.

Triton publishes Linux wheels only, so on Windows and macOS (and wherever it is missing or broken) the
ops must still import and run their plain-torch references. The kernel modules import `triton` and `tl`
from here: with Triton they are the real modules; without it `triton.jit` and `triton.autotune` leave
an inert kernel behind (launching it raises, naming the import error), `triton.Config` keeps its
arguments, and `runtime.resolve_backend` never picks a Triton kernel. Nothing else changes at import.
"""

from __future__ import annotations

from types import SimpleNamespace

try:
    import triton
    import triton.language as tl
    from triton.runtime.errors import OutOfResources
except (ImportError, OSError, RuntimeError) as exc:  # absent, or installed without its compiler libraries
    IMPORT_ERROR: BaseException | None = exc
else:
    IMPORT_ERROR = None


def missing_reason() -> str:
    """Why Triton cannot be used here, for messages (empty when it can)."""
    return "" if IMPORT_ERROR is None else f"Triton is not available ({type(IMPORT_ERROR).__name__}: {IMPORT_ERROR})"


class _InertKernel:
    """What `@triton.jit` leaves without Triton: the function, which refuses to launch."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "kernel")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __getitem__(self, grid):
        raise RuntimeError(f"{missing_reason()}: the Triton kernel {self.__name__} cannot run; use backend='torch'")

    def __call__(self, *args, **kwargs):
        return self[None]


class _AbsentTriton:
    """The parts of the `triton` module the kernel modules touch at import time."""

    __version__ = None

    @staticmethod
    def jit(fn=None, **_options):
        return _InertKernel(fn) if fn is not None else _InertKernel

    @staticmethod
    def autotune(*_args, **_kwargs):
        return lambda kernel: kernel

    @staticmethod
    def Config(kwargs: dict, num_warps: int = 4, num_stages: int = 3, **extra):  # noqa: N802 (Triton's name)
        return SimpleNamespace(kwargs=dict(kwargs), num_warps=num_warps, num_stages=num_stages, **extra)

    @staticmethod
    def cdiv(a: int, b: int) -> int:
        return -(-a // b)

    @staticmethod
    def next_power_of_2(n: int) -> int:
        return 1 << max(0, int(n - 1).bit_length())

    def __getattr__(self, name):
        raise ImportError(f"{missing_reason()}: triton.{name} is not available")


class _AbsentLanguage:
    """`triton.language`: used only inside kernel bodies (never run without Triton) and in annotations."""

    def __getattr__(self, name):
        raise ImportError(f"{missing_reason()}: triton.language.{name} is not available")


if IMPORT_ERROR is not None:
    triton = _AbsentTriton()  # type: ignore[assignment]
    tl = _AbsentLanguage()  # type: ignore[assignment]

    class OutOfResources(Exception):  # type: ignore[no-redef]
        """Never raised without Triton: lets `except OutOfResources` stand in launchers."""
