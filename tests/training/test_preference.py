"""Preference training: data spellings are detected and rendered; DPO and ORPO raise the preference margin."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import recipe_dict, write_jsonl

from studio.config.load import load_recipe
from studio.data import Renderer, load_examples, normalize, read_rows, render_pairs
from studio.errors import StudioError
from studio.modeling.adapter import load_with_adapter
from studio.modeling.loading import load_base, load_tokenizer
from studio.training.train import train


@torch.no_grad()
def preference_margin(model, tokenizer, pairs: list[dict]) -> float:
    """Mean over pairs of log p(chosen | prompt) - log p(rejected | prompt): what preference training raises."""
    device = next(model.parameters()).device
    margins = []
    for pair in pairs:
        prompt_ids = tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"]
        scores = []
        for key in ("chosen", "rejected"):
            ids = tokenizer(pair["prompt"] + pair[key], add_special_tokens=False)["input_ids"]
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:], device=device)[:, None])[:, 0]
            scores.append(float(logp[len(prompt_ids) - 1 :].sum()))
        margins.append(scores[0] - scores[1])
    return sum(margins) / len(margins)


def _pairs(n=16):
    rows = []
    for i in range(n):
        a, b = i % 5, (i * 3) % 5
        rows.append({"prompt": f"add {a} and {b}", "chosen": str(a + b), "rejected": str(a + b + 1)})
    return rows


def test_preference_spellings_normalize_to_the_same_pair(tmp_path):
    flat = {"prompt": "add 1 and 2", "chosen": "3", "rejected": "4"}
    listed = {"prompt": [{"role": "user", "content": "add 1 and 2"}], "chosen": [{"role": "assistant", "content": "3"}], "rejected": [{"role": "assistant", "content": "4"}]}
    whole = {
        "chosen": [{"role": "user", "content": "add 1 and 2"}, {"role": "assistant", "content": "3"}],
        "rejected": [{"from": "human", "value": "add 1 and 2"}, {"from": "gpt", "value": "4"}],
    }
    path = write_jsonl(tmp_path / "p.jsonl", [flat, listed, whole])
    fmt, examples = normalize(read_rows(path))
    assert fmt == "preference"
    expected = ([{"role": "user", "content": "add 1 and 2"}], "3", "4")
    assert [(list(e.messages), e.chosen, e.rejected) for e in examples] == [expected] * 3


def test_bad_preference_rows_are_clear_errors(tmp_path):
    same = write_jsonl(tmp_path / "same.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "a"}])
    with pytest.raises(StudioError, match="identical") as info:
        normalize(read_rows(same))
    assert f"{same}:1" in str(info.value)
    diverging = write_jsonl(tmp_path / "div.jsonl", [{"chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "b"}]}])
    with pytest.raises(StudioError, match="same conversation"):
        normalize(read_rows(diverging))


def test_pairs_render_with_the_chat_template_and_end_with_eos(tiny_tokenizer):
    _fmt, examples = normalize(read_rows_from(_pairs(1)))
    pair = render_pairs(Renderer(tiny_tokenizer, 64), examples)[0]
    assert pair["prompt"].endswith("<|im_start|>assistant\n")
    assert pair["chosen"] == "0<|im_end|>" and pair["rejected"] == "1<|im_end|>"


def read_rows_from(rows):
    from studio.data.readers import Row

    return [Row(r, f"row {i}") for i, r in enumerate(rows)]


def test_sft_refuses_preference_data_and_dpo_refuses_sft_data(tiny_llama_dir, tiny_data, tmp_path):
    prefs = write_jsonl(tmp_path / "prefs.jsonl", _pairs())
    with pytest.raises(StudioError, match="method dpo"):
        train(load_recipe(recipe_dict(tiny_llama_dir, prefs, tmp_path / "a")), progress=False)
    with pytest.raises(StudioError, match="needs preference data"):
        train(load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "b", method="dpo", preference={"adapter": "lora"})), progress=False)


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_preference_training_raises_the_margin(method, tiny_llama_dir, tmp_path):
    prefs = write_jsonl(tmp_path / "prefs.jsonl", _pairs())
    raw = recipe_dict(tiny_llama_dir, prefs, tmp_path / method, method=method, preference={"adapter": "qlora", "beta": 0.5}, train={"max_steps": 8, "learning_rate": 5e-3, "batch_size": 4})
    recipe = load_recipe(raw)
    tokenizer = load_tokenizer(tiny_llama_dir, recipe)
    pairs = render_pairs(Renderer(tokenizer, 64), load_examples(str(prefs), recipe.data)[1])
    before = preference_margin(load_base(tiny_llama_dir, torch.float32, torch.device("cpu")), tokenizer, pairs)
    result = train(recipe, progress=False)
    after = preference_margin(load_with_adapter(recipe, result.adapter_dir).model, tokenizer, pairs)
    # The margin (nats) must grow clearly; random drift over 8 tiny steps stays well below this.
    assert after > before + 0.2, (before, after)
    manifest = json.loads((result.run_dir / "data.json").read_text())
    assert manifest["format"] == "preference" and manifest["train"]["pairs"] == 16


def test_a_validation_split_never_takes_every_pair(tmp_path, tiny_tokenizer, tiny_llama_dir):
    """The split SFT uses guards against leaving nothing to train on; preference data shares it."""
    from studio.training.preference import build_preference_data

    prefs = write_jsonl(tmp_path / "one.jsonl", _pairs(1))
    recipe = load_recipe(recipe_dict(tiny_llama_dir, prefs, tmp_path / "run", method="dpo", data={"val_split": 0.5}))
    with pytest.raises(StudioError, match="leaves no training pairs out of 1"):
        build_preference_data(recipe, tiny_tokenizer)
    prefs = write_jsonl(tmp_path / "four.jsonl", _pairs(4))
    recipe = load_recipe(recipe_dict(tiny_llama_dir, prefs, tmp_path / "run", method="dpo", data={"val_split": 0.5}))
    pairs, val, manifest = build_preference_data(recipe, tiny_tokenizer)
    assert (len(pairs), len(val)) == (2, 2) and manifest["val"]["pairs"] == 2
