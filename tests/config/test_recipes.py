"""Every shipped recipe is valid, explains itself and runs from its header; bad recipes fail clearly.

The first half walks recipes/ recursively (litgpt's tests/test_config_hub.py is the model), so a new
recipe is checked the moment it is added. The second half feeds load_recipe and `studio validate`
the mistakes people make, and checks each ends in one StudioError that names the file and the key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from studio.cli import main
from studio.config.load import load_recipe, parse_override
from studio.config.schema import Recipe
from studio.config.shipped import shipped_recipe
from studio.errors import StudioError

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
RECIPE_PATHS = sorted(p.relative_to(REPO).as_posix() for p in RECIPES.rglob("*.yaml"))
DEMO = REPO / "recipes" / "smollm2" / "135m-qlora.yaml"

REQUIRED_FAMILIES = {"llama3.2", "llama3.1", "qwen2.5", "gemma3", "deepseek-r1", "mistral", "gpt2", "smollm2"}

# Keys that cost memory or accuracy: wherever a recipe sets one, the line carries a comment saying so.
COMMENTED_KNOBS = ("dtype", "method", "rank", "alpha", "targets", "double_quant", "max_length", "batch_size", "learning_rate", "gradient_checkpointing")
# Keys every recipe states outright rather than inheriting, so the file (and the README table) shows them.
EXPLICIT_KEYS = ("model.name", "method", "lora.rank", "lora.alpha", "data.path", "data.max_length", "train.batch_size", "train.grad_accum", "train.learning_rate", "eval.metric", "output.name")


def _yaml_keys(node, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            keys.add(dotted)
            keys |= _yaml_keys(value, dotted)
    return keys


# ---------------------------------------------------------------------------------------------
# The shipped recipes
# ---------------------------------------------------------------------------------------------


def test_walk_finds_every_family():
    assert len(RECIPE_PATHS) >= 14, RECIPE_PATHS
    families = {Path(p).parent.name for p in RECIPE_PATHS}
    missing = REQUIRED_FAMILIES - families
    assert not missing, f"no recipe for {sorted(missing)}"
    assert all(Path(p).parent.parent == Path("recipes") for p in RECIPE_PATHS), "recipes live at recipes/<family>/<file>.yaml"


@pytest.mark.parametrize("rel", RECIPE_PATHS)
def test_recipe_loads(rel):
    recipe = load_recipe(REPO / rel)
    assert isinstance(recipe, Recipe)


@pytest.mark.parametrize("rel", RECIPE_PATHS)
def test_recipe_header_is_the_command_that_runs_it(rel):
    lines = (REPO / rel).read_text(encoding="utf-8").splitlines()
    name = rel.removeprefix("recipes/").removesuffix(".yaml")  # a shipped recipe runs by its name, from any folder
    assert lines[0] == f"# studio train {name}"
    assert shipped_recipe(name).resolve() == (REPO / rel).resolve()
    header = [line for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]]
    assert len([line for line in header if line.strip("# ")]) >= 2, "the header says what the recipe is for, not only the command"


@pytest.mark.parametrize("rel", RECIPE_PATHS)
def test_recipe_name_follows_its_path(rel):
    path = Path(rel)
    recipe = load_recipe(REPO / rel)
    # recipes/<family>/<size>-<method>.yaml, run name <family>-<size>-<method>
    size, _, method = path.stem.rpartition("-")
    assert re.fullmatch(r"\d+(\.\d+)?[mb]", size), f"stem {path.stem!r} is not <size>-<method>"
    assert method == recipe.method
    assert recipe.output.name == f"{path.parent.name}-{path.stem}"
    assert recipe.output.dir == "runs/{name}"


@pytest.mark.parametrize("rel", RECIPE_PATHS)
def test_recipe_data_paths_exist(rel):
    recipe = load_recipe(REPO / rel)
    assert Path(recipe.data.path).is_file()
    assert recipe.data.test_path and Path(recipe.data.test_path).is_file()
    if recipe.data.val_path:
        assert Path(recipe.data.val_path).is_file()
    if recipe.data.chat_template and recipe.data.chat_template.endswith(".jinja"):
        assert Path(recipe.data.chat_template).is_file()
    # Supervised recipes score the order-extraction JSON; GRPO ones the final number their reward checks; the
    # vision-language ones (on the shapes pictures) the one-sentence answer naming the shape.
    pictures = Path(recipe.data.path).parent.name == "shapes"
    assert recipe.eval.metric == ("numeric_answer" if recipe.method == "grpo" else "exact_match" if pictures else "field_accuracy")
    if pictures:
        assert Path(recipe.data.test_path).parent == Path(recipe.data.path).parent


@pytest.mark.parametrize("rel", RECIPE_PATHS)
def test_recipe_explains_its_costly_knobs(rel):
    text = (REPO / rel).read_text(encoding="utf-8")
    keys = _yaml_keys(yaml.safe_load(text))
    missing = [k for k in EXPLICIT_KEYS if k not in keys]
    assert not missing, f"{rel} leaves {missing} to the defaults"
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"\s*(\w+):", line)
        if match and match.group(1) in COMMENTED_KNOBS:
            assert "#" in line, f"{rel}:{number}: `{line.strip()}` costs memory or accuracy and has no comment"


@pytest.mark.parametrize("rel", RECIPE_PATHS)
def test_recipe_validates_from_any_directory(rel, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(REPO / rel), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True
    assert out["data_rows"] > 0 and out["test_rows"] > 0
    assert out["recipe"]["output"]["name"] == load_recipe(REPO / rel).output.name


def test_readme_lists_every_recipe():
    readme = (RECIPES / "README.md").read_text(encoding="utf-8")
    missing = [rel for rel in RECIPE_PATHS if rel.removeprefix("recipes/") not in readme]
    assert not missing, f"recipes/README.md does not list {missing}"


# ---------------------------------------------------------------------------------------------
# Bad recipes: one StudioError naming the file, the line where known, and the key
# ---------------------------------------------------------------------------------------------

BAD = {
    # id: (yaml text, fragments the message must contain)
    "typo-in-section": ("lora:\n  rnak: 8\n", ["lora.rnak", "did you mean 'lora.rank'", ":2"]),
    "typo-flow-style": ("lora: {rnak: 8}\n", ["lora.rnak", "did you mean 'lora.rank'", ":1"]),
    "key-outside-its-section": ("rank: 8\n", ["'rank'", "did you mean 'lora.rank'", ":1"]),
    "other-tools-name": ("train:\n  lr: 1e-4\n", ["train.lr", "did you mean 'train.learning_rate'", ":2"]),
    "unknown-section": ("trainer: {}\n", ["'trainer'", "did you mean 'train'"]),
    "wrong-literal": ("method: qlora4\n", ["method", "'lora', 'qlora', 'dora', 'dpo', 'orpo' or 'grpo'", "qlora4", ":1"]),
    "nan-learning-rate": ("train:\n  learning_rate: .nan\n", ["train.learning_rate", "finite", ":2"]),
    "inf-epochs": ("train:\n  epochs: .inf\n", ["train.epochs", "finite", ":2"]),
    "negative-learning-rate": ("train:\n  learning_rate: -1.0e-4\n", ["train.learning_rate", "greater than 0", "-0.0001", ":2"]),
    "text-learning-rate": ("train:\n  learning_rate: fast\n", ["train.learning_rate", "valid number", "'fast'"]),
    "absurd-rank": ("lora:\n  rank: 100000\n", ["lora.rank", "less than or equal to 1024", "100000", ":2"]),
    "zero-rank": ("lora:\n  rank: 0\n", ["lora.rank", "greater than or equal to 1", ":2"]),
    "fractional-rank": ("lora:\n  rank: 8.5\n", ["lora.rank", "integer", "8.5"]),
    "empty-targets": ("lora:\n  targets: []\n", ["lora.targets", "non-empty list"]),
    "section-is-a-value": ("lora: 8\n", ["'lora'", "dictionary"]),
    "absurd-alpha-ratio": ("lora:\n  rank: 1\n  alpha: 100\n", ["lora.alpha / lora.rank", "above 64"]),
    "val-path-and-val-split": (
        "data:\n  val_split: 0.1\n  val_path: examples/order_extraction/test.jsonl\n",
        ["data.val_path", "data.val_split", "not both"],
    ),
    "eval-steps-without-validation": ("train:\n  eval_steps: 5\n", ["train.eval_steps", "validation data"]),
    "two-problems-at-once": ("lora:\n  rank: 0\ntrain:\n  lr: 1\n", ["lora.rank", "train.lr", "train.learning_rate"]),
}


@pytest.mark.parametrize("text, fragments", BAD.values(), ids=BAD.keys())
def test_bad_recipe_is_one_clear_error(tmp_path, text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StudioError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message, "the error names the file"
    for fragment in fragments:
        if fragment.startswith(":"):
            assert f"{path}{fragment}" in message, f"the error points at line {fragment[1:]}"
        else:
            assert fragment in message
    assert message.startswith("error: ") and "\n  fix: " in message


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("lora:\n  rank: 8\n alpha: 16\n", 3, "expected <block end>"),  # indentation slip
        ("lora:\n  rank: [8\n", 3, "expected ',' or ']'"),  # unclosed list
        ("lora:\n\trank: 8\n", 2, "'\\t'"),  # a tab
    ],
    ids=["bad-indent", "unclosed-list", "tab"],
)
def test_invalid_yaml_names_the_line(tmp_path, text, line, fragment):
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StudioError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "not valid YAML" in message and fragment in message
    assert f"where: {path}:{line}" in message


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "empty"),
        (b"# only a comment\n", "empty"),
        (b"- model\n- lora\n", "must be a mapping of sections, got list"),
        (b"just some text\n", "must be a mapping of sections, got str"),
        (b"model:\n  name: caf\xe9\n", "not valid UTF-8"),
    ],
    ids=["empty", "comment-only", "list", "scalar", "latin-1"],
)
def test_unusable_file_is_one_clear_error(tmp_path, content, fragment):
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    with pytest.raises(StudioError) as info:
        load_recipe(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(StudioError, match="not found") as info:
        load_recipe(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)
    with pytest.raises(StudioError, match="is a directory"):
        load_recipe(tmp_path)


# ---------------------------------------------------------------------------------------------
# --set overrides
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item, key, value",
    [
        ("train.learning_rate=3e-4", "train.learning_rate", 3e-4),  # YAML 1.1 reads 3e-4 as a string
        ("train.learning_rate=3.0e-4", "train.learning_rate", 3e-4),
        ("train.max_steps=10", "train.max_steps", 10),
        ("lora.targets=[q_proj,v_proj]", "lora.targets", ["q_proj", "v_proj"]),
        ("train.gradient_checkpointing=true", "train.gradient_checkpointing", True),
        ("model.name=Qwen/Qwen2.5-0.5B-Instruct", "model.name", "Qwen/Qwen2.5-0.5B-Instruct"),
        ("output.name=a=b", "output.name", "a=b"),  # only the first '=' splits
    ],
)
def test_override_values_are_typed(item, key, value):
    parsed_key, parsed = parse_override(item)
    assert parsed_key == key
    assert parsed == value and type(parsed) is type(value)


def test_overrides_apply_on_top_of_the_file():
    recipe = load_recipe(DEMO, ["train.learning_rate=3e-4", "lora.targets=[q_proj,v_proj]", "train.max_steps=10", "method=lora"])
    assert recipe.train.learning_rate == pytest.approx(3e-4) and isinstance(recipe.train.learning_rate, float)
    assert recipe.lora.targets == ["q_proj", "v_proj"]
    assert recipe.train.max_steps == 10
    assert recipe.method == "lora"
    assert recipe.output.name == "smollm2-135m-qlora"  # the file's own name survives overrides


@pytest.mark.parametrize("item, fragment", [("train.max_steps", "has no '='"), ("=3", "empty key"), ("train..seed=1", "empty key")])
def test_malformed_override_raises(item, fragment):
    with pytest.raises(StudioError) as info:
        load_recipe(DEMO, [item])
    assert fragment in str(info.value) and item in str(info.value) and "--set" in str(info.value)


def test_override_typo_is_suggested():
    with pytest.raises(StudioError) as info:
        load_recipe(DEMO, ["lora.rnak=8"])
    assert "lora.rnak" in str(info.value) and "did you mean 'lora.rank'" in str(info.value)
    assert str(DEMO) in str(info.value)


def test_override_into_a_value_raises():
    with pytest.raises(StudioError, match="'model' is a value, not a section"):
        load_recipe(DEMO, ["model=x", "model.name=y"])


@pytest.mark.parametrize(
    "item, fragments",
    [
        ("train.learning_rate=.nan", ["train.learning_rate", "finite"]),
        ("train.learning_rate=-1", ["train.learning_rate", "greater than 0"]),
        ("data.val_path=examples/order_extraction/test.jsonl", ["data.val_path", "data.val_split", "not both"]),
    ],
    ids=["nan", "negative", "cross-field"],
)
def test_bad_override_value_raises(item, fragments):
    with pytest.raises(StudioError) as info:
        load_recipe(DEMO, [item])
    assert str(DEMO) in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


# ---------------------------------------------------------------------------------------------
# The CLI: exit status 2, a message, never a traceback
# ---------------------------------------------------------------------------------------------


def test_cli_validate_bad_recipe(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora:\n  rnak: 8\n", encoding="utf-8")
    assert main(["validate", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "error:" in captured.err and "lora.rank" in captured.err and str(bad) in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_cli_validate_bad_recipe_json(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: .nan\n", encoding="utf-8")
    assert main(["validate", str(bad), "--json"]) == 2
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert "train.learning_rate" in out["error"] and out["where"].startswith(f"{bad}:2") and out["fix"]
    assert "Traceback" not in captured.err


def test_cli_validate_bad_override(capsys):
    assert main(["validate", str(DEMO), "--set", "train.max_steps"]) == 2
    captured = capsys.readouterr()
    assert "error:" in captured.err and "no '='" in captured.err and "Traceback" not in captured.err


def test_cli_validate_missing_data(capsys, tmp_path):
    assert main(["validate", str(DEMO), "--set", f"data.path={tmp_path / 'missing.jsonl'}"]) == 2
    captured = capsys.readouterr()
    assert "error:" in captured.err and "missing.jsonl" in captured.err and "Traceback" not in captured.err


# ---------------------------------------------------------------------------------------------
# YAML that says two things
# ---------------------------------------------------------------------------------------------


def test_duplicate_key_is_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("lora:\n  rank: 8\n  rank: 16\n", encoding="utf-8")
    with pytest.raises(StudioError) as info:
        load_recipe(path)
    assert "lora.rank" in str(info.value) and str(path) in str(info.value)



def test_boolean_rank_is_an_error(tmp_path):
    path = tmp_path / "bool.yaml"
    path.write_text("lora:\n  rank: true\n", encoding="utf-8")
    with pytest.raises(StudioError, match="lora.rank"):
        load_recipe(path)



def test_targets_as_a_bare_string_names_the_key_and_line(tmp_path):
    path = tmp_path / "targets.yaml"
    path.write_text("lora:\n  targets: q_proj\n", encoding="utf-8")
    with pytest.raises(StudioError) as info:
        load_recipe(path)
    assert f"{path}:2 (key lora.targets)" in str(info.value)
    assert "literal[" not in str(info.value)



def test_nan_written_plainly_says_finite(tmp_path):
    path = tmp_path / "nan.yaml"
    path.write_text("train:\n  learning_rate: nan\n", encoding="utf-8")
    with pytest.raises(StudioError) as info:
        load_recipe(path)
    assert "finite" in str(info.value)
