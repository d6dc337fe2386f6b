"""What a decode step (M <= 16) launches besides the product: the block scales are decoded once, not per call."""

from __future__ import annotations

import pytest
import torch
from fake_kernels import RecordingKernel
from torch.utils._python_dispatch import TorchDispatchMode

from studio_kernels.modules import QuantLinear
from studio_kernels.ops import nf4_matmul as ops

# The ops that decode double-quantized block scales (NF4Weight.block_scales)
SCALE_DECODING = {"aten.arange.default", "aten.floor_divide.default", "aten.index.Tensor"}


class _TorchOps(TorchDispatchMode):
    """Records every aten op run inside it: on a GPU each non-view op is a kernel launch."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))

    def launches(self) -> list[str]:
        return [op for op in self.ops if not op.startswith(("aten.view", "aten._unsafe_view", "aten.alias"))]


@pytest.fixture
def layer(monkeypatch):
    kernel = RecordingKernel()
    monkeypatch.setattr(ops, "_nf4_matmul_kernel", kernel)
    torch.manual_seed(0)
    q = QuantLinear.from_linear(nn_linear(), compute_dtype=torch.float32, backend="triton", double_quant=True)
    return q, kernel


def nn_linear():
    return torch.nn.Linear(256, 96)


def _count(q, x) -> _TorchOps:
    with _TorchOps() as seen:
        q(x)
    return seen


def test_a_decode_step_launches_the_product_and_one_zero_fill(layer):
    q, kernel = layer
    x = torch.randn(1, 256)
    first = _count(q, x)
    assert SCALE_DECODING <= set(first.ops)  # the first step decodes the scales
    before = len(kernel.launches)
    second = _count(q, x)
    assert len(kernel.launches) - before == 1
    assert not SCALE_DECODING & set(second.ops), second.ops
    assert second.launches() == ["aten.zeros.default"], second.ops  # the atomics' zeroed output, nothing else


def test_a_training_sized_call_keeps_nothing(layer):
    """Above M = 16 the scales are recomputed per call: training keeps double quantization's memory saving."""
    q, _ = layer
    x = torch.randn(40, 256)
    _count(q, x)
    assert SCALE_DECODING <= set(_count(q, x).ops)
    assert not q.nf4_weight()._kept_scales


def test_kept_scales_follow_the_weights():
    """A state-dict load changes the buffers in place: the next decode step must use the new scales."""
    torch.manual_seed(1)
    a = QuantLinear.from_linear(nn_linear(), compute_dtype=torch.float32, backend="triton")
    b = QuantLinear.from_linear(nn_linear(), compute_dtype=torch.float32, backend="triton")
    x = torch.randn(2, 256)
    a(x)  # keeps a's scales
    a.load_state_dict(b.state_dict())
    torch.testing.assert_close(a(x), b(x))
    moved = a.to(torch.float64)  # a module move drops the view (and what it kept)
    assert moved._nf4_view is None
    torch.testing.assert_close(moved(x), b(x))


def test_kept_scales_are_the_decoded_ones(layer):
    q, _ = layer
    weight = q.nf4_weight()
    fresh = weight.block_scales()
    kept = weight.block_scales(keep=True)
    assert torch.equal(fresh, kept) and weight.block_scales(keep=True) is kept
    weight.block_scales()  # a training-sized call gives the memory back
    assert not weight._kept_scales


def test_an_inference_mode_layer_decodes(layer):
    """Inference tensors have no version counter: the view cache must not need one."""
    with torch.inference_mode():
        torch.manual_seed(2)
        q = QuantLinear.from_linear(nn_linear(), compute_dtype=torch.float32, backend="torch")
        x = torch.randn(1, 256)
        torch.testing.assert_close(q(x), q(x))
