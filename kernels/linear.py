"""Differentiable NF4 linear layer: the autograd Function and the backend dispatcher.

Forward  Y  = X @ dequant(W)^T + b
Backward dX = dY @ dequant(W),  db = sum_rows(dY);  W is frozen (QLoRA), so no dW.

Nothing dense is saved for backward: only the 4-bit weight, which the layer holds anyway.
"""

from __future__ import annotations

import torch

from ._runtime import triton_can_run
from .matmul import (
    nf4_matmul_grad_input_reference,
    nf4_matmul_grad_input_triton,
    nf4_matmul_reference,
    nf4_matmul_triton,
)
from .nf4 import NF4Weight

BACKENDS = ("auto", "triton", "torch")


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """Pick "triton" or "torch" for tensor `x`: CUDA -> Triton, CPU -> the torch reference.

    An explicit "triton" on a CPU tensor is allowed under TRITON_INTERPRET=1 (the tests).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if x.is_cuda and triton_can_run(x) else "torch"
    return backend


def nf4_matmul(
    x2d: torch.Tensor,
    weight: NF4Weight,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    large_m: str = "auto",
) -> torch.Tensor:
    """Y = X @ dequant(W)^T (+ bias) for 2-D X, on the chosen backend, without autograd."""
    if resolve_backend(backend, x2d) == "triton":
        return nf4_matmul_triton(x2d, weight, bias, large_m=large_m)
    return nf4_matmul_reference(x2d, weight, bias)


def nf4_matmul_grad_input(
    dy2d: torch.Tensor, weight: NF4Weight, backend: str = "auto", large_m: str = "auto"
) -> torch.Tensor:
    """dX = dY @ dequant(W) for 2-D dY, on the chosen backend."""
    if resolve_backend(backend, dy2d) == "triton":
        return nf4_matmul_grad_input_triton(dy2d, weight, large_m=large_m)
    return nf4_matmul_grad_input_reference(dy2d, weight)


class NF4LinearFunction(torch.autograd.Function):
    """Y = X @ dequant(W)^T + b with dX = dY @ dequant(W); the NF4 weight gets no gradient."""

    @staticmethod
    def forward(ctx, x2d, weight: NF4Weight, bias, backend: str, large_m: str):
        ctx.weight = weight  # the 4-bit weight only; a dataclass, so it is not copied
        ctx.backend = backend
        ctx.large_m = large_m
        return nf4_matmul(x2d, weight, bias, backend, large_m)

    @staticmethod
    def backward(ctx, dy):
        dx = db = None
        if ctx.needs_input_grad[0]:
            dx = nf4_matmul_grad_input(dy.contiguous(), ctx.weight, ctx.backend, ctx.large_m)
        if ctx.needs_input_grad[2]:
            db = dy.sum(0)
        return dx, None, db, None, None


def nf4_linear(
    x: torch.Tensor,
    weight: NF4Weight,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    large_m: str = "auto",
) -> torch.Tensor:
    """Differentiable ``x @ dequant(weight)^T + bias`` for x of shape (..., in_features).

    backend: "auto" (CUDA -> Triton, else torch), "triton", or "torch".
    large_m: on the Triton backend, "fused" always runs the fused kernels, "dequant"
    dequantizes into a reused buffer and calls cuBLAS for M > 16, "auto" does so for large M.
    """
    if not isinstance(weight, NF4Weight):
        raise TypeError(f"weight must be an NF4Weight (see studio_kernels.quantize_nf4), got {type(weight).__name__}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"input has {x.shape[-1]} features but the layer expects {weight.shape[1]} "
            f"(weight shape {tuple(weight.shape)})"
        )
    backend = resolve_backend(backend, x)
    x2d = x.reshape(-1, x.shape[-1])
    if backend == "triton" and x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    y = NF4LinearFunction.apply(x2d, weight, bias, backend, large_m)
    return y.reshape(*x.shape[:-1], weight.shape[0])
