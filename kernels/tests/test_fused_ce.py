"""Fused linear + cross-entropy against F.cross_entropy on the full logits, on both backends.

On CPU the Triton backend runs under TRITON_INTERPRET=1 (conftest); shapes are small and odd
(tokens 1/7/33, vocab 513/1000 against power-of-two blocks, hidden 48/64).
"""

import pytest
import torch
import torch.nn.functional as F
from tolerances import TOLERANCES
from torch.utils._python_dispatch import TorchDispatchMode

from studio_kernels.ops.fused_ce import (
    chunk_size_for,
    cross_entropy_rows_reference,
    cross_entropy_rows_triton,
    fused_linear_cross_entropy,
    fused_linear_cross_entropy_reference,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BACKENDS = ["torch", "triton"]
# (tokens, hidden, vocab, chunk_size, with bias)
SHAPES = [(1, 48, 513, 4, False), (7, 64, 1000, 3, True), (33, 48, 1000, 8, True)]


def _inputs(n, h, v, dtype, bias=False, ignored_every=3, seed=0, w_requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(v, h, generator=g) * 0.3).to(dtype).requires_grad_(w_requires_grad)
    b = (torch.randn(v, generator=g) * 0.5).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, v, (n,), generator=g)
    if ignored_every and n > 1:
        labels[::ignored_every] = -100
    return x, w, b, labels


def _full_oracle(x, w, b, labels, reduction="mean", softcap=None):
    """F.cross_entropy on the full (tokens x vocab) logits, in fp32 from the same input values."""
    leaves = [t.detach().float().requires_grad_(t.requires_grad) for t in (x, w)]
    bf = None if b is None else b.detach().float().requires_grad_()
    logits = F.linear(leaves[0], leaves[1], bf)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction=reduction)
    loss.backward()
    return loss.detach(), leaves[0].grad, leaves[1].grad, None if bf is None else bf.grad


def _close(actual, expected, dtype):
    """Compare at the dtype's tolerance, relative to the expected tensor's largest magnitude."""
    atol, rtol = TOLERANCES[dtype]
    scale = expected.abs().max().clamp(min=1e-12)
    torch.testing.assert_close(actual.float() / scale, expected.float() / scale, atol=atol, rtol=rtol)


def _run(backend, x, w, labels, b=None, **kw):
    loss = fused_linear_cross_entropy(x, w, labels, b, backend=backend, **kw)
    loss.backward()
    return loss


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:3])) + ("-bias" if s[4] else ""))
def test_matches_full_cross_entropy(backend, dtype, shape):
    n, h, v, chunk, bias = shape
    x, w, b, labels = _inputs(n, h, v, dtype, bias=bias)
    loss = _run(backend, x, w, labels, b, chunk_size=chunk)
    ref_loss, ref_dx, ref_dw, ref_db = _full_oracle(x, w, b, labels)

    assert loss.dtype == torch.float32 and loss.dim() == 0
    _close(loss, ref_loss, dtype)
    assert x.grad.dtype == dtype and w.grad.dtype == dtype
    _close(x.grad, ref_dx, dtype)
    _close(w.grad, ref_dw, dtype)
    if bias:
        assert b.grad.dtype == dtype
        _close(b.grad, ref_db, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_matches_reference_path(dtype):
    """The two backends differ only in the per-row kernel: same rounding points, so near-equal."""
    results = []
    for backend in BACKENDS:
        x, w, b, labels = _inputs(33, 64, 1000, dtype, bias=True, seed=1)
        loss = _run(backend, x, w, labels, b, chunk_size=16, softcap=8.0)
        results.append((loss, x.grad, w.grad, b.grad))
    for ours, ref in zip(*results):
        _close(ours, ref, dtype)


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_row_kernel_multi_block_in_place(dtype, softcap):
    """Several BLOCK_V blocks per row with a ragged tail (1000 = 7 x 128 + 104), ignored rows."""
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(9, 1000, generator=g) * 4).to(dtype)
    labels = torch.randint(0, 1000, (9,), generator=g)
    labels[[0, 5]] = -100
    labels[1] = 999  # the very last column, inside the ragged block
    scale = torch.tensor([0.25])
    ours, ref = logits.clone(), logits.clone()
    loss = cross_entropy_rows_triton(ours, labels, scale, softcap=softcap, block_v=128)
    ref_loss = cross_entropy_rows_reference(ref, labels, scale, softcap=softcap)
    _close(loss, ref_loss, dtype)
    _close(ours, ref, dtype)  # the gradient, written over the logits
    assert (ours[[0, 5]] == 0).all() and (loss[[0, 5]] == 0).all()
    # rows of a softmax-minus-onehot gradient sum to 0 (dz/dlogit reweights them with softcap)
    if softcap is None:
        assert ours.float().sum(dim=1).abs().max() < 10 * TOLERANCES[dtype][0]


