"""Launch a kernel with the first fixed configuration of a chain that this GPU can hold.

A fixed configuration (no autotuning) was sized from ahead-of-time compiles (benchmarks/compile_report.py),
but a GPU, driver or Triton version can still need more shared memory than measured; Triton then raises
OutOfResources at the first launch, before the kernel touches any memory. Rather than fail the training
step, try the next, smaller configuration, and remember which one worked so each kernel variant pays for
the failed compile once per process.
"""

from __future__ import annotations

import logging

from studio_kernels.triton_import import OutOfResources

log = logging.getLogger(__name__)

_chosen: dict[tuple, int] = {}


def launch_first_that_fits(kernel, chain, key: tuple, grid, args: tuple, flags: dict) -> None:
    """Launch `kernel[grid(cfg.kwargs)](*args, **flags, **cfg)` with the first config of `chain` that fits.

    key: what the compiled binary depends on besides the config (kernel name, dtype, device, constexpr flags);
    the config that worked is remembered under it. Raises RuntimeError, naming every config tried, when none
    fits.
    """
    failures, last = [], None
    for index in range(_chosen.get(key, 0), len(chain)):
        cfg = chain[index]
        try:
            kernel[grid(cfg.kwargs)](*args, **flags, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        except OutOfResources as exc:
            failures.append(f"{describe(cfg)}: {exc}")
            last = exc
            if index + 1 < len(chain):
                log.warning("%s does not fit this GPU (%s); trying %s", describe(cfg), exc, describe(chain[index + 1]))
            continue
        _chosen[key] = index
        return
    raise RuntimeError(
        f"no fixed launch configuration of {key[0]} fits this GPU: " + "; ".join(failures)
        + ". Set STUDIO_KERNEL_AUTOTUNE=1 to search the autotuner's list, or use backend='torch'."
    ) from last


def describe(cfg) -> str:
    """A config as BLOCKS xs sN wN, for log lines and errors."""
    blocks = "x".join(str(v) for k, v in cfg.kwargs.items() if k.startswith("BLOCK_"))
    return f"{blocks} s{cfg.num_stages} w{cfg.num_warps}"
