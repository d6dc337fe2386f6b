"""Fused NF4 LoRA Function: dX, dA, dB and db against autograd on the plain-torch reference."""

import pytest
import torch

from studio_kernels.nf4 import dequantize_nf4_reference, quantize_nf4
from studio_kernels.ops.nf4_lora import NF4LoRAFunction, nf4_lora_linear

N, K, R = 96, 130, 8


def _reference(x, weight, a, b, scale, bias):
    """peft's LoRA Linear math on a dense copy of the NF4 weight, differentiated by autograd."""
    base = torch.nn.functional.linear(x, dequantize_nf4_reference(weight, x.dtype), bias)
    x_l = x.to(a.dtype)
    return (base + (x_l @ a.t() @ b.t()) * scale).to(x.dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize(
    "x_dtype,lora_dtype", [(torch.float32, torch.float32), (torch.float16, torch.float32), (torch.bfloat16, torch.float32)]
)
def test_fused_lora_gradients_match_autograd(backend, x_dtype, lora_dtype, assert_close):
    g = torch.Generator().manual_seed(1)
    weight = quantize_nf4(torch.randn(N, K, generator=g) * 0.1)
    x = torch.randn(3, 7, K, generator=g).to(x_dtype)
    # both A and B non-zero so every gradient term is exercised
    a = (torch.randn(R, K, generator=g) * 0.1).to(lora_dtype)
    b = (torch.randn(N, R, generator=g) * 0.1).to(lora_dtype)
    bias = torch.randn(N, generator=g).to(x_dtype)
    scale = 2.0
    dy = torch.randn(3, 7, N, generator=g).to(x_dtype)

    leaves = [t.clone().requires_grad_() for t in (x, a, b, bias)]
    y = nf4_lora_linear(leaves[0], weight, leaves[1], leaves[2], scale, bias=leaves[3], backend=backend)
    y.backward(dy)
    ref_leaves = [t.clone().requires_grad_() for t in (x, a, b, bias)]
    y_ref = _reference(ref_leaves[0], weight, ref_leaves[1], ref_leaves[2], scale, ref_leaves[3])
    y_ref.backward(dy)

    assert y.dtype == x_dtype and y.shape == (3, 7, N)
    assert_close(y, y_ref)
    for got, want in zip(leaves, ref_leaves):
        assert got.grad.dtype == want.grad.dtype
        assert_close(got.grad, want.grad, dtype=x_dtype)


def test_saves_no_dense_weight():
    weight = quantize_nf4(torch.randn(N, K))
    x = torch.randn(5, K, requires_grad=True)
    a = torch.randn(R, K, requires_grad=True)
    b = torch.randn(N, R, requires_grad=True)
    y = nf4_lora_linear(x, weight, a, b, 0.5, backend="torch")
    node = y.grad_fn.next_functions[0][0]
    assert node.name() == NF4LoRAFunction.__name__ + "Backward"
    saved = node.saved_tensors
    assert [t.shape for t in saved] == [x.shape, a.shape, b.shape]


def test_frozen_adapter_gets_no_gradient_and_shape_errors():
    weight = quantize_nf4(torch.randn(N, K))
    x = torch.randn(4, K, requires_grad=True)
    a = torch.randn(R, K)
    b = torch.randn(N, R, requires_grad=True)
    nf4_lora_linear(x, weight, a, b, 1.0, backend="torch").sum().backward()
    assert a.grad is None and b.grad is not None and x.grad is not None
    with pytest.raises(ValueError, match="lora_a must have shape"):
        nf4_lora_linear(x, weight, torch.randn(R, K + 1), b, 1.0)
    with pytest.raises(ValueError, match="lora_b must have shape"):
        nf4_lora_linear(x, weight, a, torch.randn(N, R + 1), 1.0)
