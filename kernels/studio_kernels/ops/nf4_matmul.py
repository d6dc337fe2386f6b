"""The NF4 linear op: fused dequantize-matmul kernels, their launchers, and the autograd Function.

Forward  Y  = X @ dequant(W)^T + b
Backward dX = dY @ dequant(W),  db = sum_rows(dY);  W is frozen (QLoRA), so no dW.
Nothing dense is saved for backward: only the 4-bit weight, which the layer holds anyway.

W (out x in) stays 4-bit in memory; each program decodes only the weight tile it is about
to multiply, in registers, so dequant(W) is never materialised.

Tiling. Both products have the form  C[M, P] = A[M, R] @ op(W)  with op(W) of shape (R, P):

    forward:        A = X  (M x in),  op(W) = W^T,  R = in,  P = out
    input gradient: A = dY (M x out), op(W) = W,    R = out, P = in

so one kernel serves both; the constexpr W_IS_TRANSPOSED only changes how a tile coordinate
(r, p) maps to the weight's flat index (p * in + r, or r * in + p). C is cut into
BLOCK_M x BLOCK_P tiles, one per program; a program walks R in steps of BLOCK_R, loading an
A tile (BLOCK_M x BLOCK_R) and decoding a weight tile (BLOCK_R x BLOCK_P), and accumulates
their tl.dot in fp32. Programs are ordered in groups of GROUP_M rows of tiles so consecutive
programs share weight tiles in L2 (the ordering of Triton's matmul tutorial).

Small M (decode, M <= 16): one BLOCK_M = 16 tile covers every row, so each weight byte is read
from memory exactly once. With so few output tiles the GPU would sit mostly idle, so R is also
split SPLIT_R ways; the partial sums meet in an fp32 output via atomic adds.

Large M: optionally skip fusion - dequantize W into one reused scratch buffer and call cuBLAS
(see `nf4_matmul(large_m=...)`); the benchmark measures both.
"""

from __future__ import annotations

import torch

from studio_kernels.dispatch import large_m_threshold
from studio_kernels.nf4 import NF4Weight, dequantize_nf4_reference, nf4_code
from studio_kernels.ops._nf4_tile import _cast, _load_nf4
from studio_kernels.ops.dequant import dequantize_nf4_triton
from studio_kernels.ops.fixed_launch import launch_first_that_fits
from studio_kernels.ops.nf4_matmul_configs import (
    AUTOTUNE_KEY,
    FIXED_SMALL,
    FIXED_SMALL_SPLIT_FREE,
    FIXED_TILED,
    INTERPRET_SMALL,
    INTERPRET_SMALL_SPLIT_FREE,
    INTERPRET_TILED,
    SMALL_CONFIGS,
    SPLIT_FREE_SMALL_CONFIGS,
    TILED_CONFIGS,
)
from studio_kernels.runtime import autotuning, check_triton_device, deterministic, interpreting, on_device, resolve_backend
from studio_kernels.triton_import import tl, triton

SMALL_M = 16  # at or below this many rows, use the read-weights-once kernel
# At or above large_m_threshold(device) rows, large_m="auto" dequantizes into a scratch buffer for cuBLAS:
# the crossover is measured per GPU (dispatch.py).


# Not specialized: Triton would otherwise compile a binary for M == 1 and one for M divisible by 16 (so a
# sweep over M compiles each autotune config again), where only masks read M. benchmarks/compile_plan.py
# predicts the GPU session's compile count from this.
NOT_SPECIALIZED = ["M", "M_BUCKET"]


