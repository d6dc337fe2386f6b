"""NF4 -> float dequantization: Triton kernel, launcher, and the dispatching entry point.

Tiling: dequantization is elementwise, so the flat weight is cut into 1-D tiles of BLOCK
elements, one program per tile. Each program reads BLOCK / 2 bytes (every byte twice, from
cache) and BLOCK / 64 scales, and writes BLOCK outputs. It is bandwidth-bound; BLOCK only
needs to be large enough to keep the memory system busy.
"""

from __future__ import annotations

import torch

from studio_kernels.nf4 import NF4Weight, dequantize_nf4_reference, nf4_code
from studio_kernels.ops._nf4_tile import _cast, _load_nf4
from studio_kernels.runtime import check_triton_device, interpreting, on_device, resolve_backend
from studio_kernels.triton_import import tl, triton

_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _dequant_kernel(
    packed_ptr,
    scales_ptr,
    code_ptr,
    out_ptr,
    numel,
    BLOCKSIZE: tl.constexpr,
    BLOCK: tl.constexpr,
    EMULATE_BF16_RNE: tl.constexpr,
):
    pid = tl.program_id(0)
    flat = pid * BLOCK + tl.arange(0, BLOCK)
    mask = flat < numel
    w = _load_nf4(packed_ptr, scales_ptr, code_ptr, flat, mask, BLOCKSIZE)
    tl.store(out_ptr + flat, _cast(w, out_ptr.dtype.element_ty, EMULATE_BF16_RNE), mask=mask)


def dequantize_nf4_triton(
    weight: NF4Weight, dtype: torch.dtype | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Dequantize with the Triton kernel; bit-identical to the reference and to bitsandbytes.

    `out` lets a caller reuse one buffer across layers (the large-M dequantize-then-cuBLAS path).
    """
    dtype = dtype or weight.dtype
    if dtype not in _OUT_DTYPES:
        raise TypeError(f"NF4 weights dequantize to float32/float16/bfloat16, not {dtype}")
    check_triton_device(weight.packed)
    if weight.numel >= 2**31:
        raise ValueError(f"weight with {weight.numel} elements is too large for 32-bit indexing")
    if out is None:
        out = torch.empty(weight.shape, dtype=dtype, device=weight.device)
    elif out.dtype != dtype or out.numel() != weight.numel or not out.is_contiguous():
        raise ValueError(
            f"out must be a contiguous {dtype} tensor with {weight.numel} elements, "
            f"got {out.dtype} with {out.numel()}"
        )
    scales = weight.block_scales()
    block = 1024
    grid = (triton.cdiv(weight.numel, block),)
    with on_device(out):
        _dequant_kernel[grid](
            weight.packed,
            scales,
            nf4_code(weight.device),
            out,
            weight.numel,
            BLOCKSIZE=weight.blocksize,
            BLOCK=block,
            EMULATE_BF16_RNE=interpreting(),
        )
    return out.view(weight.shape)


def dequantize_nf4(weight: NF4Weight, dtype: torch.dtype | None = None, backend: str = "auto") -> torch.Tensor:
    """Dequantize an NF4 weight to `dtype` (default: the original weight dtype).

    backend: "auto" (Triton on CUDA, torch elsewhere), "triton" or "torch".
    """
    if resolve_backend(backend, weight.packed) == "torch":
        return dequantize_nf4_reference(weight, dtype)
    return dequantize_nf4_triton(weight, dtype)
