"""Fused linear + cross-entropy: loss = CE(X @ W^T (+ b), labels) without the full logits.

For a language-model head the logits are (tokens x vocab): 8192 tokens x 128256 vocab in bf16
is 2 GiB, plus as much again for their gradient and an fp32 upcast in the loss - more than the
whole rest of a LoRA step. Here the tokens are cut into chunks of C rows and, per chunk:

    logits_c = X_c @ W^T (+ b)                         (C x V)   torch.mm / addmm (cuBLAS)
    loss_c, G_c = softmax(z_c) - onehot(labels_c)      in place in the logits_c buffer
                  where z = cap * tanh(logits / cap) with soft-capping, else z = logits
    dX_c  = G_c @ W                                    (C x H)   written straight into dX
    dW   += G_c^T @ X_c                                (V x H)   addmm_ into one accumulator
    db   += column sums of G_c

so the gradients are finished during the forward pass (the Liger-Kernel / Unsloth approach) and
backward only multiplies them by the scalar grad_output. Peak extra memory is one (C x V) logits
buffer, reused by every chunk, plus dX (and dW when the head is trained). With a frozen head
(W.requires_grad False: the LoRA case) dW is neither computed nor stored.

G carries the reduction's scale: 1 / (number of non-ignored tokens) for 'mean', 1 for 'sum'.
Rows whose label is `ignore_index` contribute loss 0 and gradient 0; when every row is ignored
the loss is 0 (not NaN, unlike F.cross_entropy's 0/0) and all gradients are 0.

The Triton kernel does the middle line: one program per logits row; it walks the row in blocks
of BLOCK_V columns twice. Pass 1 keeps a running max m and running sum d = sum exp(z - m)
(the online log-sum-exp: when a block raises the max to m', d becomes d * exp(m - m') + the
block's sum), giving lse = m + log d and loss = lse - z[label]. Pass 2 rereads each block and
overwrites it with scale * (exp(z - lse) - [col == label]) (times dz/dlogit = 1 - (z/cap)^2 with
soft-capping). All arithmetic is fp32 whatever the logits dtype; a row is touched 3 times
(read, read, write), so the kernel is memory-bound and a few percent of the two matmuls.
The matmuls stay cuBLAS: they are where the FLOPs are.

Why one file of about 400 lines: it is one op, and the kernel anatomy keeps the kernel, its launcher,
the chunk loop, the autograd Function and the plain-torch reference together.
"""

from __future__ import annotations

import torch

from studio_kernels.ops._nf4_tile import _cast
from studio_kernels.runtime import autotuning, check_triton_device, interpreting, on_device, resolve_backend
from studio_kernels.triton_import import tl, triton

DEFAULT_BUDGET_BYTES = 256 * 2**20  # logits chunk budget when chunk_size is not given
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_REDUCTIONS = ("mean", "sum")


# ---------------------------------------------------------------------------------------------
# Triton kernel and launcher: per-row log-sum-exp, loss and in-place logits gradient
# ---------------------------------------------------------------------------------------------


@triton.jit
def _softcapped(x, softcap, HAS_SOFTCAP: tl.constexpr):
    """cap * tanh(x / cap) in fp32; tanh(y) = 1 - 2 / (exp(2y) + 1) saturates cleanly to +-1."""
    if HAS_SOFTCAP:
        x = softcap * (1.0 - 2.0 / (tl.exp(2.0 * x / softcap) + 1.0))
    return x


