"""The batch-size dispatch of the NF4 matmul: measured per-GPU thresholds, the crossover rule, the override."""

import json

import pytest
import torch

import studio_kernels.ops.nf4_matmul as matmul_module
import studio_kernels.ops.nf4_matmul_configs as configs
from studio_kernels.dispatch import (
    DEFAULT_LARGE_M,
    NEVER,
    _threshold_for,
    crossover_m,
    large_m_threshold,
    record_threshold,
)
from studio_kernels.nf4 import quantize_nf4
from studio_kernels.ops.nf4_matmul import nf4_matmul_reference, nf4_matmul_triton


def _rows(times):
    """Rows for two shapes from {M: (fused_ms, dequant_ms)} (the same timings for both shapes)."""
    return [{"shape": s, "M": m, "fused_ms": f, "dequant_ms": d} for s in ("a", "b") for m, (f, d) in times.items()]


def test_crossover_is_where_dequant_wins_from_there_on():
    times = {16: (1.0, 2.0), 256: (1.0, 1.5), 2048: (1.0, 0.9), 4096: (1.0, 0.8), 8192: (1.0, 0.7)}
    assert crossover_m(_rows(times)) == 2048


def test_crossover_ignores_an_early_win_that_does_not_hold():
    # dequant wins at 256 by noise but loses at 2048: only the run of wins up to the largest M counts
    times = {256: (1.0, 0.9), 2048: (1.0, 1.1), 4096: (1.0, 0.9), 8192: (1.0, 0.8)}
    assert crossover_m(_rows(times)) == 4096


def test_crossover_needs_every_shape_to_agree():
    rows = _rows({4096: (1.0, 0.8), 8192: (1.0, 0.7)})
    rows[0]["dequant_ms"] = 1.2  # shape "a" at M=4096: the fused kernel wins there
    assert crossover_m(rows) == 8192


def test_no_crossover_when_the_fused_kernel_wins_at_the_largest_m():
    assert crossover_m(_rows({2048: (1.0, 0.9), 8192: (1.0, 1.0)})) is None


def test_table_round_trip_and_lookup(tmp_path):
    table = tmp_path / "dispatch.json"
    record_threshold("GPU A", 2048, "benchmarks/results/nf4-a.json", table)
    record_threshold("GPU B", None, "benchmarks/results/nf4-b.json", table)
    record_threshold("GPU A", 4096, "benchmarks/results/nf4-a2.json", table)  # re-measured: replaced
    saved = json.loads(table.read_text())
    assert saved == {"GPU A": {"large_m": 4096, "source": "benchmarks/results/nf4-a2.json"},
                     "GPU B": {"large_m": None, "source": "benchmarks/results/nf4-b.json"}}
    assert _threshold_for("GPU A", str(table)) == 4096
    assert _threshold_for("GPU B", str(table)) == NEVER  # measured: the fused kernel always wins
    assert _threshold_for("GPU C", str(table)) == DEFAULT_LARGE_M  # never measured
    assert _threshold_for("GPU A", str(tmp_path / "missing.json")) == DEFAULT_LARGE_M


def test_environment_override_and_its_error(monkeypatch):
    assert large_m_threshold(torch.device("cpu")) == DEFAULT_LARGE_M
    monkeypatch.setenv("STUDIO_NF4_LARGE_M", "64")
    assert large_m_threshold(torch.device("cpu")) == 64
    monkeypatch.setenv("STUDIO_NF4_LARGE_M", "lots")
    with pytest.raises(ValueError, match="STUDIO_NF4_LARGE_M must be an integer"):
        large_m_threshold(torch.device("cpu"))


@pytest.mark.parametrize("threshold, expect_dequant", [("32", True), ("4096", False)])
def test_auto_dispatch_follows_the_threshold(monkeypatch, threshold, expect_dequant):
    """large_m="auto" at M = 40 takes the dequantize path exactly when the threshold says so; same result either way."""
    weight = quantize_nf4(torch.randn(70, 96, generator=torch.Generator().manual_seed(0)) * 0.1)
    x = torch.randn(40, 96, generator=torch.Generator().manual_seed(1))
    used = []
    real = matmul_module._scratch_weight
    monkeypatch.setattr(matmul_module, "_scratch_weight", lambda w, d: used.append(True) or real(w, d))
    monkeypatch.setenv("STUDIO_NF4_LARGE_M", threshold)
    y = nf4_matmul_triton(x, weight, large_m="auto")
    assert bool(used) == expect_dequant
    torch.testing.assert_close(y, nf4_matmul_reference(x, weight), atol=2e-5, rtol=2e-5)


