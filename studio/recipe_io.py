"""Reading recipes from YAML, applying `--set` overrides, and turning schema errors into StudioErrors.

Errors name the file, the line and the dotted key, and for an unknown key suggest the nearest valid one,
because a typo in a recipe is the most common mistake and should cost seconds, not a failed run.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import StudioError
from .recipe import Recipe, is_numeric

MAX_RECIPE_BYTES = 1_000_000
MAX_RECIPE_DEPTH = 32


def load_recipe(source: str | Path | dict | None = None, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe from a YAML file (or a dict), applying `key=value` overrides.

    Relative data paths are resolved against the recipe's folder when they exist there, so a recipe
    can be run from any working directory. `output.name` defaults to the file's stem.
    """
    lines: dict[str, int] = {}
    where = "<recipe>"
    base_dir: Path | None = None
    if source is None:
        raw: dict = {}
    elif isinstance(source, dict):
        raw = _deep_copy(source)
    else:
        path = Path(source)
        where = str(path)
        raw, lines = _read_yaml(path)
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


def validate_recipe(raw: Any, where: str = "<recipe>", lines: dict[str, int] | None = None, sources: dict[str, str] | None = None) -> Recipe:
    """Validate plain data against the schema; raise one StudioError listing every problem.

    `lines` maps dotted keys to file lines; `sources` maps keys set on the command line to their `--set`.
    """
    if not isinstance(raw, dict):
        raise StudioError(
            f"a recipe must be a mapping of sections (model, method, lora, ...), got {type(raw).__name__}",
            where=where,
            fix="start from a file in recipes/, e.g. recipes/smollm2/135m-qlora.yaml",
        )
    located = _Locator(where, lines or {}, sources or {})
    _reject_non_finite(raw, located)
    _reject_nul(raw, located)
    _reject_booleans_for_numbers(raw, Recipe, located)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise _to_studio_error(exc, located) from None


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


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML, as written into a run directory."""
    return yaml.safe_dump(recipe.to_yaml_dict(), sort_keys=False, allow_unicode=True)


def _looks_numeric(text: str) -> bool:
    # YAML 1.1 reads `1e-4` (no dot) as a string; a user means a number.
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in {"nan", "inf", "-inf", "+inf", "infinity"}


def _read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    if not _exists(path):
        raise StudioError(f"recipe file not found: {path}", where=str(path), fix="check the path; shipped recipes are under recipes/")
    if path.is_dir():
        raise StudioError(f"{path} is a directory, not a recipe file", where=str(path), fix="pass a .yaml file")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise StudioError(f"recipe file is larger than {MAX_RECIPE_BYTES} bytes", where=str(path), fix="a recipe is a short YAML file; check you passed the right file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise StudioError(f"recipe is not valid UTF-8 text (byte {exc.start})", where=str(path), fix="save the recipe as UTF-8 YAML") from None
    return parse_recipe_text(text, str(path))


def parse_recipe_text(text: str, where: str = "<recipe>") -> tuple[dict, dict[str, int]]:
    """Parse recipe YAML safely into plain data and a map of dotted keys to lines; `where` names the source.

    Refuses what safe loading alone lets through: aliases (exponential or recursive expansion), absurd
    nesting, and values PyYAML recognises but cannot build, each as a StudioError with the line.
    """
    try:
        _check_structure(text, where)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f"{where}:{mark.line + 1}" if mark else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudioError(f"recipe is not valid YAML: {problem}", where=loc, fix="fix the YAML syntax at that line (indentation, a missing ':' or quote)") from None
    except ValueError as exc:  # a value YAML recognises but Python cannot build: 2001-02-30, `!!int abc`, 5000 digits
        raise StudioError(f"recipe holds a value that cannot be read: {str(exc).split(';')[0]}", where=where, fix="quote the value to make it text, or correct it") from None
    if raw is None:
        raise StudioError("recipe file is empty", where=where, fix="start from a file in recipes/")
    if not isinstance(raw, dict):
        raise StudioError(f"a recipe must be a mapping of sections, got {type(raw).__name__}", where=where, fix="start from a file in recipes/")
    return raw, _line_index(node, path=where)


def recipe_from_text(text: str, where: str = "<yaml>") -> Recipe:
    """Validate a recipe given as YAML text (the UI's editor, API callers); empty text is the default recipe."""
    if not text or not text.strip():
        return validate_recipe({}, where=where)
    raw, lines = parse_recipe_text(text, where)
    return validate_recipe(raw, where=where, lines=lines)


def _check_structure(text: str, path: str) -> None:
    """Refuse aliases (`*name`: they can expand exponentially or loop) and absurd nesting before building anything."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise StudioError(f"recipe uses a YAML alias (*{event.anchor}); recipes do not support anchors and aliases", where=f"{path}:{line}", fix="write the value out in full")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_RECIPE_DEPTH:
                raise StudioError(f"recipe is nested more than {MAX_RECIPE_DEPTH} levels deep", where=f"{path}:{line}", fix="a recipe has sections of keys; check you passed the right file")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _line_index(node, prefix: str = "", path: str | None = None) -> dict[str, int]:
    """Map dotted keys to 1-based line numbers, so errors can point into the file; refuse duplicate keys."""
    index: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            if key in index:
                # PyYAML silently keeps the last duplicate; a recipe that says two things is a mistake.
                raise StudioError(f"key '{key}' appears twice (lines {index[key]} and {key_node.start_mark.line + 1})", where=f"{path}:{key_node.start_mark.line + 1} (key {key})", fix="keep one of them")
            index[key] = key_node.start_mark.line + 1
            index.update(_line_index(value_node, key, path))
    return index


_NON_FINITE_WORDS = {"nan", ".nan", "inf", "+inf", "-inf", ".inf", "-.inf", "+.inf", "infinity", "-infinity", "+infinity"}


def _reject_non_finite(raw: Any, located: "_Locator", prefix: str = "") -> None:
    if isinstance(raw, dict):
        for key, value in raw.items():
            _reject_non_finite(value, located, f"{prefix}.{key}" if prefix else str(key))
        return
    # YAML reads `.nan` as a float but plain `nan` as a string; both mean the same mistake.
    bad = (isinstance(raw, float) and not math.isfinite(raw)) or (isinstance(raw, str) and raw.strip().lower() in _NON_FINITE_WORDS)
    if bad:
        raise StudioError(f"{prefix} is {raw}; it must be a finite number", where=located.where(prefix), fix=f"set {prefix} to a real value")


def _reject_nul(raw: Any, located: "_Locator", prefix: str = "") -> None:
    # A NUL byte (YAML "\0") or a lone surrogate ("\ud800") cannot be part of a path and has no place in a recipe.
    if isinstance(raw, dict):
        for key, value in raw.items():
            _reject_nul(value, located, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(raw, list):
        for value in raw:
            _reject_nul(value, located, prefix)
    elif isinstance(raw, str) and "\0" in raw:
        raise StudioError(f"{prefix} contains a NUL byte", where=located.where(prefix), fix=f"remove the \\0 from {prefix}")
    elif isinstance(raw, str) and not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate written as "\ud800": no file name or text can hold it
            raise StudioError(f"{prefix} contains an unpaired surrogate ({raw[exc.start]!a})", where=located.where(prefix), fix=f"remove the escape from {prefix}") from None


def _reject_booleans_for_numbers(raw: dict, model: type[BaseModel], located: "_Locator", prefix: str = "") -> None:
    # pydantic's lax mode reads `rank: true` as 1; a boolean where a number belongs is a mistake.
    for name, value in raw.items():
        field = model.model_fields.get(str(name))
        if field is None:
            continue
        key = f"{prefix}.{name}" if prefix else str(name)
        ann = field.annotation
        if isinstance(value, dict) and isinstance(ann, type) and issubclass(ann, BaseModel):
            _reject_booleans_for_numbers(value, ann, located, key)
        elif isinstance(value, bool) and is_numeric(ann):
            raise StudioError(f"{key} must be a number, got {value}", where=located.where(key), fix=f"set {key} to a number")


class _Locator:
    """Turns a dotted key into 'file:line (key k)', or into the `--set` that supplied it."""

    def __init__(self, where: str, lines: dict[str, int], sources: dict[str, str]):
        self.file, self.lines, self.sources = where, lines, sources

    def where(self, key: str) -> str:
        # `--set train.lr.x=1` creates the unknown section `train.lr`: the error belongs to that --set too.
        source = self.sources.get(key) or next((s for k, s in self.sources.items() if key and k.startswith(key + ".")), None)
        if source:
            return f"{source} on {self.file} (key {key})"
        line = self.lines.get(key)
        loc = f"{self.file}:{line}" if line else self.file
        return f"{loc} (key {key})" if key else loc


def _field_path(loc: tuple) -> str:
    """The dotted key of an error, without pydantic's union-member tags (`literal['all-linear']`, `list[str]`)."""
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool"))))


def _to_studio_error(exc: ValidationError, located: _Locator) -> StudioError:
    problems: dict[str, list[str]] = {}
    for err in exc.errors():
        key = _field_path(err["loc"])
        if err["type"] == "extra_forbidden":
            hint = _suggest(err["loc"])
            text = f"unknown key '{key}'" + (f" (did you mean '{hint}'?)" if hint else "")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            shown = f"'{key}': " if key else ""
            text = f"{shown}{msg}" + (f" (got {value!r})" if key and err["type"] != "missing" and not isinstance(value, (dict, list)) else "")
        problems.setdefault(key, [])
        if text not in problems[key]:
            problems[key].append(text)
    lines = ["; ".join(texts) for texts in problems.values()]
    first_key = next(iter(problems), "")
    fix = "correct the value(s) above; `studio validate --help` lists every key and its meaning"
    return StudioError("; ".join(lines), where=located.where(first_key), fix=fix)


def _suggest(loc: tuple) -> str | None:
    """Nearest valid dotted key for an unknown one, searching the schema section it was found in."""
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    names = list(model.model_fields)
    name = _ALIASES.get(str(loc[-1]), str(loc[-1]))
    if len(loc) == 1:
        # A top-level key may belong in a section (`rank` instead of `lora.rank`).
        for section, field in Recipe.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel) and name in ann.model_fields:
                return f"{section}.{name}"
    match = [name] if name in names else difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    if not match:
        return None
    return ".".join([*(str(p) for p in loc[:-1]), match[0]])


