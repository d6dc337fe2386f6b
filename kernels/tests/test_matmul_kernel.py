"""Fused NF4 matmul (forward and input gradient) against the reference and bitsandbytes."""

import bitsandbytes as bnb
import pytest
import torch

from studio_kernels.nf4 import dequantize_nf4_reference, quantize_nf4
from studio_kernels.ops import nf4_matmul_configs as configs
from studio_kernels.ops.nf4_matmul import (
    NF4LinearFunction,
    _launch,
    nf4_linear,
    nf4_matmul_grad_input_reference,
    nf4_matmul_grad_input_triton,
    nf4_matmul_reference,
    nf4_matmul_triton,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# N (out) and K (in) not multiples of any tile or of the 64-element quantization block;
# K odd also makes weight rows straddle bytes.
N, K = 150, 201


@pytest.fixture(scope="module")
def weight():
    return quantize_nf4(torch.randn(N, K, generator=torch.Generator().manual_seed(0)) * 0.1)


def _truth(a, w_dense):
    """fp32 product of `a` and a weight already rounded to a's dtype."""
    return a.float() @ w_dense.float()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [1, 3, 17, 100])
def test_forward_and_grad_input_match_reference(weight, M, dtype, assert_close):
    g = torch.Generator().manual_seed(M)
    x = torch.randn(M, K, generator=g).to(dtype)
    bias = torch.randn(N, generator=g).to(dtype)
    dy = torch.randn(M, N, generator=g).to(dtype)
    w_dense = dequantize_nf4_reference(weight, dtype)

    y = nf4_matmul_triton(x, weight, bias, large_m="fused")
    assert y.dtype == dtype and y.shape == (M, N)
    assert_close(y, _truth(x, w_dense.t()) + bias.float())
    assert_close(y, nf4_matmul_reference(x, weight, bias))

    dx = nf4_matmul_grad_input_triton(dy, weight, large_m="fused")
    assert dx.dtype == dtype and dx.shape == (M, K)
    assert_close(dx, _truth(dy, w_dense))
    assert_close(dx, nf4_matmul_grad_input_reference(dy, weight))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [1, 17])
def test_matches_bitsandbytes_matmul_4bit(M, dtype, assert_close):
    g = torch.Generator().manual_seed(10 + M)
    w = (torch.randn(N, K, generator=g) * 0.1).to(dtype)
    packed, qs = bnb.functional.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
    ours = quantize_nf4(w)
    x = torch.randn(M, K, generator=g).to(dtype).requires_grad_()
    x_ours = x.detach().clone().requires_grad_()

    y_bnb = bnb.matmul_4bit(x, packed.t(), quant_state=qs)
    y_ours = nf4_linear(x_ours, ours, backend="triton", large_m="fused")
    assert_close(y_ours, y_bnb)

    dy = torch.randn(M, N, generator=g).to(dtype)
    y_bnb.backward(dy)
    y_ours.backward(dy)
    assert_close(x_ours.grad, x.grad)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_autograd_function_matches_dense_autograd(weight, backend, assert_close):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 9, K, generator=g, requires_grad=True)  # 3-D input, 18 rows
    bias = torch.randn(N, generator=g, requires_grad=True)
    y = nf4_linear(x, weight, bias, backend=backend, large_m="fused")
    assert y.shape == (2, 9, N)
    assert y.grad_fn.next_functions[0][0].name() == NF4LinearFunction.__name__ + "Backward"

    x_ref = x.detach().clone().requires_grad_()
    bias_ref = bias.detach().clone().requires_grad_()
    y_ref = torch.nn.functional.linear(x_ref, dequantize_nf4_reference(weight), bias_ref)
    dy = torch.randn(y.shape, generator=g)
    y.backward(dy)
    y_ref.backward(dy)
    assert_close(y, y_ref)
    assert_close(x.grad, x_ref.grad)
    assert_close(bias.grad, bias_ref.grad)


