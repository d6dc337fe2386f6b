"""Recipe YAML, read safely and written back: plain data plus the line of every dotted key.

Safe loading alone lets through YAML that can hurt (aliases that expand exponentially, absurd nesting)
or that says two things (a duplicate key, which PyYAML silently resolves); each is refused here with
the line, so the validator can point every later error at `file:line (key k)`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from studio.config.schema import Recipe, path_exists
from studio.errors import StudioError

MAX_RECIPE_BYTES = 1_000_000
MAX_RECIPE_DEPTH = 32


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML, as written into a run directory."""
    return yaml.safe_dump(recipe.to_yaml_dict(), sort_keys=False, allow_unicode=True)


def read_recipe_file(path: Path) -> tuple[dict, dict[str, int]]:
    """A recipe file's plain data and its key -> line map, or a StudioError saying why it cannot be read."""
    if not path_exists(path):
        from studio.config.shipped import not_found_fix

        raise StudioError(f"recipe file not found: {path}", where=str(path), fix=not_found_fix())
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
