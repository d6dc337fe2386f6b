"""QLoRA linear in one autograd Function: frozen NF4 base plus a trainable low-rank update.

The base products run through the fused NF4 kernels, so the dense base weight never exists,
neither in forward nor saved for backward.
"""

from __future__ import annotations

import torch

from studio_kernels.nf4 import NF4Weight
from studio_kernels.ops.nf4_matmul import nf4_matmul, nf4_matmul_grad_input
from studio_kernels.runtime import resolve_backend


class NF4LoRAFunction(torch.autograd.Function):
    r"""y = x W^T + b + s (x A^T) B^T  with W = dequant(W_nf4) frozen, A (r x in), B (out x r).

    Gradients, with  g = s * dY  (in the adapter dtype) and  xa = x A^T  (M x r):

        dX = dY W + (g B) A
        dA = (g B)^T x
        dB = g^T xa
        db = sum_rows(dY)

    Saved for backward: x, A, B and the 4-bit weight only. xa is recomputed (an M x in x r
    product, cheap next to the base matmul) rather than kept, and no gradient for W exists.

    Dtypes follow peft's LoRA Linear so results match it: the adapter branch runs in the
    adapter's dtype (often fp32 with a bf16 base), is added to the base output, and the sum is
    cast back to x's dtype.
    """

    @staticmethod
    def forward(ctx, x2d, weight: NF4Weight, bias, lora_a, lora_b, scale: float, backend: str, large_m: str):
        base = nf4_matmul(x2d, weight, bias, backend, large_m)
        x_l = x2d.to(lora_a.dtype)
        lora = (x_l @ lora_a.t()) @ lora_b.t()
        y = (base + lora * scale).to(x2d.dtype)
        ctx.save_for_backward(x2d, lora_a, lora_b)
        ctx.weight, ctx.scale, ctx.backend, ctx.large_m = weight, scale, backend, large_m
        return y

    @staticmethod
    def backward(ctx, dy):
        x2d, lora_a, lora_b = ctx.saved_tensors
        dy = dy.contiguous()
        need_x, _, need_b, need_la, need_lb = ctx.needs_input_grad[:5]
        g = dy.to(lora_a.dtype) * ctx.scale
        gb = g @ lora_b  # (M, r)
        dx = dbias = da = db = None
        if need_x:
            dx = nf4_matmul_grad_input(dy, ctx.weight, ctx.backend, ctx.large_m)
            dx = dx + (gb @ lora_a).to(dx.dtype)
        x_l = x2d.to(lora_a.dtype) if (need_la or need_lb) else None
        if need_la:
            da = gb.t() @ x_l
        if need_lb:
            db = g.t() @ (x_l @ lora_a.t())
        if need_b:
            dbias = dy.sum(0)
        return dx, None, dbias, da, db, None, None, None


def nf4_lora_linear(
    x: torch.Tensor,
    weight: NF4Weight,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: float,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    large_m: str = "auto",
) -> torch.Tensor:
    """Differentiable ``x @ dequant(W)^T + bias + scale * (x @ A^T) @ B^T`` for x of shape (..., in).

    `lora_a` is (r, in_features), `lora_b` is (out_features, r): peft's lora_A/lora_B weights.
    """
    out_features, in_features = weight.shape
    if x.shape[-1] != in_features:
        raise ValueError(f"input has {x.shape[-1]} features but the layer expects {in_features}")
    if lora_a.dim() != 2 or lora_a.shape[1] != in_features:
        raise ValueError(f"lora_a must have shape (r, {in_features}), got {tuple(lora_a.shape)}")
    if lora_b.dim() != 2 or lora_b.shape != (out_features, lora_a.shape[0]):
        raise ValueError(
            f"lora_b must have shape ({out_features}, {lora_a.shape[0]}), got {tuple(lora_b.shape)}"
        )
    if lora_a.dtype != lora_b.dtype:
        raise TypeError(f"lora_a and lora_b must share a dtype, got {lora_a.dtype} and {lora_b.dtype}")
    backend = resolve_backend(backend, x)
    x2d = x.reshape(-1, in_features)
    if backend == "triton" and x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    y = NF4LoRAFunction.apply(x2d, weight, bias, lora_a, lora_b, float(scale), backend, large_m)
    return y.reshape(*x.shape[:-1], out_features)
