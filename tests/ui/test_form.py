"""The recipe form is generated from the schema: every field, dotted labels, schema defaults, and a lossless round trip."""

import gradio as gr
import pytest
from pydantic import BaseModel

from studio.recipe import Recipe
from studio.recipe_io import dump_recipe, load_recipe, validate_recipe
from studio.ui.context import recipes_root, shipped_recipes
from studio.ui.recipe_tab import command_for, make_widget, preview
from studio.ui.schema_form import form_fields, recipe_to_values, values_to_raw


def schema_keys() -> list[str]:
    keys = []
    for section, field in Recipe.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += [f"{section}.{name}" for name in ann.model_fields]
        else:
            keys.append(section)
    return keys


def schema_default(key: str):
    node = Recipe().to_yaml_dict()
    for part in key.split("."):
        node = node[part]
    return node


def test_form_covers_every_schema_field_with_its_default_and_help():
    specs = form_fields()
    assert [s.key for s in specs] == schema_keys()
    defaults = recipe_to_values(specs, Recipe())
    with gr.Blocks():
        for spec, default in zip(specs, defaults):
            widget = make_widget(spec)
            assert widget.label == spec.key
            assert spec.default == schema_default(spec.key)
            assert widget.value == default
            assert spec.info, f"{spec.key} has no docstring"
    # The widget values of a default Recipe are the schema defaults, and they read back unchanged.
    assert validate_recipe(values_to_raw(specs, defaults)) == Recipe()
    assert values_to_raw(specs, defaults)["lora"]["targets"] == schema_default("lora.targets")


def test_widget_kinds_follow_types():
    kinds = {s.key: s.kind for s in form_fields()}
    assert kinds["method"] == "dropdown" and kinds["train.gradient_checkpointing"] == "checkbox"
    assert kinds["lora.rank"] == "int" and kinds["train.learning_rate"] == "float" and kinds["model.name"] == "text"
    choices = {s.key: s.choices for s in form_fields()}
    assert choices["method"] == ("lora", "qlora", "dora")


@pytest.mark.parametrize("name", shipped_recipes())
def test_round_trip_of_every_shipped_recipe(name):
    path = recipes_root() / name
    loaded = load_recipe(path)
    specs = form_fields()
    again = validate_recipe(values_to_raw(specs, recipe_to_values(specs, loaded)))
    assert again == loaded
    assert dump_recipe(again) == dump_recipe(loaded)


def test_edits_become_recipe_values_and_set_arguments():
    specs = form_fields()
    path = recipes_root() / "smollm2/135m-qlora.yaml"
    base = load_recipe(path)
    values = dict(zip([s.key for s in specs], recipe_to_values(specs, base)))
    values.update({"lora.rank": 8.0, "lora.targets": "q_proj, v_proj", "data.columns": "{instruction: question}", "train.max_steps": "", "train.eval_steps": None, "eval.limit": " 5 ", "data.system_prompt": ""})
    recipe = validate_recipe(values_to_raw(specs, list(values.values())))
    assert recipe.lora.rank == 8 and recipe.lora.targets == ["q_proj", "v_proj"]
    assert recipe.data.columns == {"instruction": "question"} and recipe.train.max_steps is None and recipe.eval.limit == 5 and recipe.data.system_prompt is None
    command = command_for(str(path), base, recipe)
    assert command.startswith("studio train recipes/smollm2/135m-qlora.yaml")
    assert "--set lora.rank=8" in command and "'lora.targets=[q_proj, v_proj]'" in command and "train.max_steps=null" in command
    # The printed command reproduces the form.
    import shlex

    overrides = [a for a in shlex.split(command.replace("\\\n", " "))[3:] if a != "--set"]
    assert load_recipe(path, overrides) == recipe


def test_preview_shows_errors_and_yaml():
    specs = form_fields()
    values = dict(zip([s.key for s in specs], recipe_to_values(specs, Recipe())))
    status, text, command, memory, raw = preview(specs, list(values.values()), None, 8)
    assert "valid" in status and "method: qlora" in text and raw is not None and "Peak" in memory
    values["lora.rank"] = 0
    status, text, command, memory, raw = preview(specs, list(values.values()), None, 8)
    assert raw is None and "lora.rank" in status and "greater than or equal to 1" in status
