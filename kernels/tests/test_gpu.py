"""The same checks on a real GPU: compiled (autotuned) kernels against bitsandbytes' CUDA kernels.

These complement, not replace, the interpreter tests in this folder; they only run where CUDA exists.
"""

import bitsandbytes as bnb
import pytest
import torch

from studio_kernels.modules import QuantLinear
from studio_kernels.nf4 import NF4Weight, dequantize_nf4_reference, quantize_nf4
from studio_kernels.ops.dequant import dequantize_nf4_triton
from studio_kernels.ops.nf4_lora import nf4_lora_linear
from studio_kernels.ops import nf4_matmul_configs as configs
from studio_kernels.ops.nf4_matmul import _launch, nf4_linear
from studio_kernels.triton_import import OutOfResources

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

N, K = 768, 1000  # not multiples of the tiles or of 64
TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (6e-2, 3e-2)}


def _weight(dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(N, K, device="cuda", generator=g) * 0.05).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_quantize_and_dequantize_match_bitsandbytes(dtype):
    w = _weight(dtype)
    packed, qs = bnb.functional.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
    ours = quantize_nf4(w)  # "nearest" absmax rounding on CUDA, like bnb's CUDA kernel
    # bnb's CUDA kernel compares against decimal midpoint constants; allow 1-ulp tie flips
    assert (ours.packed != packed.reshape(-1)).float().mean() < 1e-4
    assert (ours.absmax_q != qs.absmax).float().mean() < 1e-3
    theirs = NF4Weight.from_bnb(packed, qs)
    expected = bnb.functional.dequantize_4bit(packed, qs)
    assert torch.equal(dequantize_nf4_triton(theirs, dtype), expected)
    assert torch.equal(dequantize_nf4_reference(theirs, dtype), expected)


@pytest.mark.parametrize("large_m", ["fused", "dequant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M", [1, 7, 16, 17, 300])
def test_cuda_matmul_forward_backward(M, dtype, large_m):
    weight = quantize_nf4(_weight(torch.float32, seed=1))
    x = torch.randn(M, K, device="cuda", dtype=dtype, requires_grad=True)
    bias = torch.randn(N, device="cuda", dtype=dtype)
    y = nf4_linear(x, weight, bias, backend="triton", large_m=large_m)
    dy = torch.randn_like(y)
    y.backward(dy)
    w = dequantize_nf4_reference(weight, dtype).float()
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(y.float(), x.detach().float() @ w.t() + bias.float(), atol=atol, rtol=rtol)
    torch.testing.assert_close(x.grad.float(), dy.float() @ w, atol=atol, rtol=rtol)


def test_cuda_matches_bitsandbytes_matmul_4bit_and_lora():
    w = _weight(torch.bfloat16, seed=2)
    packed, qs = bnb.functional.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
    weight = NF4Weight.from_bnb(packed, qs)
    for M in (1, 64):
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        torch.testing.assert_close(
            nf4_linear(x, weight, backend="triton"), bnb.matmul_4bit(x, packed.t(), quant_state=qs), atol=6e-2, rtol=3e-2
        )
    a = torch.randn(16, K, device="cuda", requires_grad=True)
    b = torch.randn(N, 16, device="cuda", requires_grad=True)
    x = torch.randn(4, 33, K, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = nf4_lora_linear(x, weight, a, b, 0.5, backend="triton")
    y.float().sum().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0 and x.grad.dtype == torch.bfloat16


def test_quant_linear_moves_to_cuda():
    """Moved to the GPU, the layer computes with its own 4-bit weight: compared against that weight dequantized
    (not the full-precision layer, whose difference is the 4-bit error, not the kernel's)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(K, N, bias=True)
    q = QuantLinear.from_linear(lin, compute_dtype=torch.bfloat16).to("cuda")
    assert q.qweight.is_cuda and q.absmax_absmax.dtype == torch.float32
    x = torch.randn(3, K, device="cuda")
    w = dequantize_nf4_reference(q.nf4_weight(), torch.bfloat16).float()
    expected = x.to(torch.bfloat16).float() @ w.t() + lin.bias.detach().cuda().to(torch.bfloat16).float()
    atol, rtol = TOL[torch.bfloat16]
    torch.testing.assert_close(q(x).float(), expected, atol=atol, rtol=rtol)


# Every distinct config of both matmul kernels (autotune lists and fixed chains), for the config-coverage
# meta-test in test_dispatch.py to compare against the config module.
MATMUL_CONFIGS = [(kind, cfg) for kind in ("tiled", "small") for cfg in configs.distinct_configs(kind)]


def _config_id(param) -> str:
    kind, cfg = param
    k = cfg.kwargs
    return f"{kind}-{k['BLOCK_M']}x{k['BLOCK_P']}x{k['BLOCK_R']}-w{cfg.num_warps}-s{cfg.num_stages}-split{k['SPLIT_R']}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("param", MATMUL_CONFIGS, ids=[_config_id(p) for p in MATMUL_CONFIGS])
def test_every_matmul_config_computes_the_product(param, dtype):
    """The autotuner may pick any config, so each is run once (forward with bias, an odd shape) for its values.

    A config the GPU cannot hold is skipped with its reason: the autotuner prunes it the same way.
    """
    kind, cfg = param
    weight = quantize_nf4(_weight(torch.float32, seed=3))
    M = 7 if kind == "small" else 300
    g = torch.Generator(device="cuda").manual_seed(4)
    x = torch.randn(M, K, device="cuda", generator=g).to(dtype)
    bias = torch.randn(N, device="cuda", generator=g).to(dtype)
    try:
        y = _launch(x, weight, transposed=True, bias=bias, config=cfg)
    except OutOfResources as exc:
        pytest.skip(f"does not fit this GPU: {exc}")
    w = dequantize_nf4_reference(weight, dtype).float()
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(y.float(), x.float() @ w.t() + bias.float(), atol=atol, rtol=rtol)
