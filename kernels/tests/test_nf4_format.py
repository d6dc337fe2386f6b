"""NF4 format: byte-for-byte and bit-for-bit agreement with bitsandbytes 0.50 on CPU."""

import bitsandbytes.functional as bnbF
import pytest
import torch

from studio_kernels.nf4 import (
    NF4Weight,
    _quantize_8bit_blockwise,
    dequantize_nf4_reference,
    dynamic_code,
    nf4_code,
    quantize_nf4,
)

SHAPES = [(33, 70), (7, 9), (64, 64), (300, 513)]  # odd counts, partial 64- and 256-blocks
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _weight(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * 0.05
    w.view(-1)[::97] *= 8  # outliers make block absmax vary, exercising double quantization
    return w.to(dtype)


def test_code_tables_match_bitsandbytes():
    assert torch.equal(nf4_code(), bnbF.get_4bit_type("nf4", device="cpu"))
    assert torch.equal(dynamic_code(), bnbF.create_dynamic_map())


def test_even_element_is_high_nibble():
    w = torch.tensor([[-1.0, 1.0, 0.0]])  # indices 0, 15, 7; odd count pads with 7
    q = quantize_nf4(w, double_quant=False)
    assert q.packed.tolist() == [0x0F, 0x77]
    assert torch.equal(dequantize_nf4_reference(q), w)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bytes_equal_bitsandbytes(shape, dtype, double_quant):
    w = _weight(shape, dtype)
    packed, qs = bnbF.quantize_4bit(w, quant_type="nf4", compress_statistics=double_quant)
    ours = quantize_nf4(w, double_quant=double_quant)
    assert torch.equal(ours.packed, packed.reshape(-1))
    if double_quant:
        assert torch.equal(ours.absmax_q, qs.absmax)
        assert torch.equal(ours.absmax_absmax, qs.state2.absmax)
        assert torch.equal(ours.offset, qs.offset)
        assert torch.equal(ours.absmax_code, qs.state2.code)
    else:
        assert torch.equal(ours.absmax, qs.absmax)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_dequantize_bit_identical_both_ways(shape, dtype, double_quant):
    w = _weight(shape, dtype, seed=1)
    packed, qs = bnbF.quantize_4bit(w, quant_type="nf4", compress_statistics=double_quant)
    theirs = bnbF.dequantize_4bit(packed, qs)
    # ours dequantizing bnb's bytes
    assert torch.equal(dequantize_nf4_reference(NF4Weight.from_bnb(packed, qs)), theirs)
    # bnb dequantizing ours
    ours = quantize_nf4(w, double_quant=double_quant)
    assert torch.equal(bnbF.dequantize_4bit(*ours.to_bnb()), theirs)
    assert theirs.dtype == dtype and theirs.shape == w.shape


def test_to_bnb_round_trip_keeps_every_field():
    ours = quantize_nf4(_weight((40, 96), torch.bfloat16))
    back = NF4Weight.from_bnb(*ours.to_bnb())
    for field in ("packed", "absmax_q", "absmax_absmax", "offset", "absmax_code"):
        assert torch.equal(getattr(back, field), getattr(ours, field)), field
    assert back.shape == ours.shape and back.dtype == ours.dtype


def test_quantization_error_is_nf4_sized():
    w = _weight((128, 256), torch.float32)
    # plain absmax: with double quantization the scale itself carries an 8-bit error
    err = (dequantize_nf4_reference(quantize_nf4(w, double_quant=False)) - w).abs()
    blocks = w.reshape(-1, 64).abs().amax(1).repeat_interleave(64).reshape(w.shape)
    # the widest gap in the NF4 code is -0.6962 - (-1), so error <= half of it times the block absmax
    assert (err <= 0.1520 * blocks + 1e-6).all()
    assert err.mean() > 0  # it did quantize


def test_absmax_rounding_modes_differ_like_bitsandbytes_backends():
    # bnb's CPU kernel snaps to a 65536-point grid before the code lookup; its CUDA kernel
    # rounds to the nearest code entry. Near a midpoint the two give different bytes.
    code = dynamic_code()
    mid = float((code[200] + code[201]) / 2)
    x = torch.tensor([1.0, mid - 3e-6, mid + 3e-6, -1.0])
    lut, _ = _quantize_8bit_blockwise(x, code, 256, "lut")
    nearest, _ = _quantize_8bit_blockwise(x, code, 256, "nearest")
    assert nearest.tolist() == [255, 200, 201, 0]
    bnb_q, _ = bnbF.quantize_blockwise(x, code=code.clone(), blocksize=256)
    assert torch.equal(lut, bnb_q)
    assert not torch.equal(lut, nearest)


def test_zero_block_and_errors():
    w = torch.zeros(2, 64)
    w[1, 3] = 0.5
    q = quantize_nf4(w)
    assert torch.equal(dequantize_nf4_reference(q), w)
    with pytest.raises(TypeError, match="float32/float16/bfloat16"):
        quantize_nf4(torch.ones(4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="needs"):
        NF4Weight(packed=q.packed[:-1], shape=q.shape, dtype=q.dtype, absmax=q.block_scales())