@triton.jit(do_not_specialize=NOT_SPECIALIZED)
def _nf4_matmul_kernel(
    a_ptr,
    packed_ptr,
    scales_ptr,
    code_ptr,
    bias_ptr,
    c_ptr,
    M,
    P,
    R,
    IN_FEATURES,
    stride_am,
    stride_ar,
    stride_cm,
    stride_cp,
    M_BUCKET,  # only an autotune key: M rounded up to a power of two
    W_IS_TRANSPOSED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    USE_ATOMIC: tl.constexpr,
    DOT_FP32: tl.constexpr,
    EMULATE_BF16_RNE: tl.constexpr,
    BLOCKSIZE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_R: tl.constexpr,
    GROUP_M: tl.constexpr,
    SPLIT_R: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_split = tl.program_id(1)
    num_m = tl.cdiv(M, BLOCK_M)
    num_p = tl.cdiv(P, BLOCK_P)
    tiles_per_group = GROUP_M * num_p
    group = pid // tiles_per_group
    first_m = group * GROUP_M
    group_size = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % tiles_per_group) % group_size
    pid_p = (pid % tiles_per_group) // group_size

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_r = tl.arange(0, BLOCK_R)
    a_dtype = a_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_M, BLOCK_P), dtype=tl.float32)
    for r0 in range(pid_split * BLOCK_R, R, BLOCK_R * SPLIT_R):
        rr = r0 + offs_r
        a_mask = (offs_m[:, None] < M) & (rr[None, :] < R)
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + rr[None, :] * stride_ar, mask=a_mask, other=0.0)
        if W_IS_TRANSPOSED:
            flat = offs_p[None, :] * IN_FEATURES + rr[:, None]
        else:
            flat = rr[:, None] * IN_FEATURES + offs_p[None, :]
        w_mask = (rr[:, None] < R) & (offs_p[None, :] < P)
        w = _load_nf4(packed_ptr, scales_ptr, code_ptr, flat, w_mask, BLOCKSIZE)
        if DOT_FP32:
            # fp32 inputs, or the interpreter (its bf16 arithmetic is wrong): round W to the
            # input dtype like the reference does, then multiply in fp32.
            w = _cast(w, a_dtype, EMULATE_BF16_RNE).to(tl.float32)
            acc = tl.dot(a.to(tl.float32), w, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w.to(a_dtype), acc)

    if HAS_BIAS:
        if pid_split == 0:
            bias = tl.load(bias_ptr + offs_p, mask=offs_p < P, other=0.0).to(tl.float32)
            acc += bias[None, :]
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_p[None, :] * stride_cp
    c_mask = (offs_m[:, None] < M) & (offs_p[None, :] < P)
    if USE_ATOMIC:
        tl.atomic_add(c_ptrs, acc, mask=c_mask)
    else:
        tl.store(c_ptrs, _cast(acc, c_ptr.dtype.element_ty, EMULATE_BF16_RNE), mask=c_mask)


_nf4_matmul_tiled = triton.autotune(
    configs=TILED_CONFIGS,
    key=AUTOTUNE_KEY,
    cache_results=True,  # on disk: a later process on this machine skips the tuning and its first step is fast
)(_nf4_matmul_kernel)
_nf4_matmul_small = triton.autotune(
    configs=SMALL_CONFIGS,
    key=AUTOTUNE_KEY,
    reset_to_zero=["c_ptr"],
    cache_results=True,
)(_nf4_matmul_kernel)
_nf4_matmul_small_split_free = triton.autotune(  # runtime.deterministic(): no atomics racing
    configs=SPLIT_FREE_SMALL_CONFIGS,
    key=AUTOTUNE_KEY,
    reset_to_zero=["c_ptr"],
    cache_results=True,
)(_nf4_matmul_kernel)
# Every autotuner of this module, by name: their choices go into a checkpoint (studio_kernels.autotune_record).
AUTOTUNERS = {"nf4_matmul_tiled": _nf4_matmul_tiled, "nf4_matmul_small": _nf4_matmul_small,
              "nf4_matmul_small_split_free": _nf4_matmul_small_split_free}