# Names other tools use for the same knobs, so their users get pointed at ours.
_ALIASES = {
    "lr": "learning_rate",
    "r": "rank",
    "lora_r": "rank",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "target_modules": "targets",
    "bs": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "micro_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "sequence_len": "max_length",
    "max_seq_length": "max_length",
    "output_dir": "dir",
}


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
    """Make data paths absolute: relative to the recipe file when they exist there, else to the cwd."""
    updates = {}
    for name in ("path", "val_path", "test_path"):
        value = getattr(recipe.data, name)
        if value:
            updates[name] = str(_resolve(value, base_dir))
    template = recipe.data.chat_template
    if template and template.endswith(".jinja"):
        updates["chat_template"] = str(_resolve(template, base_dir))
    model_name = recipe.model.name
    if model_name.startswith((".", "/", "~")) or model_name.endswith(".gguf"):
        resolved = _resolve(model_name, base_dir)
        model = recipe.model.model_copy(update={"name": str(resolved)})
    else:
        model = recipe.model
    data = recipe.data.model_copy(update=updates)
    return recipe.model_copy(update={"data": data, "model": model})


def _resolve(value: str, base_dir: Path | None) -> Path:
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    if base_dir is not None:
        # Shipped recipes live in recipes/<family>/ and name data relative to the repository root.
        for root in (base_dir, *base_dir.parents):
            if _exists(root / path):
                return (root / path).resolve()
    return (Path.cwd() / path).resolve()


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system: it cannot be there; the reader says so
        return False