@pytest.mark.parametrize("softcap", [2.0, 30.0])
@pytest.mark.parametrize("backend", BACKENDS)
def test_softcap(backend, softcap):
    x, w, b, labels = _inputs(7, 48, 513, torch.float32, bias=True)
    w.data *= 5  # logits well beyond the cap, so the tanh saturates
    loss = _run(backend, x, w, labels, b, softcap=softcap, chunk_size=4)
    ref_loss, ref_dx, ref_dw, ref_db = _full_oracle(x, w, b, labels, softcap=softcap)
    _close(loss, ref_loss, torch.float32)
    _close(x.grad, ref_dx, torch.float32)
    _close(w.grad, ref_dw, torch.float32)
    _close(b.grad, ref_db, torch.float32)
    no_cap = fused_linear_cross_entropy(x, w, labels, b, backend=backend)
    assert abs(loss.item() - no_cap.item()) > 1e-3  # the cap changed something


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduction_sum_vs_mean(backend):
    grads = {}
    for reduction in ("mean", "sum"):
        x, w, b, labels = _inputs(33, 48, 1000, torch.float32, bias=True)
        loss = _run(backend, x, w, labels, b, reduction=reduction, chunk_size=8)
        ref_loss, ref_dx, ref_dw, _ = _full_oracle(x, w, b, labels, reduction=reduction)
        _close(loss, ref_loss, torch.float32)
        _close(x.grad, ref_dx, torch.float32)
        _close(w.grad, ref_dw, torch.float32)
        grads[reduction] = (loss.detach(), x.grad, w.grad, b.grad)
    n_valid = (labels != -100).sum().item()
    assert n_valid == 22
    for mean, total in zip(grads["mean"], grads["sum"]):
        _close(mean * n_valid, total, torch.float32)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_labels_ignored_gives_zero_not_nan(backend, dtype, reduction):
    x, w, b, labels = _inputs(7, 48, 513, dtype, bias=True)
    labels[:] = -100
    loss = _run(backend, x, w, labels, b, reduction=reduction, chunk_size=3)
    assert loss.item() == 0.0
    for grad in (x.grad, w.grad, b.grad):
        assert torch.isfinite(grad).all() and (grad == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_ignore_index_and_leading_dims(backend):
    x, w, _, labels = _inputs(12, 48, 513, torch.float32, ignored_every=0)
    labels[[2, 7]] = 0  # class 0 is a real class for F.cross_entropy; here it is the ignore value
    x3 = x.detach().reshape(3, 4, 48).requires_grad_()
    loss = fused_linear_cross_entropy(x3, w, labels.reshape(3, 4), ignore_index=0, backend=backend, chunk_size=5)
    loss.backward()
    ref = F.cross_entropy(F.linear(x.detach(), w.detach()), labels, ignore_index=0)
    _close(loss, ref, torch.float32)
    assert x3.grad.shape == (3, 4, 48)
    assert (x3.grad.reshape(12, 48)[[2, 7]] == 0).all()


class _RecordShapes(TorchDispatchMode):
    """Records (op, shape, bytes) of every tensor any aten op returns, forward and backward.

    Sees the torch ops of both backends, including the Triton interpreter's copies of the
    buffers a kernel touches (whole storages, viewed as bytes).
    """

    def __init__(self):
        super().__init__()
        self.outputs: list[tuple[str, tuple[int, ...], int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.outputs.append((str(func), tuple(t.shape), t.numel() * t.element_size()))
        return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_never_materialises_full_logits(backend):
    """Every tensor any op creates stays below (tokens x vocab); logits matmuls are chunk-sized."""
    n, h, v, chunk = 96, 48, 1000, 16
    x, w, b, labels = _inputs(n, h, v, torch.float32, bias=True)
    with _RecordShapes() as rec:
        loss = fused_linear_cross_entropy(x, w, labels, b, chunk_size=chunk, backend=backend)
        loss.backward()
    assert rec.outputs, "the dispatch mode saw no ops"
    # Nothing bigger than one logits chunk, except W itself and dW (same size, vocab x hidden).
    chunk_bytes, weight_bytes, full_bytes = chunk * v * 4, v * h * 4, n * v * 4
    assert max(chunk_bytes, weight_bytes) < full_bytes
    oversized = [o for o in rec.outputs if o[2] > chunk_bytes and o[2] != weight_bytes]
    assert not oversized
    logits_mms = [s for f, s, _ in rec.outputs if f.split(".")[1] in ("mm", "addmm") and s[-1] == v]
    assert len(logits_mms) == n // chunk and all(s[0] <= chunk for s in logits_mms)
    _close(loss, _full_oracle(x, w, b, labels)[0], torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_weight_skips_dw(backend):
    """The LoRA case: a frozen head gets no dW; no (vocab x hidden) tensor is ever made."""
    x, w, b, labels = _inputs(33, 48, 1000, torch.float32, w_requires_grad=False)
    with _RecordShapes() as rec:
        loss = _run(backend, x, w, labels, chunk_size=8)
    assert w.grad is None
    assert not any(s in ((1000, 48), (48, 1000)) and f != "aten.t.default" for f, s, _ in rec.outputs)
    _, ref_dx, _, _ = _full_oracle(x, w, None, labels)
    _close(x.grad, ref_dx, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_output_scales_and_no_grad_forward(backend):
    x, w, b, labels = _inputs(7, 48, 513, torch.float32, bias=True)
    (3.0 * fused_linear_cross_entropy(x, w, labels, b, backend=backend)).backward()
    ref_loss, ref_dx, ref_dw, ref_db = _full_oracle(x, w, b, labels)
    _close(x.grad, 3 * ref_dx, torch.float32)
    _close(w.grad, 3 * ref_dw, torch.float32)
    _close(b.grad, 3 * ref_db, torch.float32)
    with torch.no_grad():
        loss = fused_linear_cross_entropy(x, w, labels, b, backend=backend)
    assert not loss.requires_grad
    _close(loss, ref_loss, torch.float32)


def test_backward_twice_is_refused():
    x, w, _, labels = _inputs(7, 48, 513, torch.float32)
    loss = fused_linear_cross_entropy_reference(x, w, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


def test_input_errors():
    x, w, _, labels = _inputs(7, 48, 513, torch.float32)
    bad = labels.clone()
    bad[1] = 513
    with pytest.raises(ValueError, match=r"labels must be in \[0, 513\)"):
        fused_linear_cross_entropy(x, w, bad)
    with pytest.raises(ValueError, match="'none' cannot be fused"):
        fused_linear_cross_entropy(x, w, labels, reduction="none")
    with pytest.raises(TypeError, match="share a dtype"):
        fused_linear_cross_entropy(x, w.detach().half(), labels)
    with pytest.raises(ValueError, match="do not match"):
        fused_linear_cross_entropy(x[:, :40], w, labels)
    with pytest.raises(ValueError, match="backend"):
        fused_linear_cross_entropy(x, w, labels, backend="cuda")
    with pytest.raises(ValueError, match="softcap"):
        fused_linear_cross_entropy(x, w, labels, softcap=0.0)


def test_chunk_size_for():
    assert chunk_size_for(128256, 4096, torch.bfloat16, 256 * 2**20) == 960
    assert chunk_size_for(262144, 3840, torch.bfloat16, 2**30) % 64 == 0
    # what it returns fits the budget: one logits row + one dX row per token
    for vocab, hidden, dtype, budget in [(128256, 4096, torch.bfloat16, 2**28), (1000, 48, torch.float32, 10**5)]:
        c = chunk_size_for(vocab, hidden, dtype, budget)
        assert c * (vocab + hidden) * dtype.itemsize <= budget
    assert chunk_size_for(1000, 48, torch.float32, 10**5) == 16  # 23 fit -> power of two below 64
    assert chunk_size_for(128256, 4096, torch.float32, 1) == 1  # never 0
    assert chunk_size_for(128256, 4096, torch.float32, 2**30) < chunk_size_for(128256, 4096, torch.bfloat16, 2**30)
    with pytest.raises(ValueError):
        chunk_size_for(0, 4096, torch.bfloat16, 2**20)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_triton_matches_reference_bf16():
    g = torch.Generator(device="cuda").manual_seed(0)
    n, h, v = 1000, 512, 50257  # vocab not a multiple of any block, tokens not of the chunk
    x = torch.randn(n, h, device="cuda", generator=g, dtype=torch.bfloat16)
    w = torch.randn(v, h, device="cuda", generator=g, dtype=torch.bfloat16) * 0.05
    labels = torch.randint(0, v, (n,), device="cuda", generator=g)
    labels[::5] = -100
    results = []
    for backend, softcap in [("triton", None), ("torch", None), ("triton", 20.0), ("torch", 20.0)]:
        xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
        loss = fused_linear_cross_entropy(xl, wl, labels, backend=backend, softcap=softcap, chunk_size=256)
        loss.backward()
        results.append((loss, xl.grad, wl.grad))
    for ours, ref in [(results[0], results[1]), (results[2], results[3])]:
        for a, b in zip(ours, ref):
            _close(a, b, torch.bfloat16)
    ref_loss, ref_dx, ref_dw, _ = _full_oracle(x.requires_grad_(), w.requires_grad_(), None, labels)
    _close(results[0][0], ref_loss, torch.bfloat16)
    _close(results[0][1], ref_dx, torch.bfloat16)
    _close(results[0][2], ref_dw, torch.bfloat16)
