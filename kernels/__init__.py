"""Adapter Studio kernels: NF4 quantization, quantized matmul, fused LoRA. Knows tensors, not recipes.

Layers of each kernel (DESIGN.md "kernel anatomy"): a private @triton.jit kernel, a launcher
that checks shapes and launches, an autograd.Function, and a plain-torch reference that is
both the test oracle and the CPU path. The nn.Module wrapper lives in `modules.py`.
"""

from .dequant import dequantize_nf4, dequantize_nf4_triton
from .fused_ce import (
    FusedLinearCrossEntropyFunction,
    chunk_size_for,
    cross_entropy_rows_reference,
    cross_entropy_rows_triton,
    fused_linear_cross_entropy,
    fused_linear_cross_entropy_reference,
)
from .linear import NF4LinearFunction, nf4_linear, nf4_matmul, nf4_matmul_grad_input
from .lora import NF4LoRAFunction, nf4_lora_linear
from .matmul import (
    nf4_matmul_grad_input_reference,
    nf4_matmul_grad_input_triton,
    nf4_matmul_reference,
    nf4_matmul_triton,
)
from .modules import QuantLinear
from .nf4 import NF4Weight, dequantize_nf4_reference, dynamic_code, nf4_code, quantize_nf4

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
