"""The commands added with the package layout: `studio recipes`, `studio --version`, recipe names as arguments."""

from __future__ import annotations

import json

import pytest

from studio import __version__
from studio.cli import main
from studio.config.shipped import shipped_recipes


def test_recipes_lists_every_shipped_recipe_with_its_estimate(capsys):
    assert main(["recipes", "--gpu", "8GB", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in listed["recipes"]}
    assert sorted(rows) == shipped_recipes() and len(rows) >= 14
    assert rows["smollm2/135m-qlora"]["method"] == "qlora" and rows["smollm2/135m-qlora"]["fits"] is True
    assert rows["llama3.1/8b-qlora"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert rows["llama3.1/8b-qlora"]["peak_gib"] > 8 and rows["llama3.1/8b-qlora"]["fits"] is False
    assert main(["recipes", "--gpu", "8GB"]) == 0
    table = capsys.readouterr().out
    assert "llama3.1/8b-qlora" in table and "fits 8GB" in table and "studio train smollm2/135m-qlora" in table


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"adapter-studio {__version__}"


def test_estimate_takes_a_recipe_name(capsys):
    assert main(["estimate", "llama3.1/8b-qlora", "--gpu", "80GB", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "meta-llama/Llama-3.1-8B-Instruct"


def test_train_help_lists_the_recipe_keys_from_the_schema(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "lora.rank = 16" in text and "adapter capacity" in text.lower() and "shipped recipe" in text