@triton.jit
def _ce_rows_kernel(
    logits_ptr,
    stride_row,
    labels_ptr,
    loss_ptr,
    scale_ptr,
    V,
    ignore_index,
    softcap,
    HAS_SOFTCAP: tl.constexpr,
    COMPUTE_GRAD: tl.constexpr,
    EMULATE_BF16_RNE: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    out_dtype = logits_ptr.dtype.element_ty
    cols = tl.arange(0, BLOCK_V)
    label = tl.load(labels_ptr + row)

    if label == ignore_index:
        # No loss and no gradient: zero the row so the matmuls after this add nothing.
        if COMPUTE_GRAD:
            for v0 in range(0, V, BLOCK_V):
                vv = v0 + cols
                tl.store(row_ptr + vv, tl.zeros((BLOCK_V,), dtype=out_dtype), mask=vv < V)
        tl.store(loss_ptr + row, 0.0)
        return

    # Pass 1: online log-sum-exp over the row (fp32: bf16 loads are upcast before any math).
    m = float("-inf")
    d = 0.0
    for v0 in range(0, V, BLOCK_V):
        vv = v0 + cols
        mask = vv < V
        x = tl.load(row_ptr + vv, mask=mask, other=0.0).to(tl.float32)
        # Mask after capping: cap * tanh(-inf) is -cap, which would add exp(-cap - m) per lane.
        z = tl.where(mask, _softcapped(x, softcap, HAS_SOFTCAP), float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
    lse = m + tl.log(d)
    z_label = _softcapped(tl.load(row_ptr + label).to(tl.float32), softcap, HAS_SOFTCAP)
    tl.store(loss_ptr + row, lse - z_label)

    # Pass 2: overwrite the row with scale * (softmax - onehot) (* dz/dlogit with soft-capping).
    if COMPUTE_GRAD:
        scale = tl.load(scale_ptr)
        for v0 in range(0, V, BLOCK_V):
            vv = v0 + cols
            mask = vv < V
            x = tl.load(row_ptr + vv, mask=mask, other=0.0).to(tl.float32)
            z = _softcapped(x, softcap, HAS_SOFTCAP)
            g = tl.exp(z - lse)
            g = tl.where(vv == label, g - 1.0, g)
            if HAS_SOFTCAP:
                t = z / softcap
                g = g * (1.0 - t * t)
            g = g * scale
            tl.store(row_ptr + vv, _cast(g, out_dtype, EMULATE_BF16_RNE), mask=mask)


# On a GPU the block width is tuned per vocabulary size rather than fixed: wide blocks mean few loop trips
# per row, but at 32768 columns the kernel spills registers (seen in ptxas output for Hopper), so narrower
# blocks are candidates too. The kernel overwrites its logits, so every trial starts from restored values;
# results are cached on disk, so only the first process on a machine pays for the tuning.
_ce_rows_tuned = triton.autotune(
    configs=[triton.Config({"BLOCK_V": bv}, num_warps=w) for bv, w in ((4096, 8), (8192, 16), (16384, 16), (32768, 32))],
    key=["V", "HAS_SOFTCAP", "COMPUTE_GRAD"],
    restore_value=["logits_ptr"],
    cache_results=True,
)(_ce_rows_kernel)


def _launch_config(V: int, block_v: int | None) -> tuple[int, int]:
    """(BLOCK_V, num_warps) for a fixed launch. Big blocks: few loop trips per row; the interpreter's cost is per op."""
    if block_v is None:
        block_v = min(triton.next_power_of_2(V), 4096)
    if block_v & (block_v - 1):
        raise ValueError(f"block_v must be a power of two, got {block_v}")
    return block_v, max(4, min(32, block_v // 1024))


def _check_rows(logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> None:
    if logits.dim() != 2 or logits.stride(1) != 1:
        raise ValueError(f"logits must be 2-D with contiguous rows, got shape {tuple(logits.shape)}")
    if logits.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"logits must be float32/float16/bfloat16, got {logits.dtype}")
    if labels.shape != (logits.shape[0],) or labels.dtype != torch.int64:
        raise ValueError(
            f"labels must be int64 of shape ({logits.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
        )
    if scale.numel() != 1 or scale.dtype != torch.float32:
        raise ValueError("scale must be a one-element float32 tensor")


def cross_entropy_rows_triton(
    logits: torch.Tensor,
    labels: torch.Tensor,
    scale: torch.Tensor,
    ignore_index: int = -100,
    softcap: float | None = None,
    compute_grad: bool = True,
    block_v: int | None = None,
) -> torch.Tensor:
    """Per-row CE losses (fp32, shape (rows,)) of a logits chunk; with compute_grad, overwrite
    `logits` in place with scale * d(loss)/d(logits) (zero on ignored rows).

    labels: int64 (rows,), each in [0, V) or ignore_index (not checked here). scale: a one-element
    fp32 tensor on the logits' device, read by the kernel (no host sync for 1 / n_valid).
    """
    _check_rows(logits, labels, scale)
    check_triton_device(logits)
    rows, V = logits.shape
    loss = torch.empty(rows, device=logits.device, dtype=torch.float32)
    if rows == 0:
        return loss
    args = (logits, logits.stride(0), labels, loss, scale, V, ignore_index, float(softcap) if softcap is not None else 1.0)
    flags = dict(HAS_SOFTCAP=softcap is not None, COMPUTE_GRAD=compute_grad, EMULATE_BF16_RNE=interpreting())
    with on_device(logits):
        if block_v is None and not interpreting() and V > 4096 and autotuning():
            _ce_rows_tuned[(rows,)](*args, **flags)
        else:
            BLOCK_V, num_warps = _launch_config(V, block_v)
            _ce_rows_kernel[(rows,)](*args, **flags, BLOCK_V=BLOCK_V, num_warps=num_warps)
    return loss


def cross_entropy_rows_reference(
    logits: torch.Tensor,
    labels: torch.Tensor,
    scale: torch.Tensor,
    ignore_index: int = -100,
    softcap: float | None = None,
    compute_grad: bool = True,
) -> torch.Tensor:
    """Plain-torch twin of `cross_entropy_rows_triton`, same contract (the oracle and CPU path).

    Works on fp32 copies of the chunk, so it needs a few (rows x V) fp32 temporaries.
    """
    _check_rows(logits, labels, scale)
    z = logits.float()
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    lse = torch.logsumexp(z, dim=1)
    valid = labels != ignore_index
    safe = torch.where(valid, labels, 0)
    loss = torch.where(valid, lse - z.gather(1, safe[:, None]).squeeze(1), 0.0)
    if compute_grad:
        g = torch.exp(z - lse[:, None])
        g.scatter_add_(1, safe[:, None], torch.full_like(g[:, :1], -1.0))
        if softcap is not None:
            g *= 1.0 - (z / softcap) ** 2
        g *= torch.where(valid, scale, 0.0)[:, None]
        logits.copy_(g)
    return loss


# ---------------------------------------------------------------------------------------------
# The chunk loop (plain torch around either row function) and the autograd Function
# ---------------------------------------------------------------------------------------------


def chunk_size_for(
    vocab: int, hidden: int, dtype: torch.dtype = torch.bfloat16, budget_bytes: int = DEFAULT_BUDGET_BYTES
) -> int:
    """Tokens per chunk so that one chunk's logits (+ its dX rows) fit in `budget_bytes`.

    Counts what the Triton path allocates per token: a logits/gradient row of `vocab` elements
    and a dX row of `hidden` elements, both in `dtype`. (The CPU reference path also makes a few
    fp32 copies of the chunk.) Rounded down to a multiple of 64 rows (tensor-core friendly M for
    the matmuls) when at least 64 fit, else to a power of two; never below 1.
    E.g. vocab 128256, hidden 4096, bf16, 256 MiB -> 960 tokens.
    """
    if vocab <= 0 or hidden <= 0 or budget_bytes <= 0:
        raise ValueError(f"vocab, hidden and budget_bytes must be positive, got {vocab}, {hidden}, {budget_bytes}")
    per_token = (vocab + hidden) * torch.empty((), dtype=dtype).element_size()
    rows = budget_bytes // per_token
    if rows >= 64:
        return int(rows // 64 * 64)
    return 1 << max(0, int(rows).bit_length() - 1)


def _check_inputs(x, weight, labels, bias, reduction, softcap, chunk_size) -> None:
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float32/float16/bfloat16, got {x.dtype}")
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x (..., hidden) and weight (vocab, hidden) do not match: {tuple(x.shape)} vs {tuple(weight.shape)}"
        )
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise TypeError(
            f"x, weight and bias must share a dtype, got {x.dtype}, {weight.dtype}, "
            f"{None if bias is None else bias.dtype}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.numel() != x.numel() // x.shape[-1]:
        raise ValueError(f"labels has {labels.numel()} elements but x has {x.numel() // x.shape[-1]} tokens")
    if any(t.device != x.device for t in (weight, labels) + ((bias,) if bias is not None else ())):
        raise ValueError("x, weight, labels and bias must be on the same device")
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"reduction must be 'mean' or 'sum', got {reduction!r} ('none' cannot be fused: the "
            "gradient is finished in forward, before per-token grad_outputs exist)"
        )
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be positive or None, got {softcap}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _chunked_linear_cross_entropy(
    x, weight, labels, bias, ignore_index, reduction, softcap, chunk_size, rows_fn, need_dx, need_dw, need_db
):
    """Loss and finished gradients (dX, dW, db; None where not needed), one chunk at a time.

    x: (N, H), weight: (V, H), labels: int64 (N,). Returns (loss fp32 scalar, dx, dw, db).
    """
    N, H = x.shape
    V = weight.shape[0]
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= V))
    if bool(bad.any()):  # one host sync per call; an out-of-range label would read out of bounds
        raise ValueError(f"labels must be in [0, {V}) or ignore_index={ignore_index}, got {labels[bad][0].item()}")
    n_valid = (labels != ignore_index).sum()
    if reduction == "mean":
        scale = 1.0 / n_valid.clamp(min=1).to(torch.float32)  # all ignored: loss 0, grads 0
    else:
        scale = torch.ones((), device=x.device, dtype=torch.float32)
    scale = scale.reshape(1)
    compute_grad = need_dx or need_dw or need_db

    C = max(1, min(N, chunk_size))
    dx = torch.empty_like(x) if need_dx else None
    # dW accumulates in W's dtype (cuBLAS sums each chunk in fp32, then rounds once per chunk):
    # an fp32 accumulator would cost another 2 bytes x vocab x hidden.
    dw = torch.zeros_like(weight) if need_dw else None
    db = torch.zeros(V, device=x.device, dtype=torch.float32) if need_db else None
    losses = torch.empty(N, device=x.device, dtype=torch.float32)
    logits_buf = torch.empty((C, V), device=x.device, dtype=x.dtype)  # reused by every chunk
    wt = weight.t()
    for start in range(0, N, C):
        end = min(start + C, N)
        x_c = x[start:end]
        logits = logits_buf[: end - start]
        if bias is None:
            torch.mm(x_c, wt, out=logits)
        else:
            torch.addmm(bias, x_c, wt, out=logits)
        losses[start:end] = rows_fn(logits, labels[start:end], scale, ignore_index, softcap, compute_grad)
        # `logits` now holds this chunk's gradient G_c (already scaled for the reduction).
        if need_dx:
            torch.mm(logits, weight, out=dx[start:end])
        if need_dw:
            dw.addmm_(logits.t(), x_c)
        if need_db:
            db += logits.sum(dim=0, dtype=torch.float32)
    loss = losses.sum()
    if reduction == "mean":
        loss = loss * scale[0]
    return loss, dx, dw, None if db is None else db.to(x.dtype)


class FusedLinearCrossEntropyFunction(torch.autograd.Function):
    """loss = CE(x @ W^T + b, labels); gradients computed in forward, scaled by grad_output in backward.

    Arguments (positional): x (N, H), weight (V, H), labels int64 (N,), bias (V,) or None,
    ignore_index, reduction, softcap, chunk_size, use_triton. Returns a 0-dim fp32 loss.
    """

    @staticmethod
    def forward(ctx, x, weight, labels, bias, ignore_index, reduction, softcap, chunk_size, use_triton):
        need_dx, need_dw, _, need_db = ctx.needs_input_grad[:4]
        rows_fn = cross_entropy_rows_triton if use_triton else cross_entropy_rows_reference
        loss, dx, dw, db = _chunked_linear_cross_entropy(
            x, weight, labels, bias, ignore_index, reduction, softcap, chunk_size, rows_fn, need_dx, need_dw, need_db
        )
        ctx.save_for_backward(dx, dw, db)
        ctx.used = False
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        if ctx.used:
            raise RuntimeError(
                "fused_linear_cross_entropy: backward ran twice through the same graph; its saved "
                "gradients are scaled in place, so call forward again instead of retain_graph=True"
            )
        ctx.used = True
        dx, dw, db = ctx.saved_tensors
        # Scale in place: no second (V x H) buffer at the end of the step.
        grads = [None if g is None else g.mul_(grad_output.to(torch.float32)) for g in (dx, dw, db)]
        return grads[0], grads[1], None, grads[2], None, None, None, None, None


def fused_linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    softcap: float | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """CE(x @ weight^T + bias, labels) without materialising the (tokens x vocab) logits.

    x: (..., hidden); weight: (vocab, hidden); labels: (...) integers, `ignore_index` masks a
    token. reduction: 'mean' over non-ignored tokens (0 when all are ignored) or 'sum'.
    softcap: Gemma-style logit soft-capping cap * tanh(logits / cap) before the softmax.
    chunk_size: tokens per chunk; default `chunk_size_for(vocab, hidden, x.dtype)` (256 MiB).
    backend: 'auto' (Triton on CUDA, torch elsewhere), 'triton' or 'torch'.
    Returns a 0-dim float32 loss. Gradients flow to x, weight (only if it requires grad) and bias.
    """
    _check_inputs(x, weight, labels, bias, reduction, softcap, chunk_size)
    use_triton = resolve_backend(backend, x) == "triton"
    if use_triton:
        check_triton_device(x)
    hidden = x.shape[-1]
    vocab = weight.shape[0]
    if chunk_size is None:
        chunk_size = chunk_size_for(vocab, hidden, x.dtype)
    x2 = x.reshape(-1, hidden)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    return FusedLinearCrossEntropyFunction.apply(
        x2,
        weight,
        labels.reshape(-1).to(torch.int64),
        bias,
        ignore_index,
        reduction,
        None if softcap is None else float(softcap),
        int(chunk_size),
        use_triton,
    )


def fused_linear_cross_entropy_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The plain-torch chunked path (same chunking, torch row math): the CPU path and oracle."""
    return fused_linear_cross_entropy(
        x, weight, labels, bias, ignore_index, reduction, softcap, chunk_size, backend="torch"
    )
