"""NF4 weight format, byte-compatible with bitsandbytes 0.50, and its plain-torch reference.

Layout (what bitsandbytes writes and what every kernel in this package reads):

- The weight of shape ``(out, in)`` is flattened row-major and cut into blocks of 64 values.
- Each block is scaled by its absolute maximum (``absmax``, fp32) into [-1, 1], and each value
  is replaced by the index (0..15) of the nearest entry of the 16-value NF4 code.
- Two indices share one byte; the EVEN flat element sits in the HIGH nibble. An odd element
  count is padded with index 7 (the code's 0.0). The packed tensor has ``(numel + 1) // 2`` bytes.
- Double quantization ("compress_statistics") stores the absmax itself in 8 bits: subtract the
  mean (``offset``), quantize blockwise (256 absmax values per block) against the signed 8-bit
  dynamic code, and keep the fp32 absmax of those blocks (``absmax_absmax``).
  The block scale is then ``absmax_code[absmax_q[b]] * absmax_absmax[b // 256] + offset``.

The functions here are the reference: the test oracle for the Triton kernels and the CPU path.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch

BLOCKSIZE = 64
ABSMAX_BLOCKSIZE = 256

# The NF4 code: quantiles of N(0, 1) normalised to [-1, 1] (QLoRA, Dettmers et al. 2023).
# Stored as the exact float32 values bitsandbytes uses so indices and dequantized values match.
_NF4_VALUES = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
_PAD_INDEX = 7  # the index of 0.0: what bitsandbytes puts in the unused nibble of an odd count

_code_cache: dict[tuple[str, torch.device], torch.Tensor] = {}

AbsmaxRounding = Literal["auto", "nearest", "lut"]


def nf4_code(device: torch.device | str = "cpu") -> torch.Tensor:
    """The 16-value NF4 code as fp32 on `device` (cached: kernels look it up every call)."""
    device = torch.device(device)
    key = ("nf4", device)
    if key not in _code_cache:
        _code_cache[key] = torch.tensor(_NF4_VALUES, dtype=torch.float32, device=device)
    return _code_cache[key]


def dynamic_code(device: torch.device | str = "cpu") -> torch.Tensor:
    """The signed 8-bit dynamic code used for double quantization (256 sorted fp32 values).

    Equal to ``bitsandbytes.functional.create_dynamic_map()``: for exponent e = 0..6, the
    2**e midpoints of a linear grid on [0.1, 1] scaled by 10**(e - 6), both signs, plus 0 and 1.
    Computed in float32 the way bitsandbytes computes it so every entry matches bit for bit.
    """
    device = torch.device(device)
    key = ("dynamic", device)
    if key not in _code_cache:
        values: list[float] = []
        for e in range(7):
            edges = torch.linspace(0.1, 1, 2**e + 1, dtype=torch.float32)
            mids = (edges[:-1] + edges[1:]) / 2.0
            values += ((10 ** (e - 6)) * mids).tolist()
            values += (-(10 ** (e - 6)) * mids).tolist()
        values += [0.0, 1.0]
        values.sort()
        _code_cache[key] = torch.tensor(values, dtype=torch.float32, device=device)
    return _code_cache[key]


@dataclass(frozen=True)
class NF4Weight:
    """A weight matrix in NF4, exactly as bitsandbytes lays it out (see the module docstring).

    Either ``absmax`` is set (plain) or the four double-quantization fields are
    (``absmax_q``, ``absmax_absmax``, ``offset``, ``absmax_code``).
    """

    packed: torch.Tensor  # uint8, ((numel + 1) // 2,)
    shape: torch.Size  # (out_features, in_features)
    dtype: torch.dtype  # dtype of the original weight (what dequantize() returns by default)
    absmax: torch.Tensor | None = None  # fp32, (n_blocks,)
    absmax_q: torch.Tensor | None = None  # uint8, (n_blocks,)
    absmax_absmax: torch.Tensor | None = None  # fp32, (ceil(n_blocks / 256),)
    offset: torch.Tensor | None = None  # fp32 scalar
    absmax_code: torch.Tensor | None = None  # fp32, (256,)
    blocksize: int = BLOCKSIZE
    absmax_blocksize: int = ABSMAX_BLOCKSIZE
    # The decoded fp32 block scales once a small-M call asked to keep them (see block_scales); not an init
    # field, so `replace` (and `to`) start without them.
    _kept_scales: list = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.packed.dtype != torch.uint8:
            raise TypeError(f"NF4Weight.packed must be uint8, got {self.packed.dtype}")
        numel = 1
        for s in self.shape:
            numel *= s
        if self.packed.numel() != (numel + 1) // 2:
            raise ValueError(
                f"NF4Weight.packed has {self.packed.numel()} bytes but shape {tuple(self.shape)} "
                f"needs {(numel + 1) // 2}; the packed tensor and the shape come from different weights"
            )
        if (self.absmax is None) == (self.absmax_q is None):
            raise ValueError("NF4Weight needs exactly one of absmax (plain) or absmax_q (double-quantized)")
        if self.absmax_q is not None and any(
            t is None for t in (self.absmax_absmax, self.offset, self.absmax_code)
        ):
            raise ValueError("a double-quantized NF4Weight needs absmax_absmax, offset and absmax_code")

    @property
    def double_quant(self) -> bool:
        """Whether the block absmax is itself stored in 8 bits."""
        return self.absmax_q is not None

    @property
    def device(self) -> torch.device:
        """Where the packed bytes live."""
        return self.packed.device

    @property
    def numel(self) -> int:
        """Number of weight elements (not bytes)."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    def block_scales(self, keep: bool = False) -> torch.Tensor:
        """The fp32 absmax of every 64-value block, undoing double quantization if present.

        Kernels read this small tensor (numel / 64 floats) instead of decoding the nested statistics per
        element. Decoding it takes about six small kernels, which at M <= 16 (decoding a token) cost more
        than the product itself; so a small-M call passes keep=True and the result stays with this weight
        (4 bytes per 64 weights, 1/8 of the packed weight's size). A call with keep=False (large M: a training
        step) drops what was kept and recomputes, so training keeps double quantization's memory saving. Same
        op order as bitsandbytes (code * scale, then + offset, both in fp32): the result is bit-identical.
        """
        if self.absmax is not None:
            return self.absmax
        if self._kept_scales:
            if keep:
                return self._kept_scales[0]
            self._kept_scales.clear()  # a training-sized call: give the memory back
        q = self.absmax_q.long()
        idx = torch.arange(q.numel(), device=q.device) // self.absmax_blocksize
        scales = self.absmax_code[q] * self.absmax_absmax[idx] + self.offset
        if keep:
            self._kept_scales.append(scales)
        return scales

    def to(self, device: torch.device | str) -> "NF4Weight":
        """A copy with every tensor on `device`."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            packed=move(self.packed),
            absmax=move(self.absmax),
            absmax_q=move(self.absmax_q),
            absmax_absmax=move(self.absmax_absmax),
            offset=move(self.offset),
            absmax_code=move(self.absmax_code),
        )

    # ---- bitsandbytes interop: existing 4-bit checkpoints load without requantizing ----

    @classmethod
    def from_bnb(cls, packed: torch.Tensor, quant_state) -> "NF4Weight":
        """Wrap a bitsandbytes ``(packed, QuantState)`` pair (e.g. ``Params4bit.data, .quant_state``)."""
        if quant_state.quant_type != "nf4":
            raise ValueError(
                f"only NF4 weights are supported, this one is {quant_state.quant_type!r}; "
                "re-quantize the model with bnb_4bit_quant_type='nf4'"
            )
        if packed.dtype != torch.uint8:
            packed = packed.view(torch.uint8)
        common = dict(
            packed=packed.reshape(-1),
            shape=torch.Size(quant_state.shape),
            dtype=quant_state.dtype,
            blocksize=quant_state.blocksize,
        )
        if quant_state.nested:
            return cls(
                **common,
                absmax_q=quant_state.absmax,
                absmax_absmax=quant_state.state2.absmax,
                offset=torch.as_tensor(quant_state.offset, dtype=torch.float32, device=packed.device),
                absmax_code=quant_state.state2.code,
                absmax_blocksize=quant_state.state2.blocksize,
            )
        return cls(**common, absmax=quant_state.absmax)

    def to_bnb(self):
        """The bitsandbytes ``(packed of shape (bytes, 1), QuantState)`` pair for this weight."""
        from bitsandbytes.functional import QuantState

        code = nf4_code(self.device)
        if self.double_quant:
            state2 = QuantState(
                absmax=self.absmax_absmax,
                code=self.absmax_code,
                blocksize=self.absmax_blocksize,
                dtype=torch.float32,
            )
            qs = QuantState(
                absmax=self.absmax_q,
                shape=self.shape,
                code=code,
                blocksize=self.blocksize,
                quant_type="nf4",
                dtype=self.dtype,
                offset=self.offset,
                state2=state2,
            )
        else:
            qs = QuantState(
                absmax=self.absmax,
                shape=self.shape,
                code=code,
                blocksize=self.blocksize,
                quant_type="nf4",
                dtype=self.dtype,
            )
        return self.packed.reshape(-1, 1), qs


# ---- reference quantization ----


def _blockwise_absmax(flat: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad `flat` (fp32) to whole blocks and return (blocks [n_blocks, blocksize], absmax)."""
    n = flat.numel()
    n_blocks = -(-n // blocksize)
    # Zero padding never raises a block's absmax, so the last partial block is handled exactly.
    blocks = torch.nn.functional.pad(flat, (0, n_blocks * blocksize - n)).view(n_blocks, blocksize)
    return blocks, blocks.abs().amax(dim=1)


def _quantize_8bit_blockwise(
    x: torch.Tensor, code: torch.Tensor, blocksize: int, rounding: Literal["nearest", "lut"]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise 8-bit quantization of a 1-D fp32 tensor against a sorted 256-entry code.

    bitsandbytes rounds differently per backend, and double-quant bytes only match when we
    round the same way: its CUDA kernel picks the nearest code entry, while its CPU kernel
    snaps the normalised value to a 65536-point grid on [-1, 1] first and looks the grid point
    up in a nearest-entry table (``rounding="lut"``). The two disagree for values within
    ~1.5e-5 of a midpoint between code entries.
    """
    n = x.numel()
    blocks, absmax = _blockwise_absmax(x, blocksize)
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38))[:, None]).clamp(-1, 1)
    midpoints = (code[:-1] + code[1:]) / 2
    if rounding == "nearest":
        q = torch.bucketize(scaled, midpoints)
    else:
        grid = torch.arange(65536, dtype=torch.float32, device=x.device)
        grid = -1.0 + (2.0 * grid) / 65535.0
        table = torch.searchsorted(midpoints, grid, side="left")
        index = ((scaled + 1.0) * 0.5 * 65535.0 + 0.5).to(torch.int64)
        q = table[index]
        q = torch.where(absmax[:, None] == 0, torch.zeros_like(q), q)
    return q.to(torch.uint8).reshape(-1)[:n], absmax


def quantize_nf4(
    weight: torch.Tensor,
    double_quant: bool = True,
    blocksize: int = BLOCKSIZE,
    absmax_rounding: AbsmaxRounding = "auto",
) -> NF4Weight:
    """Quantize a float weight to NF4 exactly as ``bitsandbytes.functional.quantize_4bit`` does.

    `double_quant` is bitsandbytes' ``compress_statistics``. `absmax_rounding` picks how the
    8-bit absmax is rounded: ``"auto"`` matches the bitsandbytes backend of the tensor's device
    (CPU: ``"lut"``, CUDA: ``"nearest"``); see ``_quantize_8bit_blockwise``.
    Runs on any device with plain torch ops; quantization happens once per model load.
    """
    if not weight.is_floating_point() or weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"quantize_nf4 needs a float32/float16/bfloat16 weight, got {weight.dtype}")
    if weight.numel() == 0:
        raise ValueError("quantize_nf4 got an empty weight; there is nothing to quantize")
    if blocksize not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        raise ValueError(f"blocksize must be a power of two in [32, 4096] like bitsandbytes, got {blocksize}")
    if absmax_rounding == "auto":
        absmax_rounding = "lut" if weight.device.type == "cpu" else "nearest"

    flat = weight.detach().reshape(-1).float()
    n = flat.numel()
    blocks, absmax = _blockwise_absmax(flat, blocksize)
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38))[:, None]).clamp(-1, 1).reshape(-1)[:n]
    code = nf4_code(weight.device)
    q = torch.bucketize(scaled, (code[:-1] + code[1:]) / 2).to(torch.uint8)
    if n % 2:
        q = torch.cat([q, q.new_full((1,), _PAD_INDEX)])
    packed = (q[0::2] << 4) | q[1::2]  # even element -> high nibble

    common = dict(packed=packed, shape=torch.Size(weight.shape), dtype=weight.dtype, blocksize=blocksize)
    if not double_quant:
        return NF4Weight(**common, absmax=absmax)
    offset = absmax.mean()
    dyn = dynamic_code(weight.device)
    absmax_q, absmax_absmax = _quantize_8bit_blockwise(absmax - offset, dyn, ABSMAX_BLOCKSIZE, absmax_rounding)
    return NF4Weight(
        **common,
        absmax_q=absmax_q,
        absmax_absmax=absmax_absmax,
        offset=offset,
        absmax_code=dyn.clone(),
    )


def unpack_nf4_indices(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """The 4-bit code indices (int64) of the first `numel` elements, in flat order."""
    q = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)
    return q[:numel].long()


def dequantize_nf4_reference(weight: NF4Weight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Plain-torch dequantization: code[index] * block_scale in fp32, then cast to `dtype`.

    Bit-identical to ``bitsandbytes.functional.dequantize_4bit`` (same products, same rounding).
    """
    dtype = dtype or weight.dtype
    n = weight.numel
    values = nf4_code(weight.device)[unpack_nf4_indices(weight.packed, n)]
    scales = weight.block_scales()
    block = torch.arange(n, device=weight.device) // weight.blocksize
    return (values * scales[block]).to(dtype).reshape(weight.shape)
