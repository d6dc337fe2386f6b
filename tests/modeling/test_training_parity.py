"""A tiny Llama trained 5 LoRA steps on the studio NF4 backend and on bitsandbytes QLoRA.

Both quantize the same weights to the same NF4 bytes, so with the same seed and data the
losses must agree to accumulation-order noise; a scaling, masking or gradient bug in either
path shows up as a divergence.
"""

import pytest
import torch
from tiny_llama import lora_config, tiny_llama, train
from transformers import BitsAndBytesConfig, LlamaForCausalLM

from studio.modeling.quant import quantize_model_linears, register_studio_lora
from studio_kernels.modules import QuantLinear


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llama")
    tiny_llama().save_pretrained(path)
    return path


def _bnb_model(path):
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    return LlamaForCausalLM.from_pretrained(path, quantization_config=quant, device_map="cpu", dtype=torch.float32)


def _studio_model(path):
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert quantize_model_linears(model, torch.float32) == 14
    return model


@pytest.mark.slow
def test_studio_and_bitsandbytes_qlora_train_alike(checkpoint):
    bnb_model = _bnb_model(checkpoint)
    studio_model = _studio_model(checkpoint)
    # same NF4 bytes in both models before training
    ours = studio_model.model.layers[1].mlp.up_proj
    theirs = bnb_model.model.layers[1].mlp.up_proj
    assert isinstance(ours, QuantLinear)
    assert torch.equal(ours.qweight, theirs.weight.data.reshape(-1))
    assert torch.equal(ours.absmax_q, theirs.weight.quant_state.absmax)

    bnb_peft, bnb_losses = train(bnb_model, lora_config())
    studio_peft, studio_losses = train(studio_model, register_studio_lora(lora_config()))

    assert studio_losses[-1] < studio_losses[0] - 0.05  # it learned something
    torch.testing.assert_close(torch.tensor(studio_losses), torch.tensor(bnb_losses), atol=2e-4, rtol=0)
    a_ours = studio_peft.base_model.model.model.layers[0].self_attn.v_proj.lora_A["default"].weight
    a_bnb = bnb_peft.base_model.model.model.layers[0].self_attn.v_proj.lora_A["default"].weight
    torch.testing.assert_close(a_ours, a_bnb, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_triton_backend_trains_like_torch_backend(checkpoint):
    """The same loop with every QuantLinear forced onto the Triton kernels (interpreter on CPU)."""
    torch_model = _studio_model(checkpoint)
    triton_model = _studio_model(checkpoint)
    for module in triton_model.modules():
        if isinstance(module, QuantLinear):
            module.backend = "triton"
    _, torch_losses = train(torch_model, register_studio_lora(lora_config()), steps=2)
    _, triton_losses = train(triton_model, register_studio_lora(lora_config()), steps=2)
    torch.testing.assert_close(torch.tensor(triton_losses), torch.tensor(torch_losses), atol=2e-4, rtol=0)
