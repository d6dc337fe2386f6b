"""Tiny models, tokenizers and datasets for the library tests: built in milliseconds, saved like real ones.

Every model is a random-weight transformers model of hidden size 64 (a multiple of the NF4 blocksize)
saved with safetensors next to a small byte-level BPE tokenizer, so the studio loads it exactly as it
loads a hub model: `model.name: <dir>`.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]  # the repository root
IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [EOT, IM_START, IM_END]

# The same ChatML template the studio falls back to, given explicitly so tests do not depend on the fallback.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# A template whose assistant turns do not end with the EOS token: the renderer must insert one.
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ 'Bot: ' + message['content'] + '\\n' }}"
    "{% else %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Bot:' }}{% endif %}"
)

ARCHITECTURES = ("llama", "qwen2", "gemma3", "mistral", "gpt2")

_WORDS = ["add", "and", "plus", "what", "is", "the", "sum", "of", "please", "answer", "user", "assistant", "system"]


def chat_rows(n: int = 24) -> list[dict]:
    """Deterministic arithmetic chats: "add 2 and 3" -> "5"; every third one has a system prompt."""
    rows = []
    for i in range(n):
        a, b = (i * 7) % 10, (i * 3 + 1) % 10
        messages = [{"role": "user", "content": f"add {a} and {b}"}, {"role": "assistant", "content": str(a + b)}]
        if i % 3 == 0:
            messages.insert(0, {"role": "system", "content": "You are a calculator."})
        rows.append({"messages": messages})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _corpus() -> list[str]:
    lines = []
    for i in range(300):
        a, b = i % 10, (i * 7) % 10
        lines.append(f"{IM_START}user\nadd {a} and {b}{IM_END}\n{IM_START}assistant\n{a + b}{IM_END}\n")
        lines.append(f"what is the sum of {a} plus {b}? please answer: {a + b}. User: Bot: system: You are a calculator.")
        lines.append(" ".join(_WORDS[(i + k) % len(_WORDS)] for k in range(8)) + " {\"item\": \"x\", \"qty\": 12}")
    return lines


def make_tokenizer(chat_template: str | None = CHATML, eos: str = IM_END):
    """A byte-level BPE tokenizer (vocab ~400) wrapped as PreTrainedTokenizerFast; no template when None."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=EOT, bos_token=None, unk_token=None)
    fast.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def model_config(arch: str, vocab_size: int, eos_id: int, pad_id: int):
    """A tiny config of the architecture: hidden 64, 2 layers."""
    from transformers import (
        Gemma3TextConfig,
        GPT2Config,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
    )

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
    )
    if arch == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if arch == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True, use_sliding_window=False)
    if arch == "mistral":
        return MistralConfig(**common, tie_word_embeddings=False, sliding_window=None)
    if arch == "gemma3":
        return Gemma3TextConfig(
            **common, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
            layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
        )
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=256,
            eos_token_id=eos_id, bos_token_id=eos_id, pad_token_id=pad_id,
        )
    raise ValueError(arch)


