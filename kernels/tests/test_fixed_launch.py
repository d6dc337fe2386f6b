"""The fixed-config chain: a config the GPU cannot hold is skipped once, then never compiled again."""

from __future__ import annotations

import pytest

from studio_kernels.ops import fixed_launch, nf4_matmul_configs as configs
from studio_kernels.triton_import import OutOfResources


class _FakeKernel:
    """Records each launch; raises OutOfResources for configs whose BLOCK_P is at least `too_big`."""

    def __init__(self, too_big: int):
        self.too_big, self.launches = too_big, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((kwargs["BLOCK_P"], kwargs["num_stages"]))
            if kwargs["BLOCK_P"] >= self.too_big:
                raise OutOfResources(kwargs["BLOCK_P"] * 1024, 16 * 1024, "shared memory")
        return launch


@pytest.fixture(autouse=True)
def _forget_choices(monkeypatch):
    monkeypatch.setattr(fixed_launch, "_chosen", {})


def _launch(kernel, chain, key=("nf4_matmul", "bf16")):
    fixed_launch.launch_first_that_fits(kernel, chain, key, lambda meta: (1,), (), {"HAS_BIAS": False})


def test_a_config_that_does_not_fit_falls_back_and_is_remembered(caplog):
    kernel = _FakeKernel(too_big=64)
    with caplog.at_level("WARNING"):
        _launch(kernel, configs.FIXED_TILED)
    assert kernel.launches == [(64, 3), (32, 2)]
    assert "does not fit this GPU" in caplog.text and "32x32x64 s2" in caplog.text
    _launch(kernel, configs.FIXED_TILED)
    assert kernel.launches[2:] == [(32, 2)]  # the failed config is not compiled again


def test_the_choice_is_per_key():
    kernel = _FakeKernel(too_big=64)
    _launch(kernel, configs.FIXED_TILED, key=("nf4_matmul", "bf16"))
    _launch(kernel, configs.FIXED_TILED, key=("nf4_matmul", "fp32"))
    assert kernel.launches == [(64, 3), (32, 2), (64, 3), (32, 2)]


def test_a_config_that_fits_launches_once():
    kernel = _FakeKernel(too_big=1024)
    _launch(kernel, configs.FIXED_SMALL)
    assert kernel.launches == [(64, 3)]


def test_when_nothing_fits_the_error_names_every_config_and_what_to_do():
    kernel = _FakeKernel(too_big=1)
    with pytest.raises(RuntimeError, match="no fixed launch configuration of nf4_matmul fits") as info:
        _launch(kernel, configs.FIXED_SMALL)
    message = str(info.value)
    assert message.count("shared memory") == len(configs.FIXED_SMALL) and "STUDIO_KERNEL_AUTOTUNE=1" in message
    assert isinstance(info.value.__cause__, OutOfResources)


def test_other_errors_are_not_swallowed():
    class Broken(_FakeKernel):
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise ValueError("a real bug")
            return launch

    with pytest.raises(ValueError, match="a real bug"):
        _launch(Broken(0), configs.FIXED_TILED)


@pytest.mark.parametrize("chain", [configs.FIXED_TILED, configs.FIXED_SMALL], ids=["tiled", "small"])
def test_each_fallback_stages_less_than_the_one_before(chain):
    """Shared memory grows with (BLOCK_M + BLOCK_P) * BLOCK_R per stage: a fallback must need less."""
    def staged(cfg):
        k = cfg.kwargs
        return (k["BLOCK_M"] + k["BLOCK_P"]) * k["BLOCK_R"] * cfg.num_stages

    sizes = [staged(c) for c in chain]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
