"""QuantLinear: a drop-in, frozen NF4 replacement for nn.Linear."""

from __future__ import annotations

import torch
from torch import nn

from studio_kernels.nf4 import NF4Weight, quantize_nf4
from studio_kernels.ops.dequant import dequantize_nf4
from studio_kernels.ops.nf4_matmul import nf4_linear
from studio_kernels.runtime import BACKENDS, resolve_backend

# Buffers that hold the quantized weight. Their dtypes are part of the format, so
# `module.to(torch.bfloat16)` must move them but never cast them (see `_apply`).
_QUANT_BUFFERS = ("qweight", "absmax", "absmax_q", "absmax_absmax", "absmax_offset", "absmax_code")
# The integer tensors `make_shardable` turns into parameters (uint8: safe from any dtype cast).
SHARDABLE_TENSORS = ("qweight", "absmax_q")
# NF4Weight's fields and the buffers of this module that hold them, without and with double quantization.
_NF4_FIELDS = {
    False: {"packed": "qweight", "absmax": "absmax"},
    True: {"packed": "qweight", "absmax_q": "absmax_q", "absmax_absmax": "absmax_absmax", "offset": "absmax_offset",
           "absmax_code": "absmax_code"},
}


class QuantLinear(nn.Module):
    """y = x @ dequant(W)^T + b with W stored as bitsandbytes-compatible NF4 and frozen.

    The input is cast to `compute_dtype` for the matmul and the output cast back to the input
    dtype, like bitsandbytes' Linear4bit. The packed weight is the buffer `qweight`, the name
    peft looks for to find a quantized layer's device.
    """

    def __init__(
        self,
        weight: NF4Weight,
        bias: torch.Tensor | None = None,
        compute_dtype: torch.dtype | None = None,
        backend: str = "auto",
        large_m: str = "auto",
    ):
        super().__init__()
        if len(weight.shape) != 2:
            raise ValueError(f"QuantLinear needs a 2-D weight, got shape {tuple(weight.shape)}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.out_features, self.in_features = weight.shape
        self.weight_dtype = weight.dtype
        self.compute_dtype = compute_dtype or weight.dtype
        self.backend = backend
        self.large_m = large_m
        self.blocksize = weight.blocksize
        self.absmax_blocksize = weight.absmax_blocksize
        self.double_quant = weight.double_quant
        self._nf4_view: tuple | None = None  # (buffer identities, NF4Weight): see nf4_weight
        self.register_buffer("qweight", weight.packed)
        if weight.double_quant:
            self.register_buffer("absmax_q", weight.absmax_q)
            self.register_buffer("absmax_absmax", weight.absmax_absmax)
            self.register_buffer("absmax_offset", weight.offset.reshape(()))
            self.register_buffer("absmax_code", weight.absmax_code)
        else:
            self.register_buffer("absmax", weight.absmax)
        if bias is not None:
            if bias.shape != (self.out_features,):
                raise ValueError(f"bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
            self.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        compute_dtype: torch.dtype | None = None,
        backend: str = "auto",
        double_quant: bool = True,
        large_m: str = "auto",
    ) -> "QuantLinear":
        """Quantize an nn.Linear's weight to NF4 (as bitsandbytes would) and wrap it.

        compute_dtype defaults to the linear's weight dtype.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QuantLinear.from_linear needs an nn.Linear, got {type(linear).__name__}")
        if linear.weight.device.type == "meta":
            raise ValueError("cannot quantize a weight on the meta device; load the model's weights first")
        weight = quantize_nf4(linear.weight.data, double_quant=double_quant)
        return cls(weight, linear.bias, compute_dtype or linear.weight.dtype, backend, large_m)

    @classmethod
    def from_bnb(cls, module: nn.Module, backend: str = "auto", large_m: str = "auto") -> "QuantLinear":
        """Adopt a bitsandbytes Linear4bit (NF4) without requantizing: same bytes, same results."""
        quant_state = getattr(module.weight, "quant_state", None)
        if quant_state is None:
            raise ValueError(f"{type(module).__name__} carries no bitsandbytes quant_state; is it quantized yet?")
        weight = NF4Weight.from_bnb(module.weight.data, quant_state)
        compute_dtype = getattr(module, "compute_dtype", None) or weight.dtype
        return cls(weight, module.bias, compute_dtype, backend, large_m)

    def nf4_weight(self) -> NF4Weight:
        """The quantized weight as an NF4Weight view of this module's buffers (no copy).

        The same object while the buffers are the same tensors, unchanged (the block scales a decode step
        keeps live on it); a move, a cast, a state-dict load or make_shardable gives a fresh one.
        """
        tensors = {field: getattr(self, name) for field, name in _NF4_FIELDS[self.double_quant].items()}
        # Inference tensors keep no version counter (and cannot change outside inference mode).
        key = tuple((id(t), t.data_ptr(), None if t.is_inference() else t._version) for t in tensors.values())
        view = getattr(self, "_nf4_view", None)  # absent on a module pickled before the attribute existed
        if view is None or view[0] != key:
            common = dict(
                shape=torch.Size((self.out_features, self.in_features)),
                dtype=self.weight_dtype,
                blocksize=self.blocksize,
                absmax_blocksize=self.absmax_blocksize,
            )
            view = self._nf4_view = (key, NF4Weight(**common, **tensors))
        return view[1]

    def make_shardable(self) -> "QuantLinear":
        """Hold the packed 4-bit weight (and double quantization's 8-bit absmax) as frozen uint8 parameters.

        FSDP shards parameters and replicates buffers, so this is what lets a sharded run split the
        quantized base across GPUs. They stay uint8: FSDP gathers non-float parameters as raw bytes and
        never casts them under mixed precision. The float statistics (fp32 absmax without double
        quantization, the second-level scales, the code table) stay buffers, because a mixed-precision
        policy would round them to bf16; they are at most 1/8 of the packed weight's size.
        Idempotent; results are unchanged.
        """
        for name in SHARDABLE_TENSORS:
            tensor = self._buffers.pop(name, None)
            if tensor is not None:
                self.register_parameter(name, nn.Parameter(tensor, requires_grad=False))
        return self

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense weight (out_features x in_features), by default in the original dtype."""
        return dequantize_nf4(self.nf4_weight(), dtype or self.weight_dtype, resolve_backend(self.backend, self.qweight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = x @ dequant(W)^T + b, computed in compute_dtype, returned in x's dtype."""
        y = nf4_linear(x.to(self.compute_dtype), self.nf4_weight(), self.bias, self.backend, self.large_m)
        return y.to(x.dtype)

    def _apply(self, fn, recurse=True):
        # nn.Module.to(dtype) casts every floating buffer; the absmax statistics must stay fp32
        # (and the code tables exact), so restore their dtype from the originals after a move.
        before = {name: self._buffers.get(name) for name in _QUANT_BUFFERS}
        self._nf4_view = None  # it would keep the tensors from before the move alive
        super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers.get(name)
            if old is not None and new is not None and new.dtype != old.dtype:
                self._buffers[name] = old.to(device=new.device)
        return self

    def extra_repr(self) -> str:
        dq = "double_quant" if self.double_quant else "plain"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"nf4={dq}, compute_dtype={self.compute_dtype}, backend={self.backend}"
        )
