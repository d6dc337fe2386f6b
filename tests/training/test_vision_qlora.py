"""QLoRA of a vision-language model: the language model's linear layers in 4-bit, the tower, projector and head in
full precision, with either 4-bit backend (the studio's NF4 kernels, bitsandbytes), and training still learns."""

from __future__ import annotations

import pytest
import torch
from tiny_vlms import vision_recipe

from studio.modeling.loading import load_for_training
from studio.modeling.vision import kept_in_16_bit
from studio.training.rundir import read_metrics
from studio.training.train import train

LANGUAGE = {"gemma3": ".language_model.", "idefics3": ".text_model."}


def is_4bit(module) -> bool:
    from studio.modeling.quant import QuantLinear

    try:
        import bitsandbytes as bnb
    except ImportError:  # the studio backend needs no bitsandbytes
        return isinstance(module, QuantLinear)
    return isinstance(module, (QuantLinear, bnb.nn.Linear4bit))


def test_the_kept_modules_are_the_tower_the_projector_and_the_head(vlms):
    assert sorted(kept_in_16_bit(vlms["gemma3"])) == ["lm_head", "model.multi_modal_projector", "model.vision_tower"]
    assert sorted(kept_in_16_bit(vlms["idefics3"])) == ["lm_head", "model.connector", "model.vision_model"]


@pytest.mark.parametrize("backend", ["studio", "bitsandbytes"])
@pytest.mark.parametrize("arch", ["gemma3", "idefics3"])
def test_only_the_language_model_is_quantized(vlms, tmp_path, arch, backend):
    recipe = vision_recipe(vlms[arch], tmp_path, method="qlora", quant={"backend": backend})
    model, _, _ = load_for_training(recipe, torch.device("cpu"))
    layers = [(n, m) for n, m in model.named_modules() if not any(m.children()) and hasattr(m, "in_features") and "lora_" not in n]
    language = [m for n, m in layers if LANGUAGE[arch] in n]
    others = [(n, m) for n, m in layers if LANGUAGE[arch] not in n]
    assert language and all(is_4bit(m) for m in language)
    assert others and not any(is_4bit(m) for _, m in others)
    assert all(m.weight.dtype == torch.float32 for _, m in others)  # the recipe's precision (float32 on a CPU)


def test_a_vision_qlora_run_learns(vlms, tmp_path):
    result = train(vision_recipe(vlms["gemma3"], tmp_path, method="qlora", quant={"backend": "studio"}), progress=False)
    curve = [m["train_loss"] for m in read_metrics(result.run_dir) if m.get("train_loss") is not None]
    assert len(curve) == 8 and curve[-1] < curve[0] - 0.3
