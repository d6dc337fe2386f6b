"""lora.dtype: one rule for the adapter's dtype on both QLoRA backends (trl casts only bitsandbytes models)."""

import pytest
import torch
from helpers import recipe_dict

from studio.config.load import load_recipe
from studio.training.arguments import adapter_dtype


def _recipe(model_dir, data, out, **sections):
    return load_recipe(recipe_dict(model_dir, data, out, **sections))


def test_auto_is_bf16_only_for_qlora_computing_in_bf16(tiny_llama_dir, tiny_data, tmp_path):
    cpu = torch.device("cpu")
    assert adapter_dtype(_recipe(tiny_llama_dir, tiny_data, tmp_path, method="qlora"), cpu) == torch.float32  # compute float32
    assert adapter_dtype(_recipe(tiny_llama_dir, tiny_data, tmp_path, method="qlora", quant={"compute_dtype": "bfloat16"}), cpu) == torch.bfloat16
    assert adapter_dtype(_recipe(tiny_llama_dir, tiny_data, tmp_path, method="lora", quant={"compute_dtype": "bfloat16"}), cpu) == torch.float32
    assert adapter_dtype(_recipe(tiny_llama_dir, tiny_data, tmp_path, method="qlora", quant={"compute_dtype": "bfloat16"}, lora={"dtype": "float32"}), cpu) == torch.float32


@pytest.mark.parametrize("backend", ["studio", "bitsandbytes"])
@pytest.mark.parametrize("choice, expected", [("auto", torch.float32), ("bfloat16", torch.bfloat16)])
def test_both_backends_train_and_save_the_adapter_in_the_chosen_dtype(tiny_llama_dir, tiny_data, tmp_path, backend, choice, expected):
    """Without the studio's rule, trl would leave the bitsandbytes adapter in bf16 even when float32 is asked for."""
    from safetensors.torch import load_file

    from studio.training.train import train

    recipe = _recipe(tiny_llama_dir, tiny_data, tmp_path / "run", method="qlora", quant={"backend": backend}, lora={"dtype": choice}, train={"max_steps": 2})
    result = train(recipe, progress=False)
    adapter = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert {t.dtype for t in adapter.values()} == {expected}
    assert result.train_loss is not None and result.train_loss == result.train_loss  # finite, trained
