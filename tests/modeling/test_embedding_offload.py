"""train.offload_embeddings: the frozen input table lives outside the module tree, and training is unchanged."""

import json

import pytest
import torch
from helpers import make_model_dir, recipe_dict

from studio.config.load import load_recipe
from studio.errors import StudioError
from studio.modeling.embedding_offload import CPUEmbedding, offload_input_embeddings


def _model(path, arch="llama"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(make_model_dir(path, arch)), dtype=torch.float32)


def test_the_table_leaves_the_module_tree_and_survives_moves_and_casts(tmp_path):
    model = _model(tmp_path / "m")
    ids = torch.tensor([[1, 5, 9, 2]])
    before = model(ids).logits
    table = model.get_input_embeddings().weight
    freed = offload_input_embeddings(model)
    assert freed == table.numel() * 4
    wrapper = model.get_input_embeddings()
    assert isinstance(wrapper, CPUEmbedding) and wrapper.weight is table
    assert all(p is not table for p in model.parameters())
    assert not any("embed_tokens" in k for k in model.state_dict())
    torch.testing.assert_close(model(ids).logits, before, rtol=0, atol=0)
    model.to(torch.float64)  # stands in for model.to("cuda"): a move/cast of the model skips the table
    assert wrapper.weight.dtype == torch.float32 and wrapper.weight is table
    assert offload_input_embeddings(model) == 0  # idempotent


def test_a_table_tied_to_the_head_is_refused(tmp_path):
    model = _model(tmp_path / "g", "gemma3")  # the tiny Gemma 3 ties its embedding to the head
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with pytest.raises(StudioError, match="ties its input embedding"):
        offload_input_embeddings(model)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_training_with_the_table_offloaded_gives_the_same_adapter(tiny_llama_dir, tiny_data, tmp_path, method):
    from safetensors.torch import load_file

    from studio.training.train import train

    runs = {}
    for offload in (False, True):
        raw = recipe_dict(tiny_llama_dir, tiny_data, tmp_path / str(offload), method=method,
                          train={"max_steps": 2, "gradient_checkpointing": True, "offload_embeddings": offload})
        runs[offload] = train(load_recipe(raw), progress=False).run_dir
    a, b = (load_file(str(runs[o] / "adapter" / "adapter_model.safetensors")) for o in (False, True))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    losses = [[json.loads(line).get("train_loss") for line in (runs[o] / "metrics.jsonl").read_text().splitlines()] for o in (False, True)]
    assert losses[0] == losses[1]
