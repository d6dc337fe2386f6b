"""Launch configurations of the fused NF4 matmul: the autotuner's candidates, and the fixed ones.

Each tile's shared memory was measured by compiling it ahead of time for sm_80/86/89/90
(benchmarks/compile_report.py, results in benchmarks/results/compile-aot-*): decoding a weight tile
stages two fp32 gathers per element, so the usual GEMM tiles do not fit.
"""

from __future__ import annotations

from studio_kernels.triton_import import triton


def _cfg(bm, bp, br, warps, stages, split=1, group=8):
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_P": bp, "BLOCK_R": br, "GROUP_M": group, "SPLIT_R": split},
        num_warps=warps,
        num_stages=stages,
    )


AUTOTUNE_KEY = ["M_BUCKET", "P", "R", "W_IS_TRANSPOSED"]


# Large-M tiles. Every config was compiled ahead of time for sm_80/86/89/90 (benchmarks/compile_report.py):
# decoding a weight tile stages two fp32 gathers (code table, block scale) per element through shared
# memory, so the usual GEMM tiles (128x256x64 s3, 128x128x64 s4, ...) need 240-336 KiB and fit no GPU.
# Kept: the three that fit 99 KiB (RTX 30xx/40xx, A10, L4: none of the old list did) and three that fit
# A100/H100 only; the autotuner drops a config a GPU cannot hold (after compiling it once).
TILED_CONFIGS = [
    _cfg(32, 64, 64, 4, 3),  # 72 KiB everywhere
    _cfg(64, 64, 64, 4, 3),  # 80 KiB on sm_86, 96 on sm_90
    _cfg(128, 128, 64, 8, 2),  # 80 KiB on sm_86, 112 on sm_90
    _cfg(64, 64, 64, 4, 4),  # 120 KiB on sm_80, 136 on sm_90
    _cfg(128, 128, 32, 4, 4),  # 120 / 136
    _cfg(128, 64, 64, 4, 4),  # 144 / 168
]


# Small-M tiles: one 16-row tile, split R to fill the SMs (the atomics need a zeroed output). 32x128 and
# 64x64 fit 99 KiB (about 70 KiB); 64x128 and 128x64 (132-136 KiB) only A100/H100-class GPUs; 64x256 and
# 128x128 (over 260 KiB, kilobytes of spills) none, so they are gone.
SMALL_CONFIGS = [
    _cfg(16, bp, br, 4, 3, split=s, group=1)
    for bp, br in ((32, 128), (64, 64), (64, 128), (128, 64))
    for s in (1, 2, 4, 8)
]


# Without autotuning (STUDIO_KERNEL_AUTOTUNE=0: GPU tests, where tuning every shape would cost minutes of
# compiling): a chain each, tried in order at the first launch (ops/fixed_launch.py). The first fits every
# GPU above in every dtype (32x64x64: 72 KiB bf16, 96 KiB fp32 on sm_86); the next ones need 5-32 KiB there
# (compile report, Triton 3.9), for a GPU or Triton version that needs more than the report measured.
FIXED_TILED = (TILED_CONFIGS[0], _cfg(32, 32, 64, 4, 2), _cfg(16, 32, 32, 4, 1))


FIXED_SMALL = (_cfg(16, 64, 64, 4, 3, split=4, group=1), _cfg(16, 32, 64, 4, 2, split=4, group=1),
               _cfg(16, 32, 32, 4, 1, split=4, group=1))


# train.deterministic (runtime.deterministic): the small-M kernel without split R, whose atomic partial sums
# land in a different order each run. The same tiles, split 1.
SPLIT_FREE_SMALL_CONFIGS = [c for c in SMALL_CONFIGS if c.kwargs["SPLIT_R"] == 1]
FIXED_SMALL_SPLIT_FREE = tuple(_cfg(16, c.kwargs["BLOCK_P"], c.kwargs["BLOCK_R"], c.num_warps, c.num_stages, split=1, group=1)
                               for c in FIXED_SMALL)


# Under the interpreter: one fixed configuration (no timing loop), large tiles because the
# interpreter's cost is per program and per op, not per element.
INTERPRET_TILED = dict(BLOCK_M=64, BLOCK_P=64, BLOCK_R=64, GROUP_M=4, SPLIT_R=1)


INTERPRET_SMALL = dict(BLOCK_M=16, BLOCK_P=64, BLOCK_R=64, GROUP_M=1, SPLIT_R=2)


INTERPRET_SMALL_SPLIT_FREE = {**INTERPRET_SMALL, "SPLIT_R": 1}


def distinct_configs(kind: str) -> list:
    """Every distinct launch config of the "tiled" or "small" kernel: its autotune list, then the fixed chain's extras.

    The GPU tests run each once and the compile report compiles each: a config only the fixed chain holds
    is launched on a GPU short of shared memory, so it must be checked like the rest.
    """
    configs, chain = (SMALL_CONFIGS, FIXED_SMALL + FIXED_SMALL_SPLIT_FREE) if kind == "small" else (TILED_CONFIGS, FIXED_TILED)
    out = []
    for cfg in (*configs, *chain):
        if not any(same_launch(cfg, seen) for seen in out):
            out.append(cfg)
    return out


def same_launch(a, b) -> bool:
    """Whether two triton.Configs launch alike (the class defines no equality of its own)."""
    return (a.kwargs, a.num_warps, a.num_stages) == (b.kwargs, b.num_warps, b.num_stages)
