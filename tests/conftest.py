"""Shared test setup: offline, CPU-friendly environment and session-wide tiny models and data.

The environment is set before anything imports studio_kernels: Triton reads TRITON_INTERPRET when a
kernel is defined, so setting it later would be too late.
"""

import os

import torch  # reads no TRITON_INTERPRET; only studio_kernels must come after the environment

if not torch.cuda.is_available():
    # No usable GPU here (nvidia-smi on PATH is not enough: a container may have it without a device):
    # Triton kernels run in the CPU interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# STUDIO_HOME is left alone on purpose: the bundled demo model is converted from GGUF once per machine
# into the default cache (~/.cache/adapter-studio), and the tiny test models are plain local folders.

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402

if torch.get_num_threads() > 2:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """make(arch, chat_template=CHATML) -> a saved tiny model dir, built once per session and variant."""
    root = tmp_path_factory.mktemp("models")
    cache: dict = {}

    def make(arch: str = "llama", chat_template: str | None = helpers.CHATML) -> Path:
        key = (arch, chat_template)
        if key not in cache:
            cache[key] = helpers.make_model_dir(root / f"{arch}-{len(cache)}", arch, chat_template)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def vlms(tmp_path_factory) -> dict:
    """{arch: a saved tiny random vision-language model dir} for every tiny_vlms architecture, built once."""
    from tiny_vlms import VLM_ARCHITECTURES, make_vlm_dir

    root = tmp_path_factory.mktemp("vlms")
    return {arch: make_vlm_dir(root / arch, arch) for arch in VLM_ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_models) -> Path:
    """The tiny Llama with an explicit ChatML template."""
    return tiny_models("llama")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The tiny BPE tokenizer with an explicit ChatML template and eos <|im_end|>."""
    return helpers.make_tokenizer(helpers.CHATML)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """24 deterministic arithmetic chats as JSONL."""
    return helpers.write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", helpers.chat_rows(24))


@pytest.fixture(scope="session")
def tiny_test_data(tmp_path_factory) -> Path:
    """4 held-out arithmetic chats as JSONL (for eval)."""
    rows = [
        {"messages": [{"role": "user", "content": f"add {a} and {b}"}, {"role": "assistant", "content": str(a + b)}]}
        for a, b in [(1, 1), (2, 5), (4, 4), (9, 0)]
    ]
    return helpers.write_jsonl(tmp_path_factory.mktemp("testdata") / "test.jsonl", rows)
