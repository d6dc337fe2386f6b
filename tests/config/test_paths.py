"""Where a recipe's relative paths and names lead: the recipe's folder, then the working directory, nowhere
else; and a shipped recipe by its name from any folder."""

from __future__ import annotations

import json

import pytest
import yaml

from studio.cli import main
from studio.config.load import load_recipe
from studio.config.shipped import examples_dir, find_recipe, shipped_recipe, shipped_recipes
from studio.errors import StudioError


def recipe_file(folder, data_path: str):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": data_path}}), encoding="utf-8")
    return path


def test_relative_data_is_found_next_to_the_recipe_then_in_the_working_directory(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path / "project" / "recipes", "train.jsonl")
    (tmp_path / "project" / "recipes" / "train.jsonl").write_text("{}\n")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "train.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path / "cwd")
    assert load_recipe(recipe).data.path == str((tmp_path / "project" / "recipes" / "train.jsonl").resolve())
    (tmp_path / "project" / "recipes" / "train.jsonl").unlink()
    assert load_recipe(recipe).data.path == str((tmp_path / "cwd" / "train.jsonl").resolve())


def test_a_file_of_the_same_name_in_a_parent_folder_is_never_picked_up(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path / "a" / "b" / "c", "data.jsonl")
    (tmp_path / "a" / "data.jsonl").write_text('{"text": "unrelated"}\n')  # an ancestor of the recipe's folder
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    resolved = load_recipe(recipe).data.path
    assert resolved == str((tmp_path / "a" / "b" / "c" / "data.jsonl").resolve())  # where the recipe says, not the ancestor
    with pytest.raises(StudioError, match="dataset not found") as info:
        main_validate(recipe)
    assert str(tmp_path / "a" / "b" / "c") in info.value.what and "working directory" in info.value.fix


def main_validate(recipe):
    from studio.data import load_examples

    loaded = load_recipe(recipe)
    load_examples(loaded.data.path, loaded.data)


def test_shipped_recipes_run_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert "smollm2/135m-qlora" in shipped_recipes()
    assert find_recipe("smollm2/135m-qlora") == shipped_recipe("smollm2/135m-qlora") == find_recipe("smollm2/135m-qlora.yaml")
    recipe = load_recipe("smollm2/135m-qlora")
    assert recipe.output.name == "smollm2-135m-qlora"
    assert recipe.data.path.startswith(str(examples_dir().resolve()))  # ../../examples from the recipe's own folder
    assert main(["validate", "smollm2/135m-qlora", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data_rows"] > 0


def test_an_unknown_name_lists_what_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StudioError, match="recipe file not found") as info:
        load_recipe("smollm2/135m-qlroa")
    assert "studio recipes" in info.value.fix and "deepseek-r1/1.5b-qlora" in info.value.fix


def test_a_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2").mkdir()
    mine = tmp_path / "smollm2" / "135m-qlora"
    mine.write_text(yaml.safe_dump({"method": "lora"}), encoding="utf-8")
    assert load_recipe("smollm2/135m-qlora").method == "lora"