@pytest.mark.parametrize("large_m", ["dequant", "auto"])
def test_dequant_then_matmul_path_agrees(weight, large_m, assert_close):
    x = torch.randn(40, K, generator=torch.Generator().manual_seed(9))
    dy = torch.randn(40, N, generator=torch.Generator().manual_seed(8))
    assert_close(nf4_matmul_triton(x, weight, large_m=large_m), nf4_matmul_reference(x, weight))
    assert_close(nf4_matmul_grad_input_triton(dy, weight, large_m=large_m), nf4_matmul_grad_input_reference(dy, weight))


def test_noncontiguous_input_and_user_errors(weight, assert_close):
    x = torch.randn(K, 6).t()  # column-major rows
    assert_close(nf4_linear(x, weight, backend="triton"), nf4_matmul_reference(x.contiguous(), weight))
    with pytest.raises(ValueError, match="expects 201"):
        nf4_linear(torch.randn(3, K + 1), weight)
    with pytest.raises(TypeError, match="NF4Weight"):
        nf4_linear(torch.randn(3, K), torch.randn(N, K))
    with pytest.raises(ValueError, match="backend"):
        nf4_linear(torch.randn(3, K), weight, backend="cuda")
    with pytest.raises(ValueError, match="large_m"):
        nf4_matmul_triton(torch.randn(3, K), weight, large_m="always")
    with pytest.raises(TypeError, match="float32/float16/bfloat16"):
        nf4_matmul_triton(torch.randn(3, K).double(), weight)


def _config_id(cfg) -> str:
    k = cfg.kwargs
    return f"{k['BLOCK_M']}x{k['BLOCK_P']}x{k['BLOCK_R']}-s{cfg.num_stages}-split{k['SPLIT_R']}"


@pytest.mark.parametrize("cfg", [*configs.FIXED_TILED, *configs.FIXED_SMALL], ids=_config_id)
def test_every_fixed_fallback_config_computes_the_same_product(weight, cfg, assert_close):
    """A fallback is launched only on a GPU short of shared memory, so prove here that each one is right."""
    M = 5 if cfg.kwargs["SPLIT_R"] > 1 else 40  # split R accumulates atomically: the small-M kernel only
    g = torch.Generator().manual_seed(7)
    x, dy = torch.randn(M, K, generator=g), torch.randn(M, N, generator=g)
    assert_close(_launch(x, weight, transposed=True, bias=None, config=cfg), nf4_matmul_reference(x, weight))
    assert_close(_launch(dy, weight, transposed=False, bias=None, config=cfg), nf4_matmul_grad_input_reference(dy, weight))


# The 16-bit tl.dot (what a GPU runs for bf16/fp16 inputs) under the interpreter, in fp16: the interpreter's
# fp16 arithmetic is right (its bf16 is not). Stated tolerance: fp16 products of fp16-rounded NF4 weights,
# accumulated in fp32 by both sides, then rounded to fp16 once: a few fp16 ulps at these magnitudes.
FP16_DOT_TOLERANCE = dict(atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("M", [3, 40])
def test_the_16_bit_dot_branch_matches_the_reference_in_fp16(weight, M):
    g = torch.Generator().manual_seed(11 + M)
    x = torch.randn(M, K, generator=g).half()
    bias = torch.randn(N, generator=g).half()
    dy = torch.randn(M, N, generator=g).half()
    y = _launch(x, weight, transposed=True, bias=bias, dot_fp32=False)
    dx = _launch(dy, weight, transposed=False, bias=None, dot_fp32=False)
    assert y.dtype == dx.dtype == torch.float16
    torch.testing.assert_close(y.float(), nf4_matmul_reference(x.float(), weight) + bias.float(), **FP16_DOT_TOLERANCE)
    w16 = dequantize_nf4_reference(weight, torch.float16).float()
    torch.testing.assert_close(dx.float(), dy.float() @ w16, **FP16_DOT_TOLERANCE)


def test_a_split_config_is_refused_for_the_tiled_kernel(weight):
    x = torch.randn(40, K)
    with pytest.raises(ValueError, match="SPLIT_R must be 1"):
        _launch(x, weight, transposed=True, bias=None, config=configs.FIXED_SMALL[0])