def make_model_dir(path: Path, arch: str = "llama", chat_template: str | None = CHATML, seed: int = 0, init_std: float | None = None) -> Path:
    """Save a seeded random tiny model of `arch` with its tokenizer to `path` (safetensors); return path.

    `init_std` overrides the weights' initialisation spread (transformers' 0.02 gives near-uniform next-token
    probabilities, which an adapter can barely sharpen: reinforcement-learning tests need a model that can)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    path = Path(path)
    tokenizer = make_tokenizer(chat_template)
    config = model_config(arch, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    if init_std is not None:
        config.initializer_range = init_std
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def recipe_dict(model_dir: Path, data_path: Path, out_dir: Path, **sections) -> dict:
    """A tiny, fast recipe as plain data; `sections` update single keys, e.g. train={"max_steps": 2}."""
    raw = {
        "model": {"name": str(model_dir), "dtype": "float32"},
        "method": "lora",
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "targets": "all-linear"},
        "quant": {"backend": "studio", "compute_dtype": "float32"},
        "data": {"path": str(data_path), "format": "auto", "max_length": 64},
        "train": {
            "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "save_steps": 2, "device": "cpu",
            "seed": 42, "warmup_ratio": 0.0, "lr_scheduler": "cosine",
        },
        "eval": {"metric": "exact_match", "max_new_tokens": 4},
        "output": {"dir": str(out_dir), "name": "tiny"},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return raw


def make_run_dir(base_dir: Path, data_path: Path, run_dir: Path, seed: int = 0, lora_std: float = 0.05,
                 **sections) -> Path:
    """A run directory as training leaves it, holding a non-zero LoRA adapter on the tiny model `base_dir`.

    Writes run_dir/recipe.yaml (from `recipe_dict`; `sections` as there) and run_dir/adapter: a peft LoRA
    (rank 8, all-linear) whose B matrices are drawn from N(0, lora_std) with torch seed `seed`, saved with
    the base's tokenizer. peft starts B at zero, where a merge is a no-op and any parity check passes
    trivially; non-zero B makes merge and export checks compare something real. Returns run_dir.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.config.load import load_recipe
    from studio.config.yaml_text import dump_recipe

    run_dir = Path(run_dir)
    recipe = load_recipe(recipe_dict(base_dir, data_path, run_dir, **sections))
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, lora_std)
    model.save_pretrained(run_dir / "adapter", safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(run_dir / "adapter")
    return run_dir


# --- network audit ----------------------------------------------------------------------------------
# One process-wide audit hook (hooks cannot be removed) that records socket activity only while a
# `network_audit()` block is open; tests assert nothing left the machine.
import contextlib
import ipaddress
import sys

_AUDIT = {"active": 0, "events": []}


def _audit(event, args):
    if _AUDIT["active"] and event in ("socket.connect", "socket.getaddrinfo", "socket.sendto", "urllib.Request"):
        _AUDIT["events"].append((event, args))


sys.addaudithook(_audit)


def is_loopback(address) -> bool:
    """Whether a socket address stays on this machine (loopback or a Unix socket)."""
    if isinstance(address, (str, bytes)):
        return True
    host = address[0]
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def network_audit():
    """Yield a list that, after the block, holds every attempt to reach a non-loopback address."""
    outward: list = []
    start = len(_AUDIT["events"])
    _AUDIT["active"] += 1
    try:
        yield outward
    finally:
        _AUDIT["active"] -= 1
        for event, args in _AUDIT["events"][start:]:
            if event == "socket.connect" and not is_loopback(args[1]):
                outward.append((event, args[1]))
            elif event == "socket.getaddrinfo" and not is_loopback((args[0],)):
                outward.append((event, args[0]))
            elif event in ("urllib.Request", "socket.sendto"):
                outward.append((event, args[:2]))


# --- headless Chromium, for the tests that drive the real page ------------------------------------------------

# Debian's browser, driven by Playwright's Python package; `playwright install` (a download) is never run.
CHROMIUM = Path("/usr/bin/chromium")
# --no-sandbox: Chromium will not start as root without it (tests run as root in containers); --disable-gpu: none
# is there. The rest keeps the browser from reaching out (updates, sync, QUIC): a test talks to the local server only.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = "Debian chromium is not installed (apt-get install chromium)"
requires_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)


def hold_until(release: str | Path) -> list[str]:
    """A stand-in job's command line: a Python process that waits until the file `release` exists, then exits 0
    (queue tests decide when a "training" ends)."""
    import sys

    script = "import sys, time, pathlib; p = pathlib.Path(sys.argv[1]); [time.sleep(0.02) for _ in iter(lambda: p.exists(), True)]"
    return [sys.executable, "-c", script, str(release)]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_chromium(playwright, profile_dir: Path, **options):
    """A headless Chromium BrowserContext on the fresh profile folder `profile_dir`: /usr/bin/chromium with
    CHROMIUM_FLAGS. `options` go to Playwright's launch_persistent_context (viewport, accept_downloads, ...).

    For a browser per test module in tests/ui, use the `chromium` fixture of tests/ui/conftest.py instead.
    """
    return playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True, **options
    )
