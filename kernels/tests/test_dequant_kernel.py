"""Triton dequantization kernel (interpreter on CPU): bit-identical to the reference and bitsandbytes."""

import bitsandbytes.functional as bnbF
import pytest
import torch

from studio_kernels.nf4 import NF4Weight, dequantize_nf4_reference, quantize_nf4
from studio_kernels.ops.dequant import dequantize_nf4, dequantize_nf4_triton


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(33, 70), (5, 3), (130, 129)])
def test_triton_dequant_bit_identical(shape, out_dtype, double_quant):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 0.02
    packed, qs = bnbF.quantize_4bit(w.to(out_dtype), quant_type="nf4", compress_statistics=double_quant)
    weight = NF4Weight.from_bnb(packed, qs)
    got = dequantize_nf4_triton(weight, out_dtype)
    assert got.dtype == out_dtype and got.shape == w.shape
    assert torch.equal(got, dequantize_nf4_reference(weight, out_dtype))
    assert torch.equal(got, bnbF.dequantize_4bit(packed, qs))


def test_dequant_into_reused_buffer_and_backend_choice():
    weight = quantize_nf4(torch.randn(40, 64))
    buf = torch.full((40 * 64,), float("nan"))
    got = dequantize_nf4_triton(weight, torch.float32, out=buf)
    assert got.data_ptr() == buf.data_ptr()
    assert torch.equal(got, dequantize_nf4(weight, backend="torch"))
    with pytest.raises(ValueError, match="contiguous"):
        dequantize_nf4_triton(weight, torch.float16, out=buf)
    with pytest.raises(TypeError, match="dequantize to"):
        dequantize_nf4_triton(weight, torch.int8)
    with pytest.raises(ValueError, match="backend"):
        dequantize_nf4(weight, backend="cuda")