def _check_operands(a: torch.Tensor, weight: NF4Weight, r_expected: int, what: str) -> None:
    if a.dim() != 2:
        raise ValueError(f"{what} must be 2-D (rows x features), got shape {tuple(a.shape)}")
    if a.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{what} must be float32/float16/bfloat16, got {a.dtype}")
    if a.shape[1] != r_expected:
        raise ValueError(
            f"{what} has {a.shape[1]} features but the NF4 weight of shape {tuple(weight.shape)} "
            f"needs {r_expected}"
        )
    if len(weight.shape) != 2:
        raise ValueError(f"NF4 matmul needs a 2-D weight, got shape {tuple(weight.shape)}")
    if weight.numel >= 2**31:
        raise ValueError(f"weight with {weight.numel} elements is too large for 32-bit indexing")
    if a.device != weight.device:
        raise ValueError(f"{what} is on {a.device} but the NF4 weight is on {weight.device}")


def _launch(
    a: torch.Tensor,
    weight: NF4Weight,
    transposed: bool,
    bias: torch.Tensor | None,
    config=None,
    dot_fp32: bool | None = None,
) -> torch.Tensor:
    """Run C = A @ op(W) with the fused kernel (small-M or tiled variant).

    config: one triton.Config to launch with instead of the usual choice (the interpreter's config, the
    fixed chain or the autotuner): the tests run every config this way. dot_fp32: force the fp32 (True) or
    the 16-bit (False) tl.dot; by default fp32 inputs and the interpreter take the fp32 one.
    """
    check_triton_device(a)
    out_features, in_features = weight.shape
    M, R = a.shape
    P = out_features if transposed else in_features
    small = M <= SMALL_M
    # The small-M kernel accumulates split partial sums atomically, so it needs a zeroed fp32 C.
    c = (torch.zeros if small else torch.empty)((M, P), device=a.device, dtype=torch.float32 if small else a.dtype)
    if M == 0:
        return c.to(a.dtype)
    interp = interpreting()
    # Block scales: decode steps keep them, a training step recomputes. Without a bias, C is a dummy pointer.
    args = (a, weight.packed, weight.block_scales(keep=small), nf4_code(a.device), bias if bias is not None else c, c,
            M, P, R, in_features, a.stride(0), a.stride(1), c.stride(0), c.stride(1), triton.next_power_of_2(M))
    flags = dict(
        W_IS_TRANSPOSED=transposed,
        HAS_BIAS=bias is not None,
        USE_ATOMIC=small,
        DOT_FP32=(interp or a.dtype == torch.float32) if dot_fp32 is None else dot_fp32,
        EMULATE_BF16_RNE=interp,
        BLOCKSIZE=weight.blocksize,
    )

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(P, meta["BLOCK_P"]), meta["SPLIT_R"])

    split_free = deterministic()
    if config is not None and not small and config.kwargs["SPLIT_R"] != 1:
        raise ValueError(f"{M} rows take the tiled kernel, which stores without atomics: SPLIT_R must be 1")
    with on_device(a):
        if config is not None:
            _nf4_matmul_kernel[grid(config.kwargs)](*args, **flags, **config.kwargs, num_warps=config.num_warps,
                                                    num_stages=config.num_stages)
        elif interp:
            meta = (INTERPRET_SMALL_SPLIT_FREE if split_free else INTERPRET_SMALL) if small else INTERPRET_TILED
            _nf4_matmul_kernel[grid(meta)](*args, **flags, **meta)
        elif not autotuning():
            chain = (FIXED_SMALL_SPLIT_FREE if split_free else FIXED_SMALL) if small else FIXED_TILED
            key = ("nf4_matmul", a.dtype, a.device, split_free, *flags.values())
            launch_first_that_fits(_nf4_matmul_kernel, chain, key, grid, args, flags)
        elif small:
            (_nf4_matmul_small_split_free if split_free else _nf4_matmul_small)[grid](*args, **flags)
        else:
            _nf4_matmul_tiled[grid](*args, **flags)
    return c.to(a.dtype) if small else c


_scratch: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _scratch_weight(weight: NF4Weight, dtype: torch.dtype) -> torch.Tensor:
    """Dequantize into one buffer per (device, dtype) shared by all layers, grown on demand.

    Peak memory grows by one dense copy of the largest layer, not of the model. Safe because
    the buffer is consumed by the matmul right after it is filled and never saved for backward.
    """
    key = (weight.device, dtype)
    buf = _scratch.get(key)
    if buf is None or buf.numel() < weight.numel:
        buf = torch.empty(weight.numel, device=weight.device, dtype=dtype)
        _scratch[key] = buf
    return dequantize_nf4_triton(weight, dtype, out=buf[: weight.numel])


