"""Which 4-bit backend a QLoRA run takes is said out loud; `auto` never switches silently."""

from __future__ import annotations

import sys

import helpers
import pytest
import torch

from studio.config.load import load_recipe
from studio.errors import StudioError
from studio.modeling.loading import load_for_training, quant_backend


def qlora(tmp_path, model_dir, data, backend):
    return load_recipe(helpers.recipe_dict(model_dir, data, tmp_path / "run", method="qlora", quant={"backend": backend, "compute_dtype": "float32"}))


def test_auto_takes_the_studio_kernels_and_says_so(tmp_path, tiny_llama_dir, tiny_data, capsys):
    recipe = qlora(tmp_path, tiny_llama_dir, tiny_data, "auto")
    assert quant_backend(recipe) == ("studio", "quant.backend auto: the studio's NF4 kernels")
    load_for_training(recipe, torch.device("cpu"))
    assert "4-bit base weights: studio (quant.backend auto" in capsys.readouterr().err


def test_auto_without_the_kernels_falls_back_with_the_reason(monkeypatch, tmp_path, tiny_llama_dir, tiny_data, capsys):
    monkeypatch.setitem(sys.modules, "studio_kernels", None)  # importing it now raises ImportError
    recipe = qlora(tmp_path, tiny_llama_dir, tiny_data, "auto")
    backend, why = quant_backend(recipe)
    assert backend == "bitsandbytes" and "cannot be imported" in why and "studio_kernels" in why  # the import error itself


def test_studio_without_the_kernels_is_an_error_not_a_switch(monkeypatch, tmp_path, tiny_llama_dir, tiny_data):
    monkeypatch.setitem(sys.modules, "studio_kernels", None)
    with pytest.raises(StudioError, match="cannot be imported") as info:
        quant_backend(qlora(tmp_path, tiny_llama_dir, tiny_data, "studio"))
    assert info.value.where == "quant.backend" and "quant.backend: bitsandbytes" in info.value.fix
    assert quant_backend(qlora(tmp_path, tiny_llama_dir, tiny_data, "bitsandbytes"))[0] == "bitsandbytes"
