"""The base-model chooser above `model.name`: bundled demo model, local directory, GGUF file or hub id.

It only fills `model.name`; the library (`studio.modeling.source.resolve_model`) is what loads the model.
The checks here are the cheap ones a person wants while typing: the folder exists and has a config.json,
the file exists and ends in .gguf, the hub id looks like `org/name`.
"""

from __future__ import annotations

import re
from pathlib import Path

from studio.config.schema import BUNDLED_DEMO_MODEL, names_local_model
from studio.errors import StudioError

KINDS = ("bundled demo model", "local directory", "GGUF file", "hub id")

HELP = {
    "bundled demo model": f"SmolLM2-135M-Instruct, shipped with the studio (`{BUNDLED_DEMO_MODEL}`): no download, trains on a laptop CPU or any GPU. Start here.",
    "local directory": "A folder written by `save_pretrained` (it has `config.json`, the weights as safetensors and the tokenizer), e.g. `/data/models/Qwen2.5-0.5B-Instruct`.",
    "GGUF file": "A `.gguf` file (llama.cpp format), e.g. `~/models/qwen2.5-0.5b-instruct-q8_0.gguf`. It is converted once into a plain model folder in the studio cache.",
    "hub id": "A Hugging Face hub id such as `Qwen/Qwen2.5-0.5B-Instruct`. It must already be in the local Hugging Face cache when the studio runs offline.",
}

PLACEHOLDER = {
    "bundled demo model": BUNDLED_DEMO_MODEL,
    "local directory": "/path/to/model-folder",
    "GGUF file": "/path/to/model.gguf",
    "hub id": "org/name, e.g. Qwen/Qwen2.5-0.5B-Instruct",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")


def kind_of(name: str) -> str:
    """Which chooser option shows `model.name`."""
    name = (name or "").strip()
    if name.startswith("bundled:"):
        return "bundled demo model"
    if name.lower().endswith(".gguf"):
        return "GGUF file"
    if names_local_model(name):
        return "local directory"
    return "hub id"


def model_name_for(kind: str, text: str) -> str:
    """The `model.name` value for a chooser option and its text, or a StudioError saying what is wrong."""
    text = (text or "").strip()
    if kind == "bundled demo model":
        return BUNDLED_DEMO_MODEL
    if kind not in KINDS:
        raise StudioError(f"unknown model source '{kind}'", where="model.name", fix=f"pick one of: {', '.join(KINDS)}")
    if not text:
        raise StudioError(f"type a {kind}", where="model.name", fix=HELP[kind])
    if kind == "local directory":
        path = Path(text).expanduser()
        if not path.is_dir():
            raise StudioError(f"no such folder: {text}", where="model.name", fix="type the full path of a folder on this machine")
        if not (path / "config.json").is_file():
            raise StudioError(f"{text} has no config.json, so it is not a Hugging Face model folder", where="model.name", fix=HELP[kind])
        return str(path.resolve())
    if kind == "GGUF file":
        path = Path(text).expanduser()
        if path.suffix.lower() != ".gguf":
            raise StudioError(f"{text} does not end in .gguf", where="model.name", fix="pick a .gguf file, or choose 'local directory' for a model folder")
        if not path.is_file():
            raise StudioError(f"no such file: {text}", where="model.name", fix="type the full path of a .gguf file on this machine")
        return str(path.resolve())
    if not _HUB_ID.match(text) or text.startswith(("/", ".", "~")):
        raise StudioError(f"'{text}' is not a hub id", where="model.name", fix="write it as org/name, e.g. Qwen/Qwen2.5-0.5B-Instruct")
    return text


__all__ = ["HELP", "KINDS", "PLACEHOLDER", "kind_of", "model_name_for"]
