"""The model card travels with the adapter: it names the base as others can get it, never a path of this machine."""

from __future__ import annotations

import json

import helpers
import yaml

from studio.training.model_card import BUNDLED_HUB_ID, shareable_base, write_model_card


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


def test_a_local_base_is_named_by_its_folder_only(tmp_path, tiny_llama_dir, tiny_data):
    run = helpers.make_run_dir(tiny_llama_dir, tiny_data, tmp_path / "run")
    cache = tmp_path / "cache" / "models" / "converted-1234"
    (run / "data.json").write_text(json.dumps({"path": str(tiny_data), "model_dir": str(cache), "sha256": "ab"}))
    card = write_model_card(run).read_text()
    assert str(tiny_llama_dir) not in card and str(cache) not in card and str(tmp_path) not in card
    assert tiny_llama_dir.name in card  # still says which model it was
    assert "base_model" not in front_matter(card)  # the hub field holds hub ids only


def test_a_hub_base_and_the_bundled_model_are_named_by_hub_id(tmp_path, tiny_llama_dir, tiny_data):
    assert shareable_base("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert shareable_base("bundled:smollm2-135m-instruct") == BUNDLED_HUB_ID
    assert shareable_base(str(tiny_llama_dir)) is None and shareable_base("./models/mine") is None
    run = helpers.make_run_dir(tiny_llama_dir, tiny_data, tmp_path / "run")
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["model"]["name"] = "bundled:smollm2-135m-instruct"
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    card = write_model_card(run).read_text()
    assert front_matter(card)["base_model"] == BUNDLED_HUB_ID
    assert f"from_pretrained({BUNDLED_HUB_ID!r})" in card