INT32_LIMIT = 2**31  # the fused kernel addresses A and C with 32-bit offsets (row * row length)


def _use_dequant(M: int, large_m: str, device: torch.device, row_length: int, dtype: torch.dtype = torch.bfloat16,
                 threshold: int | None = None) -> bool:
    """Whether this product goes through dequantize + cuBLAS rather than the fused kernel.

    threshold: the dispatch threshold to assume (default: large_m_threshold(device)); the GPU session's
    compile plan asks this without a GPU.
    row_length: the longer of A's and C's rows. Past INT32_LIMIT elements the fused kernel's offsets would
    wrap, so "auto" takes the cuBLAS path there whatever the table says, and "fused" is refused.
    fp32 activations on a GPU also take it above the small-M path under "auto": the fused kernel's fp32 dot
    compiles to tiles that spill 10-110 KB of registers per thread (compile_report.py), so it is kept for
    bf16/fp16, which is what the studio trains in on a GPU.
    """
    fp32_on_gpu = dtype == torch.float32 and device.type == "cuda"
    if large_m not in ("auto", "fused", "dequant"):
        raise ValueError(f"large_m must be 'auto', 'fused' or 'dequant', got {large_m!r}")
    too_big = M * row_length >= INT32_LIMIT
    if large_m == "fused" and too_big:
        raise ValueError(f"{M} rows of {row_length} elements are past the fused kernel's 32-bit offsets; "
                         "use large_m='auto' or 'dequant'")
    if large_m == "auto":
        if threshold is None:
            threshold = large_m_threshold(device)
        return too_big or M > SMALL_M and (fp32_on_gpu or M >= threshold)
    return large_m == "dequant" and M > SMALL_M


def nf4_matmul_triton(
    x: torch.Tensor, weight: NF4Weight, bias: torch.Tensor | None = None, large_m: str = "auto"
) -> torch.Tensor:
    """Y = X @ dequant(W)^T (+ bias) on the GPU, for 2-D X of shape (M, in_features).

    large_m: "fused" always uses the fused kernel; "dequant" dequantizes into a reused buffer
    and calls cuBLAS whenever M > 16; "auto" does that from the M measured fastest on this GPU
    (dispatch.large_m_threshold).
    """
    _check_operands(x, weight, weight.shape[1], "X")
    if bias is not None:
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        bias = bias.to(x.dtype).contiguous()
    if _use_dequant(x.shape[0], large_m, x.device, max(weight.shape), x.dtype):
        return torch.nn.functional.linear(x, _scratch_weight(weight, x.dtype), bias)
    return _launch(x, weight, transposed=True, bias=bias)


def nf4_matmul_grad_input_triton(dy: torch.Tensor, weight: NF4Weight, large_m: str = "auto") -> torch.Tensor:
    """dX = dY @ dequant(W) on the GPU, for 2-D dY of shape (M, out_features)."""
    _check_operands(dy, weight, weight.shape[0], "dY")
    if _use_dequant(dy.shape[0], large_m, dy.device, max(weight.shape), dy.dtype):
        return dy @ _scratch_weight(weight, dy.dtype)
    return _launch(dy, weight, transposed=False, bias=None)


def nf4_matmul_reference(x: torch.Tensor, weight: NF4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Plain-torch Y = X @ dequant(W)^T (+ bias): the oracle and the CPU path."""
    _check_operands(x, weight, weight.shape[1], "X")
    w = dequantize_nf4_reference(weight, x.dtype)
    return torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))


def nf4_matmul_grad_input_reference(dy: torch.Tensor, weight: NF4Weight) -> torch.Tensor:
    """Plain-torch dX = dY @ dequant(W)."""
    _check_operands(dy, weight, weight.shape[0], "dY")
    return dy @ dequantize_nf4_reference(weight, dy.dtype)


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
