"""QLoRA on the studio backend: swap a model's linears for NF4 QuantLinear and teach peft about them.

Used when a recipe says ``quant.backend: studio``. Model-loading code does, in order::

    n = quantize_model_linears(model, compute_dtype=torch.bfloat16)   # base model, in place
    config = register_studio_lora(LoraConfig(...), model)             # before get_peft_model
    model = get_peft_model(model, config)

The adapter peft saves is a standard LoRA adapter (``...q_proj.lora_A.weight`` etc.), so
``PeftModel.from_pretrained`` loads it onto the plain full-precision base model.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig
from peft.tuners.lora.layer import Linear as LoraLinear
from torch import nn

from studio.errors import StudioError
from studio_kernels.modules import QuantLinear
from studio_kernels.ops.nf4_lora import nf4_lora_linear

KEPT_IN_FULL_PRECISION = ("lm_head",)  # the output head stays 16-bit, as in QLoRA (and bitsandbytes)


def quantize_model_linears(model: nn.Module, compute_dtype: torch.dtype, backend: str = "auto") -> int:
    """Replace every nn.Linear in `model` but the output head by an NF4 QuantLinear, in place.

    Returns how many layers were swapped. Quantization matches bitsandbytes NF4 with double quantization
    byte for byte. `backend` is the kernels' ("auto", "triton" or "torch"; the benchmarks force "triton").
    """
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and not set(name.split(".")) & set(KEPT_IN_FULL_PRECISION)
    ]
    for name, module in targets:
        if module.weight.device.type == "meta":
            raise StudioError(
                f"layer {name} has no weights loaded (meta device)",
                where=name,
                fix="load the model fully (no device_map offload) before quantizing it",
            )
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantLinear.from_linear(module, compute_dtype=compute_dtype, backend=backend))
    return len(targets)


def make_quantized_weights_shardable(model: nn.Module) -> int:
    """Turn every QuantLinear's packed NF4 bytes into frozen parameters so FSDP shards them (see
    QuantLinear.make_shardable); returns how many layers changed. Done before the trainer wraps the model."""
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    for layer in layers:
        layer.make_shardable()
    return len(layers)


class StudioLoraLinear(LoraLinear):
    r"""peft LoRA on a QuantLinear base:  y = dequant(W0) x + b + (alpha / r) B A x.

    With exactly one active adapter, no dropout (or eval mode) and no LoRA variant, forward
    runs the fused NF4 LoRA autograd Function (base and adapter in one pass, only the 4-bit
    weight kept for backward). Anything else (several adapters, dropout while training, DoRA,
    mixed-batch adapters, disabled adapters) falls back to peft's own path over the QuantLinear.
    Adapter parameters and their names are exactly peft's LoRA Linear ones.
    """

    def _get_in_out_features(self, module: nn.Module) -> tuple[int, int]:
        # peft's generic lookup warns "unsupported layer type" for anything it does not know.
        if isinstance(module, QuantLinear):
            return module.in_features, module.out_features
        return super()._get_in_out_features(module)

    def _fusable(self, kwargs: dict[str, Any]) -> str | None:
        """The adapter name to fuse, or None when the standard path must run."""
        if self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
            return None
        active = [a for a in self.active_adapters if a in self.lora_A]
        if len(active) != 1:
            return None
        name = active[0]
        if name in self.lora_variant or self.lora_bias.get(name, False):
            return None
        if self.training and not isinstance(self.lora_dropout[name], nn.Identity):
            return None
        if not isinstance(self.get_base_layer(), QuantLinear):
            return None
        return name

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Fused QLoRA forward when possible, peft's standard LoRA forward otherwise."""
        name = self._fusable(kwargs)
        if name is None or args or any(v is not None for k, v in kwargs.items()):
            return super().forward(x, *args, **kwargs)
        self._check_forward_args(x, *args, **kwargs)
        base: QuantLinear = self.get_base_layer()
        y = nf4_lora_linear(
            x.to(base.compute_dtype),
            base.nf4_weight(),
            self.lora_A[name].weight,
            self.lora_B[name].weight,
            self.scaling[name],
            bias=base.bias,
            backend=base.backend,
            large_m=base.large_m,
        )
        return y.to(x.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Refuse: merging into 4-bit weights would requantize and lose the adapter's precision."""
        raise StudioError(
            "cannot merge a LoRA adapter into an NF4-quantized base layer",
            where=f"{type(self.get_base_layer()).__name__}",
            fix="save the adapter and merge it into the full-precision base model (studio merge)",
        )


def _quant_linear_names(model: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, QuantLinear)})


def register_studio_lora(config: LoraConfig, model: nn.Module | None = None) -> LoraConfig:
    """Let peft put standard LoRA on QuantLinear layers; returns `config`. Idempotent.

    peft registers custom layers per LoraConfig instance, so call this on the config passed to
    ``get_peft_model``. peft's ``target_modules="all-linear"`` only recognises nn.Linear; pass
    the quantized `model` and it is expanded to the QuantLinear layer names.
    """
    if not isinstance(config, LoraConfig):
        raise StudioError(
            f"register_studio_lora needs a peft LoraConfig, got {type(config).__name__}",
            fix="build the adapter config with peft.LoraConfig",
        )
    custom = config._custom_modules or {}
    if custom.get(QuantLinear) is not StudioLoraLinear:
        config._register_custom_module({QuantLinear: StudioLoraLinear})
    targets = config.target_modules
    if isinstance(targets, str) and targets.lower() == "all-linear" and model is not None:
        names = _quant_linear_names(model)
        if not names:
            raise StudioError(
                "target_modules='all-linear' found no quantized linear layers",
                where="lora.target_modules",
                fix="call quantize_model_linears(model, ...) before register_studio_lora",
            )
        config.target_modules = set(names)
    return config
