"""train.deterministic in the kernels: no split-R atomics at small M, autotune choices that round-trip, the device guard."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import pytest
import torch
from fake_kernels import RecordingKernel

from studio_kernels import autotune_record
from studio_kernels.nf4 import quantize_nf4
from studio_kernels.ops import nf4_matmul as ops
from studio_kernels.ops import nf4_matmul_configs as configs
from studio_kernels.ops.nf4_matmul import nf4_matmul_reference, nf4_matmul_triton
from studio_kernels.runtime import deterministic, on_device


@pytest.fixture
def weight():
    return quantize_nf4(torch.randn(96, 160, generator=torch.Generator().manual_seed(0)) * 0.1)


@pytest.mark.parametrize("switch, split", [("0", 2), ("1", 1)])
def test_deterministic_small_m_never_splits_r(weight, monkeypatch, switch, split):
    monkeypatch.setenv("STUDIO_KERNEL_DETERMINISTIC", switch)
    kernel = RecordingKernel()
    monkeypatch.setattr(ops, "_nf4_matmul_kernel", kernel)
    nf4_matmul_triton(torch.randn(4, 160), weight)
    assert [k["SPLIT_R"] for k in kernel.launches] == [split]


def test_the_split_free_path_computes_the_same_product(weight, monkeypatch, assert_close):
    monkeypatch.setenv("STUDIO_KERNEL_DETERMINISTIC", "1")
    x = torch.randn(5, 160)
    assert_close(nf4_matmul_triton(x, weight), nf4_matmul_reference(x, weight))


def test_the_switch_refuses_a_typo(monkeypatch):
    monkeypatch.setenv("STUDIO_KERNEL_DETERMINISTIC", "sometimes")
    with pytest.raises(ValueError, match="STUDIO_KERNEL_DETERMINISTIC must be 1 or 0"):
        deterministic()


def test_split_free_configs_are_the_split_configs_tiles():
    assert all(c.kwargs["SPLIT_R"] == 1 for c in (*configs.SPLIT_FREE_SMALL_CONFIGS, *configs.FIXED_SMALL_SPLIT_FREE))
    tiles = lambda cs: [(c.kwargs["BLOCK_P"], c.kwargs["BLOCK_R"], c.num_stages) for c in cs]  # noqa: E731
    assert tiles(configs.FIXED_SMALL_SPLIT_FREE) == tiles(configs.FIXED_SMALL)
    assert set(tiles(configs.SPLIT_FREE_SMALL_CONFIGS)) == set(tiles(configs.SMALL_CONFIGS))


def test_autotune_choices_round_trip_through_json(monkeypatch):
    tuner = ops._nf4_matmul_small
    key, cfg = (8, 4096, 4096, False, "torch.bfloat16", "torch.uint8"), tuner.configs[5]
    monkeypatch.setattr(tuner, "cache", {key: cfg})
    saved = json.loads(json.dumps(autotune_record.choices()))
    monkeypatch.setattr(tuner, "cache", {})
    assert autotune_record.restore(saved) == 1
    restored = tuner.cache[key]
    assert (restored.kwargs, restored.num_warps, restored.num_stages) == (cfg.kwargs, cfg.num_warps, cfg.num_stages)


def test_restore_ignores_what_this_version_does_not_have(monkeypatch):
    monkeypatch.setattr(ops._nf4_matmul_small, "cache", {})
    stale = {"nf4_matmul_small": [[[1, 2], {"kwargs": {"BLOCK_M": 999}, "num_warps": 4, "num_stages": 3}]],
             "a_kernel_since_removed": [[[1], {"kwargs": {}, "num_warps": 4, "num_stages": 3}]]}
    assert autotune_record.restore(stale) == 0 and ops._nf4_matmul_small.cache == {}


def test_on_device_makes_the_tensors_gpu_current(monkeypatch):
    """A model on cuda:1 must launch there, not on the current device."""
    entered = []
    monkeypatch.setattr(torch.cuda, "device", lambda device: entered.append(device) or contextlib.nullcontext())
    with on_device(SimpleNamespace(device=torch.device("cuda", 1))):
        pass
    with on_device(torch.zeros(1)):  # a CPU tensor: nothing to switch
        pass
    assert entered == [torch.device("cuda", 1)]


@pytest.mark.parametrize("launcher", ["matmul", "dequant", "cross_entropy"])
def test_every_launcher_runs_under_its_tensors_device(weight, monkeypatch, launcher):
    from studio_kernels.ops import dequant, fused_ce

    seen = []

    def record(t):
        seen.append(t)
        return contextlib.nullcontext()

    for module in (ops, dequant, fused_ce):
        monkeypatch.setattr(module, "on_device", record)
    if launcher == "matmul":
        x = torch.randn(3, 160)
        nf4_matmul_triton(x, weight)
        assert seen == [x]
    elif launcher == "dequant":
        out = dequant.dequantize_nf4_triton(weight, torch.float32)
        assert len(seen) == 1 and seen[0].data_ptr() == out.data_ptr()
    else:
        logits = torch.randn(4, 50)
        fused_ce.cross_entropy_rows_triton(logits, torch.tensor([1, 2, 3, 4]), torch.ones(1) / 4)
        assert seen and seen[0] is logits


@pytest.mark.parametrize("tuned", [True, False], ids=["autotuned", "fixed"])
@pytest.mark.parametrize("switch", ["0", "1"])
def test_a_gpu_launch_takes_the_split_free_kernels_when_asked(weight, monkeypatch, tuned, switch):
    """The compiled-GPU branches (not the interpreter's): the split-free autotuner, or the split-free fixed chain."""
    monkeypatch.setenv("STUDIO_KERNEL_DETERMINISTIC", switch)
    monkeypatch.setattr(ops, "interpreting", lambda: False)
    monkeypatch.setattr(ops, "autotuning", lambda: tuned)
    used = []
    for name in ("_nf4_matmul_small", "_nf4_matmul_small_split_free"):
        monkeypatch.setattr(ops, name, RecordingKernel(name, used))
    monkeypatch.setattr(ops, "launch_first_that_fits", lambda kernel, chain, *a: used.append(chain))
    monkeypatch.setattr(ops, "check_triton_device", lambda t: None)
    nf4_matmul_triton(torch.randn(4, 160), weight)
    split_free = switch == "1"
    if tuned:
        assert used == ["_nf4_matmul_small_split_free" if split_free else "_nf4_matmul_small"]
    else:
        assert used == [configs.FIXED_SMALL_SPLIT_FREE if split_free else configs.FIXED_SMALL]


def test_a_record_from_another_gpu_is_not_restored(monkeypatch):
    tuner = ops._nf4_matmul_small
    monkeypatch.setattr(tuner, "cache", {(8, 64, 64, False, "torch.float32"): tuner.configs[0]})
    saved = autotune_record.choices()
    monkeypatch.setattr(tuner, "cache", {})
    elsewhere = {**saved, "where": {**saved["where"], "device": "NVIDIA H100 80GB HBM3 (sm_90)"}}
    assert autotune_record.restore(elsewhere) == 0 and tuner.cache == {}
    assert autotune_record.restore({**saved, "where": {**saved["where"], "triton": "0.0"}}) == 0
    assert autotune_record.restore(saved) == 1


def test_m_is_left_unspecialized_by_the_kernel():
    """The GPU session's compile count rests on it (benchmarks/compile_plan.py)."""
    kernel = ops._nf4_matmul_kernel
    names = getattr(kernel, "do_not_specialize", None) or kernel.kwargs["do_not_specialize"]  # compiled / interpreted
    assert list(names) == ops.NOT_SPECIALIZED == ["M", "M_BUCKET"]
