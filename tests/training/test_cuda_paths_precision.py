"""Precision choices that only take effect on a GPU, checked on the CPU: the logic is device-independent,
so the GPU's answers (capability, name) are patched in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import recipe_dict

from studio.config.load import load_recipe

CUDA = torch.device("cuda")


@pytest.fixture
def fake_gpu(monkeypatch):
    """fake_gpu(major): pretend one CUDA GPU of compute capability `major`.x is visible, one that can hold
    bf16 tensors whatever its capability (as torch's emulation check says of a T4)."""

    def install(major: int, name: str = "Fake GPU"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(major=major, minor=0, name=name))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)

    return install


def _recipe(tmp_path, tiny_llama_dir, tiny_data, **sections):
    return load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "out", **sections))


def test_auto_dtype_is_float16_on_a_gpu_that_only_emulates_bf16(fake_gpu):
    from studio.modeling.loading import pick_dtype

    fake_gpu(major=7)  # T4 / RTX 20xx: bf16 tensors exist, bf16 math is emulated
    assert pick_dtype("auto", CUDA) == torch.float16
    fake_gpu(major=9)  # H100 / H200
    assert pick_dtype("auto", CUDA) == torch.bfloat16
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32


def test_fp16_gpu_trains_fp32_adapters_with_loss_scaling(fake_gpu, tmp_path, tiny_llama_dir, tiny_data):
    from studio.training.arguments import adapter_dtype, mixed_precision_dtype

    fake_gpu(major=7)
    recipe = _recipe(tmp_path, tiny_llama_dir, tiny_data, method="qlora", model={"dtype": "auto"}, quant={"compute_dtype": "auto"})
    assert mixed_precision_dtype(recipe, CUDA) == torch.float16
    assert adapter_dtype(recipe, CUDA) == torch.float32  # GradScaler refuses fp16 gradients


def test_mixed_precision_follows_the_loaded_dtype_not_the_first_parameter(tmp_path, tiny_llama_dir, tiny_data):
    """QLoRA with the embedding table offloaded: the first floating parameter left in the module tree is a
    float32 adapter weight, yet the model runs in bf16 and must train with bf16 mixed precision."""
    from studio.modeling.loading import load_for_training
    from studio.training.arguments import trainer_arguments

    recipe = _recipe(
        tmp_path, tiny_llama_dir, tiny_data, method="qlora", model={"dtype": "bfloat16"},
        quant={"backend": "studio", "compute_dtype": "bfloat16"}, lora={"dtype": "float32"}, train={"offload_embeddings": True},
    )
    model, _, _ = load_for_training(recipe, torch.device("cpu"))
    assert model.dtype == torch.float32  # what the trainer flags used to follow
    args = trainer_arguments(recipe, tmp_path / "run", CUDA, has_val=False)
    assert args["bf16"] is True and args["fp16"] is False
    on_cpu = trainer_arguments(recipe, tmp_path / "run", torch.device("cpu"), has_val=False)
    assert on_cpu["bf16"] is False and on_cpu["fp16"] is False


def test_float32_model_on_a_gpu_gets_no_mixed_precision(tmp_path, tiny_llama_dir, tiny_data):
    from studio.training.arguments import mixed_precision_dtype

    assert mixed_precision_dtype(_recipe(tmp_path, tiny_llama_dir, tiny_data), CUDA) is None


def test_ddp_does_not_rebroadcast_buffers_every_forward(tmp_path, tiny_llama_dir, tiny_data):
    """The studio's 4-bit base lives in module buffers, identical on every rank: DDP must not resend it
    from rank 0 before every micro-batch."""
    from transformers import Trainer
    from trl import SFTConfig

    from studio.modeling.loading import load_for_training
    from studio.training.arguments import trainer_arguments

    recipe = _recipe(tmp_path, tiny_llama_dir, tiny_data, method="qlora")
    model, _, _ = load_for_training(recipe, torch.device("cpu"))
    config = SFTConfig(**trainer_arguments(recipe, tmp_path / "run", torch.device("cpu"), has_val=False))
    trainer = Trainer(model=model, args=config)
    assert trainer.accelerator.ddp_handler.broadcast_buffers is False


def test_env_json_records_the_training_device_not_just_any_visible_gpu(fake_gpu):
    from studio.env.environment import environment

    fake_gpu(major=9, name="NVIDIA H200")
    assert environment(torch.device("cpu"))["device"] == "cpu"
    assert environment(CUDA)["device"] == "NVIDIA H200"
    assert environment()["device"] == "NVIDIA H200"
