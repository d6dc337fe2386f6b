"""Triton device helpers shared by the NF4 kernels: decode a tile of NF4 weights, round to bf16.

A weight element (row r, col c) of an (out, in) matrix with `in` = K columns has flat index
f = r * K + c. Its byte is packed[f // 2]; the even element is the high nibble; its block scale
is scales[f // 64]. Computing from the flat index (instead of assuming K % 64 == 0) makes odd
shapes, and rows that straddle a byte or a quantization block, work with the same code.
"""

from __future__ import annotations

from studio_kernels.triton_import import tl, triton


@triton.jit
def _bf16_rne(x):
    """Round fp32 `x` to the nearest bf16 (ties to even), returned as fp32.

    Only used under TRITON_INTERPRET=1, whose fp32 -> bf16 cast truncates; the GPU cast
    already rounds to nearest even, so compiled kernels skip this.
    """
    bits = x.to(tl.uint32, bitcast=True)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    bits = bits & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _cast(x, dtype: tl.constexpr, EMULATE_BF16_RNE: tl.constexpr):
    """Cast fp32 `x` to `dtype` with round-to-nearest-even, as torch does."""
    if EMULATE_BF16_RNE:  # nested ifs: both are constexprs, resolved at compile time
        if dtype == tl.bfloat16:
            x = _bf16_rne(x)
    return x.to(dtype)


@triton.jit
def _load_nf4(packed_ptr, scales_ptr, code_ptr, flat, mask, BLOCKSIZE: tl.constexpr):
    """Dequantize the NF4 weights at flat indices `flat` (any shape) to fp32.

    Masked-out lanes read byte 0 and scale 0, so they decode to exactly 0.0 and add nothing
    to a dot product.
    """
    byte = tl.load(packed_ptr + (flat >> 1), mask=mask, other=0).to(tl.int32)
    shift = ((flat & 1) ^ 1) * 4  # even element -> high nibble -> shift by 4
    nibble = (byte >> shift) & 0xF
    value = tl.load(code_ptr + nibble)  # 16-entry table: stays in L1 after the first tile
    scale = tl.load(scales_ptr + flat // BLOCKSIZE, mask=mask, other=0.0)
    return value * scale
