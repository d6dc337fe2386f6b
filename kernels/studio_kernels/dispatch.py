"""Which NF4 matmul path serves which batch size, per GPU: measured thresholds, not guesses.

The fused kernel never writes the dequantized weight; at large M the matmul is compute-bound and
"dequantize into a reused buffer, then cuBLAS" can win instead. Where the two cross depends on the GPU,
so `benchmarks/bench_nf4.py` measures both over M and proposes the crossover, and the measured value is
kept in `dispatch.json` (package data, found through importlib.resources) under the GPU's name. A GPU missing from the table gets
DEFAULT_LARGE_M; STUDIO_NF4_LARGE_M overrides both (for tuning runs).
"""

from __future__ import annotations

import functools
import json
import os
from importlib.resources import files
from pathlib import Path

import torch

DEFAULT_LARGE_M = 1024  # until a benchmark on the GPU says otherwise
NEVER = 2**62  # "the fused kernel at every M": a threshold no batch reaches
TABLE = Path(str(files("studio_kernels") / "dispatch.json"))


def _read_table(path: Path) -> dict:
    """The measured thresholds: {gpu name: {"large_m": int | null, "source": results file}}."""
    if not path.exists():
        return {}
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=None)
def _threshold_for(gpu: str, table_path: str) -> int:
    entry = _read_table(Path(table_path)).get(gpu)
    if entry is None:
        return DEFAULT_LARGE_M
    return NEVER if entry["large_m"] is None else int(entry["large_m"])


def large_m_threshold(device: torch.device) -> int:
    """The M at and above which large_m="auto" dequantizes into a buffer for cuBLAS, on `device`.

    STUDIO_NF4_LARGE_M (an integer) wins; then the measured table for the device's GPU name; then
    DEFAULT_LARGE_M. Off CUDA (the interpreter in tests) there is no GPU name, so the default applies.
    """
    override = os.environ.get("STUDIO_NF4_LARGE_M")
    if override:
        try:
            return int(override)
        except ValueError:
            raise ValueError(f"STUDIO_NF4_LARGE_M must be an integer number of rows, got {override!r}") from None
    if device.type != "cuda":
        return DEFAULT_LARGE_M
    return _threshold_for(torch.cuda.get_device_name(device), str(TABLE))


def crossover_m(rows: list[dict]) -> int | None:
    """The smallest measured M from which dequantize + cuBLAS beats the fused kernel at every larger M and shape.

    rows: {"shape": any hashable, "M": int, "fused_ms": float, "dequant_ms": float}, forward and backward
    alike (a row per product). None when the fused kernel is as fast or faster at the largest M measured,
    i.e. the dequantize path never pays off on this GPU.
    """
    ms = sorted({r["M"] for r in rows})
    best = None
    for m in reversed(ms):  # walk down while dequant keeps winning everywhere
        at = [r for r in rows if r["M"] == m]
        if all(r["dequant_ms"] < r["fused_ms"] for r in at):
            best = m
        else:
            break
    return best


def record_threshold(gpu: str, large_m: int | None, source: str, path: Path | None = None) -> None:
    """Write the measured threshold for `gpu` into the table (default: TABLE; other GPUs' entries kept)."""
    path = path or TABLE
    table = _read_table(path)
    table[gpu] = {"large_m": large_m, "source": source}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(table.items())), indent=2) + "\n")
    os.replace(tmp, path)
    _threshold_for.cache_clear()
