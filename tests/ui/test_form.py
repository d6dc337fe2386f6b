"""The recipe form is generated from the schema: every field, dotted labels, schema defaults, and a lossless round trip."""

import gradio as gr
import pytest
from pydantic import BaseModel

from studio.config.load import load_recipe
from studio.config.schema import Recipe
from studio.config.shipped import recipes_dir, shipped_recipe, shipped_recipes
from studio.config.validate import validate_recipe
from studio.config.yaml_text import dump_recipe
from studio.ui.form import form_fields, recipe_to_values, values_to_raw
from studio.ui.tabs.recipe import command_for, make_widget, preview


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
            # A table (gr.Dataframe) holds its rows with their headers.
            assert (widget.value["data"] if spec.kind == "table" else widget.value) == default
            assert spec.info, f"{spec.key} has no docstring"
    # The widget values of a default Recipe are the schema defaults, and they read back unchanged.
    assert validate_recipe(values_to_raw(specs, defaults)) == Recipe()
    assert values_to_raw(specs, defaults)["lora"]["targets"] == schema_default("lora.targets")


def test_widget_kinds_follow_types():
    kinds = {s.key: s.kind for s in form_fields()}
    assert kinds["method"] == "dropdown" and kinds["train.gradient_checkpointing"] == "checkbox"
    assert kinds["lora.rank"] == "int" and kinds["train.learning_rate"] == "float" and kinds["model.name"] == "text"
    choices = {s.key: s.choices for s in form_fields()}
    assert choices["method"] == ("lora", "qlora", "dora", "dpo", "orpo", "grpo")
    assert kinds["grpo.rewards"] == "table" and kinds["grpo.loss_type"] == "dropdown" and kinds["grpo.reward_file"] == "text"
    rewards = next(s for s in form_fields() if s.key == "grpo.rewards")
    assert [(c.key, c.kind) for c in rewards.columns] == [("name", "text"), ("weight", "float"), ("args", "mapping")]


@pytest.mark.parametrize("name", shipped_recipes())
def test_round_trip_of_every_shipped_recipe(name):
    path = shipped_recipe(name)
    loaded = load_recipe(path)
    specs = form_fields()
    again = validate_recipe(values_to_raw(specs, recipe_to_values(specs, loaded)))
    assert again == loaded
    assert dump_recipe(again) == dump_recipe(loaded)


def test_edits_become_recipe_values_and_set_arguments():
    specs = form_fields()
    path = recipes_dir() / "smollm2/135m-qlora.yaml"
    base = load_recipe(path)
    values = dict(zip([s.key for s in specs], recipe_to_values(specs, base)))
    values.update({"lora.rank": 8.0, "lora.targets": "q_proj, v_proj", "data.columns": "{instruction: question}", "train.max_steps": "", "train.eval_steps": None, "eval.limit": " 5 ", "data.system_prompt": ""})
    recipe = validate_recipe(values_to_raw(specs, list(values.values())))
    assert recipe.lora.rank == 8 and recipe.lora.targets == ["q_proj", "v_proj"]
    assert recipe.data.columns == {"instruction": "question"} and recipe.train.max_steps is None and recipe.eval.limit == 5 and recipe.data.system_prompt is None
    command = command_for(str(path), base, recipe)
    assert command.startswith("studio train smollm2/135m-qlora")
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


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"lora": {"rank": 0}}, {"lora.rank": "greater than or equal to 1"}),
        ({"lora": {"rank": 0, "alpha": -1}}, {"lora.rank": "greater than or equal to 1", "lora.alpha": "greater than 0"}),
        ({"train": {"max_steps": "x"}}, {"train.max_steps": "valid integer"}),
        ({"train": {"eval_steps": 2}}, {"train.eval_steps": "needs validation data"}),  # cross-field check
        ({"train": {"learning_rate": "nan"}}, {"train.learning_rate": "finite number"}),  # found by `where`
    ],
)
def test_errors_are_placed_under_their_fields(raw, expected):
    from studio.errors import StudioError
    from studio.ui.form import field_errors
    from studio.ui.tabs.recipe import check_form_error, field_updates

    specs = form_fields()
    recipe, error = check_form_error(raw)
    assert recipe is None and isinstance(error, StudioError)
    errors = field_errors(error, [s.key for s in specs])
    assert set(errors) == set(expected)
    for key, text in expected.items():
        assert text in errors[key]
    updates = dict(zip([s.key for s in specs], field_updates(specs, errors)))
    for key in expected:
        assert updates[key]["elem_classes"] == ["field-error"] and updates[key]["info"].startswith("⚠")
    assert updates["model.name"]["elem_classes"] == [] and updates["model.name"]["info"] == next(s.info for s in specs if s.key == "model.name")


def test_preview_names_the_fields_in_error():
    from studio.ui.tabs.recipe import preview_with_errors

    specs = form_fields()
    values = recipe_to_values(specs, Recipe())
    values[[s.key for s in specs].index("lora.rank")] = 0
    status, text, _, _, raw, errors = preview_with_errors(specs, values, None, 8.0)
    assert raw is None and text == "" and list(errors) == ["lora.rank"] and "`lora.rank`" in status


def test_model_picker_fills_model_name(tmp_path, tiny_llama_dir):
    from studio.config.schema import BUNDLED_DEMO_MODEL
    from studio.errors import StudioError
    from studio.ui.model_picker import HELP, KINDS, kind_of, model_name_for

    assert set(HELP) == set(KINDS)
    assert model_name_for("bundled demo model", "anything") == BUNDLED_DEMO_MODEL
    assert model_name_for("local directory", str(tiny_llama_dir)) == str(tiny_llama_dir.resolve())
    assert model_name_for("hub id", " Qwen/Qwen2.5-0.5B-Instruct ") == "Qwen/Qwen2.5-0.5B-Instruct"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert model_name_for("GGUF file", str(gguf)) == str(gguf.resolve())
    for kind, text, message in [
        ("local directory", str(tmp_path / "missing"), "no such folder"),
        ("local directory", str(tmp_path), "no config.json"),
        ("GGUF file", str(tiny_llama_dir), "does not end in .gguf"),
        ("GGUF file", str(tmp_path / "gone.gguf"), "no such file"),
        ("hub id", "not a/hub id", "not a hub id"),
        ("hub id", "", "type a hub id"),
    ]:
        with pytest.raises(StudioError, match=message):
            model_name_for(kind, text)
    assert [kind_of(n) for n in (BUNDLED_DEMO_MODEL, str(tiny_llama_dir), str(gguf), "Qwen/Qwen2.5-0.5B-Instruct")] == list(KINDS)
