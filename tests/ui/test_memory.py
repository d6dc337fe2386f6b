"""The memory estimator: its breakdown adds up, and it moves the right way with method, checkpointing and batch."""

import json

import pytest

from studio.memory import KNOWN_CONFIGS, estimate, format_estimate
from studio.recipe_io import load_recipe, validate_recipe

QWEN = "Qwen/Qwen2.5-0.5B-Instruct"


def recipe(**sections):
    raw = {"model": {"name": QWEN}, "method": "qlora", "data": {"max_length": 512}, "train": {"batch_size": 4}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return validate_recipe(raw)


def test_breakdown_sums_to_peak_and_fits():
    result = estimate(recipe(), gpu_gib=8)
    assert result["known"] and set(result["breakdown"]) == {"weights", "lora", "activations", "logits", "overhead"}
    assert result["peak_gib"] == pytest.approx(sum(result["breakdown"].values()))
    assert result["fits"] is (result["peak_gib"] <= 8)
    assert estimate(recipe(), gpu_gib=0.5)["fits"] is False
    assert result["params"] == KNOWN_CONFIGS[QWEN]["params"]  # the shape formula reproduces the real count


def test_qlora_needs_less_than_lora():
    qlora = estimate(recipe(method="qlora"), 24)
    lora = estimate(recipe(method="lora"), 24)
    assert qlora["breakdown"]["weights"] < lora["breakdown"]["weights"]
    assert qlora["peak_gib"] < lora["peak_gib"]


def test_checkpointing_lowers_activations():
    plain = estimate(recipe(), 24)
    ckpt = estimate(recipe(train={"gradient_checkpointing": True}), 24)
    assert ckpt["breakdown"]["activations"] < plain["breakdown"]["activations"] / 4
    assert ckpt["peak_gib"] < plain["peak_gib"]


def test_more_batch_and_rank_cost_more():
    small, big = estimate(recipe(train={"batch_size": 2}), 24), estimate(recipe(train={"batch_size": 8}), 24)
    assert big["peak_gib"] > small["peak_gib"]
    assert big["breakdown"]["activations"] == pytest.approx(4 * small["breakdown"]["activations"])
    assert estimate(recipe(lora={"rank": 64, "alpha": 64}), 24)["lora_params"] == 4 * estimate(recipe(lora={"rank": 16}), 24)["lora_params"]
    fewer = estimate(recipe(lora={"targets": ["q_proj", "v_proj"]}), 24)
    assert 0 < fewer["lora_params"] < estimate(recipe(), 24)["lora_params"]


def test_every_shipped_recipe_has_an_estimate():
    from studio.ui.context import recipes_root, shipped_recipes

    for name in shipped_recipes():
        result = estimate(load_recipe(recipes_root() / name), 24)
        assert result["known"], name
        assert 0.5 < result["peak_gib"] < 200, name
        assert "Peak" in format_estimate(result)


def test_config_json_from_a_local_dir(tmp_path):
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from_dir = estimate(recipe(model={"name": str(tmp_path)}), 8)
    given = estimate(recipe(), 8, model_config=config)
    assert from_dir["source"].endswith("config.json")
    assert from_dir["params"] == given["params"] == 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128) + 2 * 1000 * 64 + 2 * 2 * 64 + 64


def test_unknown_model_says_so():
    result = estimate(recipe(model={"name": "someone/unknown-model"}), 8)
    assert result["known"] is False and result["peak_gib"] is None
    assert "unknown" in format_estimate(result)
