"""Adapter Studio kernels: NF4 quantization, quantized matmul, fused LoRA, fused cross-entropy.

Knows tensors, not recipes: nothing here imports the studio, so another project can depend on this
package alone. Each op in `ops/` holds, in one file, a private @triton.jit kernel, the launcher that
checks shapes and launches it, the autograd.Function, and a plain-torch reference that is both the
test oracle and the CPU path; the nn.Module wrapper (QuantLinear) lives apart in `modules.py`.

    nf4.py                  the NF4 format: quantize (bitsandbytes-compatible), NF4Weight, reference dequant
    ops/dequant.py          NF4 -> float
    ops/nf4_matmul.py       Y = X dequant(W)^T and dX = dY dequant(W), fused; NF4LinearFunction
    ops/nf4_lora.py         frozen NF4 base + LoRA in one autograd Function
    ops/fused_ce.py         chunked linear + cross-entropy that never materialises the logits
    modules.py              QuantLinear, a frozen NF4 drop-in for nn.Linear
    dispatch.py             which matmul path serves which batch size, per GPU (dispatch.json)
    runtime.py              where kernels can run, and the one "auto" backend rule
"""

from studio_kernels.modules import QuantLinear
from studio_kernels.nf4 import (
    NF4Weight,
    dequantize_nf4_reference,
    dynamic_code,
    nf4_code,
    quantize_nf4,
)
from studio_kernels.ops.dequant import dequantize_nf4, dequantize_nf4_triton
from studio_kernels.ops.fused_ce import (
    FusedLinearCrossEntropyFunction,
    chunk_size_for,
    cross_entropy_rows_reference,
    cross_entropy_rows_triton,
    fused_linear_cross_entropy,
    fused_linear_cross_entropy_reference,
)
from studio_kernels.ops.nf4_lora import NF4LoRAFunction, nf4_lora_linear
from studio_kernels.ops.nf4_matmul import (
    NF4LinearFunction,
    nf4_linear,
    nf4_matmul,
    nf4_matmul_grad_input,
    nf4_matmul_grad_input_reference,
    nf4_matmul_grad_input_triton,
    nf4_matmul_reference,
    nf4_matmul_triton,
)

__all__ = [
    "FusedLinearCrossEntropyFunction",
    "NF4LinearFunction",
    "NF4LoRAFunction",
    "NF4Weight",
    "QuantLinear",
    "chunk_size_for",
    "cross_entropy_rows_reference",
    "cross_entropy_rows_triton",
    "dequantize_nf4",
    "dequantize_nf4_reference",
    "dequantize_nf4_triton",
    "dynamic_code",
    "fused_linear_cross_entropy",
    "fused_linear_cross_entropy_reference",
    "nf4_code",
    "nf4_linear",
    "nf4_lora_linear",
    "nf4_matmul",
    "nf4_matmul_grad_input",
    "nf4_matmul_grad_input_reference",
    "nf4_matmul_grad_input_triton",
    "nf4_matmul_reference",
    "nf4_matmul_triton",
    "quantize_nf4",
]
