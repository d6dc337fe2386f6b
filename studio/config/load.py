"""Load a recipe: a file (or a shipped recipe's name, or a dict), `--set` overrides, validation, paths.

Every failure is one StudioError naming the file, the line and the dotted key (see validate.py), because
a typo in a recipe is the most common mistake and should cost seconds, not a failed run. Relative paths
in a loaded recipe (data files, a chat template file, a local model) are made absolute here, so a run
directory's recipe.yaml works from any folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from studio.config.schema import Recipe, names_a_path, path_exists
from studio.config.shipped import find_recipe
from studio.config.validate import validate_recipe
from studio.config.yaml_text import parse_recipe_text, read_recipe_file
from studio.errors import StudioError


def load_recipe(source: str | Path | dict | None = None, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe from a YAML file, a shipped recipe's name (`smollm2/135m-qlora`) or a dict,
    applying `key=value` overrides.

    A relative path in the recipe is looked for in the recipe file's folder, then in the working directory
    (nowhere else), so a recipe runs from any working directory. `output.name` defaults to the file's stem.
    """
    lines: dict[str, int] = {}
    where = "<recipe>"
    base_dir: Path | None = None
    if source is None:
        raw: dict = {}
    elif isinstance(source, dict):
        raw = _deep_copy(source)
    else:
        path = find_recipe(source)
        where = str(path)
        raw, lines = read_recipe_file(path)
        base_dir = path.resolve().parent
        raw.setdefault("output", {})
        if isinstance(raw["output"], dict):
            raw["output"].setdefault("name", path.stem)
    sources: dict[str, str] = {}
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(raw, key, value, where="--set " + item)
        sources[key] = f"--set {item}"
    recipe = validate_recipe(raw, where=where, lines=lines, sources=sources)
    return _resolve_paths(recipe, base_dir)


def parse_override(item: str) -> tuple[str, Any]:
    """Split `a.b=value` into the dotted key and a YAML-typed value (`1e-4` is a float, `[q,v]` a list)."""
    if "=" not in item:
        raise StudioError(f"override '{item}' has no '='", where="--set", fix="write --set section.key=value, e.g. --set train.max_steps=10")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise StudioError(f"override '{item}' has an empty key", where="--set", fix="write --set section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: a date like 2001-02-30, an over-long integer
        value = text
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)
    return key, value


def _looks_numeric(text: str) -> bool:
    # YAML 1.1 reads `1e-4` (no dot) as a string; a user means a number.
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in {"nan", "inf", "-inf", "+inf", "infinity"}


def recipe_from_text(text: str, where: str = "<yaml>") -> Recipe:
    """Validate a recipe given as YAML text (the UI's editor, API callers); empty text is the default recipe."""
    if not text or not text.strip():
        return validate_recipe({}, where=where)
    raw, lines = parse_recipe_text(text, where)
    return validate_recipe(raw, where=where, lines=lines)


def _set_dotted(raw: dict, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise StudioError(f"cannot set '{key}': '{part}' is a value, not a section", where=where, fix="check the key path")
        node = child
    node[parts[-1]] = value


def _deep_copy(raw: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def _resolve_paths(recipe: Recipe, base_dir: Path | None) -> Recipe:
    """Make the recipe's file paths absolute (data files, a .jinja chat template, a local model, a reward file)."""
    updates = {}
    for name in ("path", "val_path", "test_path"):
        value = getattr(recipe.data, name)
        if value:
            updates[name] = str(_resolve(value, base_dir))
    template = recipe.data.chat_template
    if template and template.endswith(".jinja"):
        updates["chat_template"] = str(_resolve(template, base_dir))
    if names_a_path(recipe.model.name):
        model = recipe.model.model_copy(update={"name": str(_resolve(recipe.model.name, base_dir))})
    else:
        model = recipe.model
    data = recipe.data.model_copy(update=updates)
    grpo = recipe.grpo
    if grpo.reward_file:
        grpo = grpo.model_copy(update={"reward_file": str(_resolve(grpo.reward_file, base_dir))})
    return recipe.model_copy(update={"data": data, "model": model, "grpo": grpo})


def _resolve(value: str, base_dir: Path | None) -> Path:
    """`value` made absolute: in the recipe's folder when it is there, else in the working directory.

    When it is in neither, the recipe's folder is the answer (the first place looked), so the "not found"
    error that follows names the path a reader of the recipe would expect. No other folder is searched:
    an unrelated file of the same name in a parent folder must never be picked up.
    """
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    candidates = ([base_dir / path] if base_dir is not None else []) + [Path.cwd() / path]
    found = next((c for c in candidates if path_exists(c)), candidates[0])
    return found.resolve()


