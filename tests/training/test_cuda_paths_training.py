"""Training paths that only run with a GPU or with several processes, exercised on the CPU: fitting a
recipe to the GPU before loading, running out of GPU memory while loading, and the fused loss under DDP."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import recipe_dict

from studio.config.load import load_recipe
from studio.errors import StudioError

CUDA = torch.device("cuda")
HUB_NAME = "acme/tiny-chat"  # a hub id outside the estimator's shape table


@pytest.fixture
def hub_model(monkeypatch, tiny_llama_dir):
    """A hub model the estimator knows no shape for, resolved (as if downloaded) to the tiny Llama."""
    import studio.modeling.source

    monkeypatch.setattr(studio.modeling.source, "resolve_model", lambda name, revision=None: tiny_llama_dir)
    return HUB_NAME


def _gpu_of(monkeypatch, gib: float) -> None:
    import studio.memory.gpus

    monkeypatch.setattr(studio.memory.gpus, "detect_gpu_gib", lambda: gib)


def test_auto_fit_sizes_a_hub_model_outside_the_shape_table(monkeypatch, hub_model, tiny_data, tmp_path):
    from studio.training.prepare import prepare_run

    _gpu_of(monkeypatch, 24.0)
    raw = recipe_dict(hub_model, tiny_data, tmp_path / "out", train={"auto_fit": True, "device": "auto"})
    recipe, run_dir = prepare_run(load_recipe(raw), CUDA, resume=False, overwrite=False)
    assert recipe.train.batch_size == 4  # the tiny model fits as written
    assert json.loads((run_dir / "env.json").read_text())["auto_fit"] == {}


def test_too_small_gpu_gets_a_verdict_for_a_hub_model_outside_the_shape_table(monkeypatch, hub_model, tiny_data, tmp_path):
    from studio.training.prepare import prepare_run

    _gpu_of(monkeypatch, 0.01)
    raw = recipe_dict(hub_model, tiny_data, tmp_path / "out", train={"device": "auto"})
    with pytest.raises(StudioError, match="GiB of GPU memory"):
        prepare_run(load_recipe(raw), CUDA, resume=False, overwrite=False)
    assert not (tmp_path / "out").exists()  # refused before the run directory was made


def test_out_of_gpu_memory_while_loading_is_a_studio_error(monkeypatch, tiny_llama_dir, tiny_data, tmp_path):
    import studio.modeling.loading
    from studio.training.train import train

    def no_memory(recipe, device):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB")

    monkeypatch.setattr(studio.modeling.loading, "load_for_training", no_memory)
    raw = recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "oom")
    with pytest.raises(StudioError) as info:
        train(load_recipe(raw), progress=False)
    assert "out of GPU memory while loading" in str(info.value) and "method: qlora" in info.value.fix


@pytest.fixture
def one_rank_group():
    """A gloo process group of one rank (no ports: an in-memory store), destroyed afterwards."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_fused_loss_through_a_ddp_wrapper(one_rank_group, tiny_llama_dir, tiny_data, tmp_path):
    """The trainer hands compute_loss its DDP wrapper (the model of every `--gpus N` run); the fused loss
    must find the head inside it and give the same loss and adapter gradients as on the bare model."""
    from torch.nn.parallel import DistributedDataParallel

    from studio.modeling.fused_loss import fused_causal_lm_loss
    from studio.modeling.loading import load_for_training

    recipe = load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "out", train={"fused_loss": True}))
    model, _, _ = load_for_training(recipe, torch.device("cpu"))
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :4] = -100
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    bare = fused_causal_lm_loss(model, inputs)
    bare.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)

    wrapped = fused_causal_lm_loss(DistributedDataParallel(model), inputs)
    wrapped.backward()
    torch.testing.assert_close(wrapped, bare)
    for name, grad in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad)
