"""Errors a user meets before training starts: each is one StudioError that says what to do, never a crash."""

from __future__ import annotations

import json
import pickle
import socket

import helpers
import numpy as np
import pytest
import torch
import yaml

from studio.cli import main
from studio.config.load import load_recipe
from studio.data import Renderer, normalize
from studio.data.readers import Row
from studio.errors import StudioError
from studio.modeling.loading import load_base, load_for_training, load_tokenizer
from studio.modeling.source import resolve_model


def _clear(exc: StudioError, *fragments: str) -> None:
    text = str(exc)
    assert exc.what and exc.where and exc.fix, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


@pytest.mark.parametrize("name, fragment", [("./no/such/model", "model directory not found"), ("/no/such/model.gguf", "GGUF file not found"), ("bundled:nope", "unknown bundled model")])
def test_model_path_that_does_not_exist(name, fragment):
    with pytest.raises(StudioError) as info:
        resolve_model(name)
    _clear(info.value, fragment, "model.name")


def test_model_dir_without_config(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(StudioError) as info:
        resolve_model(str(tmp_path))
    _clear(info.value, "config.json")


def test_missing_model_through_the_cli(tmp_path, tiny_data, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(helpers.recipe_dict(tmp_path / "no-model", tiny_data, tmp_path / "run")))
    assert main(["train", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model directory not found") and "fix:" in err and "Traceback" not in err


def test_hub_id_offline_and_not_cached(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = []

    def refuse(self, address, *a, **k):
        attempts.append(address)
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(StudioError) as info:
        resolve_model("adapter-studio-tests/no-such-model-xyz")
    _clear(info.value, "not in the local Hugging Face cache", "HF_HUB_OFFLINE=1", "model.name", "download it once")
    assert attempts == []


def _write_gguf(path, arch: str):
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("arch", ["rwkv6", "studio-made-up"])
def test_gguf_of_an_unsupported_architecture(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    path = _write_gguf(tmp_path / f"{arch}.gguf", arch)
    with pytest.raises(StudioError) as info:
        resolve_model(str(path))
    _clear(info.value, f"architecture {arch}", str(path), "architecture transformers supports")
    assert not list((tmp_path / "home").rglob("config.json"))  # nothing half-converted is left as a model


@pytest.mark.parametrize("content", [b"", b"GGUF", b"GGUF" + bytes(range(200)), b"not a gguf at all"], ids=["empty", "magic-only", "garbage", "text"])
def test_corrupt_gguf_is_a_studio_error(content, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(StudioError) as info:
        resolve_model(str(path))
    _clear(info.value, "GGUF", str(path))


def test_truncated_gguf_is_a_studio_error(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    full = _write_gguf(tmp_path / "full.gguf", "llama").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(StudioError) as info:
        resolve_model(str(path))
    _clear(info.value, str(path))


def test_tokenizer_without_chat_template_falls_back_to_chatml(tiny_models):
    tokenizer = load_tokenizer(tiny_models("llama", None))
    renderer = Renderer(tokenizer, 64)
    _, examples = normalize([Row({"messages": [{"role": "user", "content": "add 1 and 2"}, {"role": "assistant", "content": "3"}]}, "x:1")])
    text = renderer.conversation_text(examples[0].messages)
    assert text.startswith("<|im_start|>user\nadd 1 and 2<|im_end|>") and "<|im_start|>assistant\n3<|im_end|>" in text
    assert renderer.encode(examples[0]).trained_tokens > 0


def test_tokenizer_without_eos_is_a_studio_error(tmp_path):
    tokenizer = helpers.make_tokenizer(helpers.CHATML)
    tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config.get("eos_token") is None
    with pytest.raises(StudioError) as info:
        load_tokenizer(tmp_path)
    _clear(info.value, "end-of-sequence", "eos_token")


class _Boom:
    """A pickle that runs code when loaded: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_model_dir(tmp_path, tiny_llama_dir):
    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_llama_dir / name).exists():
            (model_dir / name).write_bytes((tiny_llama_dir / name).read_bytes())
    marker = tmp_path / "code-ran"
    with open(model_dir / "pytorch_model.bin", "wb") as f:
        pickle.dump({"payload": _Boom(marker)}, f)
    return model_dir, marker


def test_pickle_only_model_dir_is_refused_and_runs_no_code(tmp_path, tiny_llama_dir):
    model_dir, marker = _pickle_model_dir(tmp_path, tiny_llama_dir)
    with pytest.raises(StudioError) as info:
        load_base(model_dir, torch.float32, torch.device("cpu"))
    _clear(info.value, "no .safetensors weights", "pickle")
    assert not marker.exists()


def test_pickle_only_model_dir_through_training(tmp_path, tiny_llama_dir, tiny_data, capsys):
    model_dir, marker = _pickle_model_dir(tmp_path, tiny_llama_dir)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(helpers.recipe_dict(model_dir, tiny_data, tmp_path / "run")))
    assert main(["train", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no .safetensors weights" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize("trust", [False, True])
def test_trust_remote_code_follows_the_recipe(trust, tiny_llama_dir, tiny_data, tmp_path, monkeypatch):
    import transformers

    calls = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, _name=cls.__name__, **kwargs):
            calls.append((_name, kwargs.get("trust_remote_code", False), kwargs.get("use_safetensors")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    raw = helpers.recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "run")
    if trust:
        raw["model"]["trust_remote_code"] = True
    load_for_training(load_recipe(raw), torch.device("cpu"))
    assert {name for name, _, _ in calls} == {"AutoModelForCausalLM", "AutoTokenizer"}
    assert all(flag is trust for _, flag, _ in calls), calls
    assert all(safe is True for name, _, safe in calls if name == "AutoModelForCausalLM"), calls


def test_allow_pickle_loads_plain_weights_but_still_runs_no_code(tmp_path, tiny_llama_dir):
    # With allow_pickle, a malicious pickle is still refused (weights_only loading runs no code) ...
    model_dir, marker = _pickle_model_dir(tmp_path, tiny_llama_dir)
    with pytest.raises(StudioError):
        load_base(model_dir, torch.float32, torch.device("cpu"), allow_pickle=True)
    assert not marker.exists()
    # ... and a plain state dict saved with torch.save loads to the same weights as the safetensors copy.
    reference = load_base(tiny_llama_dir, torch.float32, torch.device("cpu"))
    torch.save(reference.state_dict(), model_dir / "pytorch_model.bin")
    loaded = load_base(model_dir, torch.float32, torch.device("cpu"), allow_pickle=True)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
