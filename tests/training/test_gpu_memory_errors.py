"""A GPU that is too small gets the estimator's verdict before loading; an out-of-memory error during
training leaves a resumable run and says which setting to change."""

from __future__ import annotations

import pytest
import torch
from helpers import recipe_dict
from transformers import TrainerCallback

from studio.config.load import load_recipe
from studio.errors import StudioError
from studio.memory.fit import check_fits
from studio.training.checkpoints import last_checkpoint
from studio.training.sft import build_trainer
from studio.training.train import train


def test_too_small_gpu_is_refused_before_loading_with_settings_to_change():
    recipe = load_recipe("recipes/llama3.1/8b-qlora.yaml")
    # 8 GiB: too small as written, but smaller micro-batches fit; the error names them.
    with pytest.raises(StudioError) as info:
        check_fits(recipe, "8GB")
    text = str(info.value)
    assert "GiB of GPU memory" in text and "--set train.batch_size=1" in text and "auto_fit" in text
    # 6 GiB: nothing in this recipe's reach fits; the error says what would.
    with pytest.raises(StudioError) as info:
        check_fits(recipe, "6GB")
    assert "use a GPU with at least" in str(info.value)
    assert check_fits(recipe, "80GB")["fits"]


class _OomAtStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_during_training_is_a_clear_error_and_resumable(tiny_llama_dir, tiny_data, tmp_path, monkeypatch):
    import studio.training.sft as train_module

    def with_oom(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        trainer.add_callback(_OomAtStep(3))
        return trainer

    monkeypatch.setattr(train_module, "build_trainer", with_oom)
    raw = recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "oom", train={"max_steps": 4, "save_steps": 2})
    with pytest.raises(StudioError) as info:
        train(load_recipe(raw), progress=False)
    text = str(info.value)
    assert "out of GPU memory at step 3" in text and "checkpoint-2" in text and "train.batch_size" in text
    assert last_checkpoint(tmp_path / "oom").name == "checkpoint-2"
    monkeypatch.undo()
    from studio.training.prepare import resume_recipe

    result = train(resume_recipe(tmp_path / "oom"), resume=True, progress=False)
    assert result.steps == 4
