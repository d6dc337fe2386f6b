"""studio.modeling.quant: swapping linears, peft LoRA on QuantLinear, and the saved adapter format."""

import pytest
import torch
from peft import PeftModel, get_peft_model
from peft.tuners.lora.layer import (
    Linear as LoraStandard,  # peft's unfused LoRA: the oracle
)
from safetensors.torch import load_file
from tiny_llama import lora_config, tiny_llama, train
from torch import nn

from studio.errors import StudioError
from studio.modeling.quant import (
    StudioLoraLinear,
    quantize_model_linears,
    register_studio_lora,
)
from studio_kernels.modules import QuantLinear
from studio_kernels.ops.nf4_lora import NF4LoRAFunction


def test_quantize_model_linears_swaps_all_but_skipped():
    model = tiny_llama()
    n = quantize_model_linears(model, torch.float32)
    assert n == 2 * 7  # q k v o gate up down, two layers
    assert isinstance(model.model.layers[1].mlp.down_proj, QuantLinear)
    assert type(model.lm_head) is nn.Linear
    assert quantize_model_linears(model, torch.float32) == 0  # nothing left to swap


def test_quantized_model_stays_close_to_full_precision():
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    full = tiny_llama()
    quant = tiny_llama()
    quantize_model_linears(quant, torch.float32)
    with torch.no_grad():
        p_full = full(ids).logits.softmax(-1)
        p_quant = quant(ids).logits.softmax(-1)
    assert (p_full - p_quant).abs().max() < 0.05
    assert not torch.equal(p_full, p_quant)


def test_register_is_idempotent_and_expands_all_linear():
    model = tiny_llama()
    quantize_model_linears(model, torch.float32)
    config = lora_config(target_modules="all-linear")
    assert register_studio_lora(register_studio_lora(config, model), model) is config
    assert config._custom_modules == {QuantLinear: StudioLoraLinear}
    assert config.target_modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    with pytest.raises(StudioError, match="LoraConfig"):
        register_studio_lora({"r": 8})


def _count_fused_calls(monkeypatch):
    calls = []
    original = NF4LoRAFunction.forward

    def counting(ctx, *args):
        calls.append(1)
        return original(ctx, *args)

    monkeypatch.setattr(NF4LoRAFunction, "forward", staticmethod(counting))
    return calls


def test_fused_path_matches_peft_standard_path(monkeypatch):
    calls = _count_fused_calls(monkeypatch)
    model = tiny_llama()
    quantize_model_linears(model, torch.float32)
    peft_model = get_peft_model(model, register_studio_lora(lora_config()))
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, StudioLoraLinear)
    nn.init.normal_(layer.lora_B["default"].weight)
    x = torch.randn(2, 5, 64, requires_grad=True)

    fused = layer(x)
    assert len(calls) == 1
    fused.sum().backward()
    grads_fused = [x.grad.clone(), layer.lora_A["default"].weight.grad.clone()]
    x.grad = None
    layer.lora_A["default"].weight.grad = None

    standard = LoraStandard.forward(layer, x)  # peft's own path over the QuantLinear base
    assert len(calls) == 1
    standard.sum().backward()
    torch.testing.assert_close(fused, standard, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads_fused[0], x.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads_fused[1], layer.lora_A["default"].weight.grad, atol=1e-5, rtol=1e-5)


def test_dropout_in_training_falls_back(monkeypatch):
    calls = _count_fused_calls(monkeypatch)
    model = tiny_llama()
    quantize_model_linears(model, torch.float32)
    peft_model = get_peft_model(model, register_studio_lora(lora_config(lora_dropout=0.1)))
    ids = torch.randint(0, 256, (1, 8))
    peft_model.train()
    peft_model(input_ids=ids)
    assert calls == []
    peft_model.eval()  # dropout is a no-op in eval, so the fused path is allowed again
    peft_model(input_ids=ids)
    assert len(calls) == 14


def test_saved_adapter_is_standard_and_loads_on_full_precision_base(tmp_path):
    model = tiny_llama()
    quantize_model_linears(model, torch.float32)
    peft_model, losses = train(model, register_studio_lora(lora_config()), steps=2)
    peft_model.save_pretrained(tmp_path / "studio")
    # the same adapter trained on a plain nn.Linear model names its tensors identically
    plain_peft, _ = train(tiny_llama(), lora_config(), steps=1)
    plain_peft.save_pretrained(tmp_path / "plain")
    ours = load_file(tmp_path / "studio" / "adapter_model.safetensors")
    plain = load_file(tmp_path / "plain" / "adapter_model.safetensors")
    assert set(ours) == set(plain)
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in ours

    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path / "studio")
    q_proj = loaded.base_model.model.model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer) is nn.Linear
    trained = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    assert torch.equal(q_proj.lora_B["default"].weight, trained.lora_B["default"].weight)


def test_merge_into_quantized_base_is_refused():
    model = tiny_llama()
    quantize_model_linears(model, torch.float32)
    peft_model = get_peft_model(model, register_studio_lora(lora_config()))
    with pytest.raises(StudioError, match="cannot merge"):
        peft_model.merge_and_unload()
