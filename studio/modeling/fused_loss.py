"""The training loss through the studio's fused linear + cross-entropy kernel (`train.fused_loss: true`).

The decoder runs as usual; its last hidden states go straight into `fused_linear_cross_entropy` with
the output head's weight, so the tokens x vocabulary logits are never materialised and the head's
gradient is never computed (the head is frozen under LoRA). The loss is summed over trained tokens
and divided by the number of trained tokens in the whole accumulated batch, exactly as trl does.
"""

from __future__ import annotations

import torch

from studio.errors import StudioError


def causal_lm_of(model):
    """The transformers causal-LM module inside a (DDP- or compile-wrapped, peft-wrapped) model.

    For reading its head and config only: the forward pass still goes through `model` itself, so every
    wrapper's hooks run (DDP's gradient reducer, FSDP's gathers).
    """
    from accelerate.utils import extract_model_from_parallel

    # The trainer hands compute_loss its DDP wrapper, which forwards no attributes of the model inside.
    inner = extract_model_from_parallel(model, keep_torch_compile=False)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def check_fused_loss_supported(model) -> None:
    """Refuse models whose head the fused loss cannot reproduce (a LoRA-wrapped head, scaled logits)."""
    lm = causal_lm_of(model)
    head = lm.get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor) or hasattr(head, "lora_A"):
        raise StudioError("train.fused_loss needs a plain linear output head", where="train.fused_loss", fix="leave lm_head out of lora.targets, or set train.fused_loss: false")
    config = lm.config.get_text_config()
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
        if getattr(config, name, None) not in (None, 1, 1.0):
            raise StudioError(f"this model scales its logits ({name}); the fused loss does not", where="train.fused_loss", fix="set train.fused_loss: false")


def fused_causal_lm_loss(model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """Next-token loss of a batch (labels already -100 where untrained), without full logits."""
    from studio_kernels.ops.fused_ce import fused_linear_cross_entropy

    lm = causal_lm_of(model)
    labels = inputs["labels"]
    backbone_inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    # The whole model runs (not just its backbone), so every wrapper's hooks fire: FSDP gathers the
    # sharded weights of the final norm and head only in the outer forward. `logits_to_keep=1` makes the
    # head compute one position's logits; the backbone's output is taken from a hook.
    captured = {}
    handle = lm.base_model.register_forward_hook(lambda _m, _a, out: captured.__setitem__("hidden", out.last_hidden_state))
    try:
        model(**backbone_inputs, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    hidden = captured["hidden"]
    head = lm.get_output_embeddings()
    shifted = labels[:, 1:].to(head.weight.device)
    softcap = getattr(lm.config.get_text_config(), "final_logit_softcapping", None)
    total = fused_linear_cross_entropy(
        hidden[:, :-1].to(head.weight.device), head.weight, shifted, bias=head.bias, reduction="sum", softcap=softcap
    )
    count = num_items_in_batch if num_items_in_batch is not None else (shifted != -100).sum().clamp(min=1)
    return total / torch.as_tensor(count, device=total.device)