def test_products_past_32_bit_offsets_never_reach_the_fused_kernel(monkeypatch):
    """150k rows of a 14336-wide layer would wrap the fused kernel's offsets: "auto" dequantizes, "fused" is refused."""
    cpu = torch.device("cpu")
    monkeypatch.setenv("STUDIO_NF4_LARGE_M", str(NEVER))  # a GPU measured as "fused at every M"
    assert not matmul_module._use_dequant(100_000, "auto", cpu, 14336)  # 1.43e9 elements: still addressable
    assert matmul_module._use_dequant(150_000, "auto", cpu, 14336)  # 2.15e9: past 2**31
    with pytest.raises(ValueError, match="past the fused kernel's 32-bit offsets"):
        matmul_module._use_dequant(150_000, "fused", cpu, 14336)
    assert matmul_module._use_dequant(150_000, "dequant", cpu, 14336)


def test_fp32_on_a_gpu_leaves_the_fused_kernel_above_small_m(monkeypatch):
    """The fused kernel's fp32 dot spills registers on GPUs: "auto" sends fp32 above M = 16 to cuBLAS there."""
    monkeypatch.setenv("STUDIO_NF4_LARGE_M", "4096")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # only the device type is read
    assert matmul_module._use_dequant(17, "auto", cuda, 4096, torch.float32)
    assert not matmul_module._use_dequant(16, "auto", cuda, 4096, torch.float32)  # decode keeps the small-M kernel
    assert not matmul_module._use_dequant(17, "auto", cuda, 4096, torch.bfloat16)
    assert not matmul_module._use_dequant(17, "auto", cpu, 4096, torch.float32)  # interpreter tests keep it
    assert not matmul_module._use_dequant(17, "fused", cuda, 4096, torch.float32)  # forced: as asked


def test_autotuning_switch(monkeypatch):
    from studio_kernels.runtime import autotuning

    monkeypatch.delenv("STUDIO_KERNEL_AUTOTUNE", raising=False)
    assert autotuning()
    monkeypatch.setenv("STUDIO_KERNEL_AUTOTUNE", "0")
    assert not autotuning()
    monkeypatch.setenv("STUDIO_KERNEL_AUTOTUNE", " Off")
    assert not autotuning()
    monkeypatch.setenv("STUDIO_KERNEL_AUTOTUNE", "maybe")
    with pytest.raises(ValueError, match="STUDIO_KERNEL_AUTOTUNE must be 1 or 0"):
        autotuning()


def test_every_config_fits_the_smallest_gpu_or_is_one_of_the_big_gpu_extras():
    """The config lists as compile_report.py measured them: no tile shape that fits no GPU at all is left."""
    never_fit = {(128, 256, 64), (256, 128, 64), (64, 128, 64)}  # 216-336 KiB at any stage count tried
    tiled = [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_P"], c.kwargs["BLOCK_R"]) for c in configs.TILED_CONFIGS]
    assert not never_fit & set(tiled) and len(tiled) == len(set((*t, c.num_stages) for t, c in zip(tiled, configs.TILED_CONFIGS)))
    small = {(c.kwargs["BLOCK_P"], c.kwargs["BLOCK_R"]) for c in configs.SMALL_CONFIGS}
    assert not small & {(64, 256), (128, 128)}
    first_small = configs.FIXED_SMALL[0]
    assert (first_small.kwargs["BLOCK_P"], first_small.kwargs["BLOCK_R"]) in small and configs.FIXED_TILED[0] in configs.TILED_CONFIGS


def test_the_gpu_tests_run_every_distinct_matmul_config():
    """Config coverage: a config added to an autotune list or a fixed chain is run on the GPU too."""
    import test_gpu

    every = [(kind, cfg) for kind, chain, listed in (("tiled", configs.FIXED_TILED, configs.TILED_CONFIGS),
                                                     ("small", configs.FIXED_SMALL, configs.SMALL_CONFIGS))
             for cfg in (*listed, *chain)]
    covered = test_gpu.MATMUL_CONFIGS
    for kind, cfg in every:
        assert any(k == kind and configs.same_launch(cfg, c) for k, c in covered), (kind, cfg)
    assert len(covered) == len({(k, str(c.kwargs), c.num_warps, c.num_stages) for k, c in covered})  # each once
    assert {kind for kind, _ in covered} == {"tiled", "small"}
