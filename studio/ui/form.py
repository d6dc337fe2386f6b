"""The recipe form, generated from the Recipe schema: one widget per field, labelled with its dotted key.

Defaults, choices and help texts all come from the schema (`studio.config.walker`), so nothing is repeated here. The
conversion both ways (widget values <-> plain recipe data) lives here too, apart from any Gradio code.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from studio.config.schema import Recipe
from studio.config.walker import SchemaField, recipe_fields
from studio.errors import StudioError


@dataclass(frozen=True)
class FieldSpec:
    """One form field: dotted key, widget kind, schema default, choices, whether None is allowed, help text;
    for a table (a list of objects, such as grpo.rewards) the fields of one row as `columns`."""

    key: str
    kind: str  # dropdown | checkbox | int | float | text | list | mapping | table
    default: Any
    choices: tuple = ()
    optional: bool = False
    info: str = ""
    columns: tuple["FieldSpec", ...] = ()


def form_fields() -> list[FieldSpec]:
    """Every leaf field of the Recipe schema, in schema order (the one walk in studio.config.walker)."""
    return [_spec(field) for field in recipe_fields()]


def section_of(key: str) -> str:
    """The section a dotted key belongs to ('method' for top-level keys)."""
    return key.split(".")[0]


def _spec(field: SchemaField) -> FieldSpec:
    key, ann, default, info = field.key, field.annotation, field.default, field.doc
    args = typing.get_args(ann)
    origin = typing.get_origin(ann)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    members = [a for a in args if a is not type(None)] if optional else [ann]
    core = members[0] if len(members) == 1 else ann
    if typing.get_origin(core) is Literal:
        return FieldSpec(key, "dropdown", default, tuple(typing.get_args(core)), optional, info)
    if core is bool:
        return FieldSpec(key, "checkbox", default, (), optional, info)
    if core is int:
        return FieldSpec(key, "int", default, (), optional, info)
    if core is float:
        return FieldSpec(key, "float", default, (), optional, info)
    if core is str:
        return FieldSpec(key, "text", default, (), optional, info)
    if typing.get_origin(core) is dict:
        return FieldSpec(key, "mapping", default, (), optional, info)
    item = typing.get_args(core)[0] if typing.get_origin(core) is list else None
    if isinstance(item, type) and issubclass(item, BaseModel):
        # A list of objects (grpo.rewards): a table whose cells are read like the item's own fields. The default
        # is kept as plain data, as a recipe's YAML holds it.
        columns = tuple(_spec(SchemaField(name, sub)) for name, sub in item.model_fields.items())
        return FieldSpec(key, "table", [d.model_dump() for d in default or []], (), optional, info, columns)
    # A union of a Literal and a list (lora.targets): free text, `all-linear` or `q_proj, v_proj`.
    return FieldSpec(key, "list", default, (), optional, info)


def to_widget(spec: FieldSpec, value: Any) -> Any:
    """A recipe value as its widget shows it (lists as comma text, mappings as YAML flow text, None as empty,
    a list of objects as table rows)."""
    if spec.kind == "table":
        return [[to_widget(column, item.get(column.key)) for column in spec.columns] for item in value or []]
    if spec.kind == "list":
        return ", ".join(value) if isinstance(value, list) else (value or "")
    if spec.kind == "mapping":
        return yaml.safe_dump(dict(value or {}), default_flow_style=True, sort_keys=False).strip() if value else ""
    if spec.kind == "text":
        return "" if value is None else value
    if spec.kind in ("int", "float") and spec.optional:
        return "" if value is None else str(value)
    return value


def _number(text: str, kind: type):
    """Text typed into an optional number field as int or float; unparseable text is left for the schema to reject."""
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if kind is int and number.is_integer() else number


def from_widget(spec: FieldSpec, value: Any) -> Any:
    """A widget value as plain recipe data (empty optional fields become None; numbers keep their type)."""
    if spec.kind == "table":
        return _table_items(spec, value)
    if spec.kind in ("text", "list", "mapping") and isinstance(value, str):
        value = value.strip() if spec.kind != "text" else value
        if value == "":
            return None if spec.optional else ({} if spec.kind == "mapping" else value)
    if spec.kind == "list":
        items = [part.strip() for part in value.strip("[]").split(",")] if "," in value or value.startswith("[") else [value]
        return value if items == ["all-linear"] else items
    if spec.kind == "mapping":
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value  # the schema reports it as not a mapping
        return parsed
    if spec.kind in ("int", "float"):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, str):
            value = _number(value.strip(), int if spec.kind == "int" else float)
        if spec.kind == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
    return value


def _table_items(spec: FieldSpec, rows: Any) -> Any:
    """Table rows as a list of objects; rows left blank (a table always shows one) are dropped, and a cell
    left empty leaves its field out, so the schema default (or its "required" error) applies."""
    if isinstance(rows, dict):  # the value a Dataframe holds before any browser sent one: {headers, data}
        rows = rows.get("data")
    if not isinstance(rows, list):
        return rows  # the schema reports it as not a list
    items = []
    for row in rows:
        cells = [None if cell is None or (isinstance(cell, str) and not cell.strip()) else cell for cell in row]
        if all(cell is None for cell in cells):
            continue
        items.append({column.key: from_widget(column, cell) for column, cell in zip(spec.columns, cells) if cell is not None})
    return items


def values_to_raw(specs: list[FieldSpec], values: list[Any]) -> dict:
    """Nested recipe data from the widget values, in the order of `specs`."""
    raw: dict = {}
    for spec, value in zip(specs, values):
        parts = spec.key.split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = from_widget(spec, value)
    return raw


def recipe_to_values(specs: list[FieldSpec], recipe: Recipe) -> list[Any]:
    """The widget values that show `recipe`."""
    data = recipe.to_yaml_dict()
    return [to_widget(spec, _get(data, spec.key)) for spec in specs]


def override_args(base: Recipe | None, recipe: Recipe) -> list[str]:
    """`--set key=value` arguments that turn `base` into `recipe` (all non-default keys when base is None)."""
    reference = (base or Recipe()).to_yaml_dict()
    current = recipe.to_yaml_dict()
    args = []
    for spec in form_fields():
        old, new = _get(reference, spec.key), _get(current, spec.key)
        if old != new:
            args.append(f"--set {_quote(spec.key + '=' + _yaml_scalar(new))}")
    return args


def _get(data: dict, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        dumped = yaml.safe_dump(value, default_flow_style=True).strip()
        return dumped[:-4].strip() if dumped.endswith("\n...") or dumped.endswith("...") else dumped
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()  # keys in the recipe's order


def _quote(text: str) -> str:
    """Shell-quote an argument only when it needs it."""
    import shlex

    return shlex.quote(text)


_KEYED = re.compile(r"^'([A-Za-z_][\w.]*)': (.*)$", re.S)
_WHERE_KEY = re.compile(r"\(key ([\w.]+)\)")
_MENTION = re.compile(r"\b([a-z_]+\.[a-z_]+)\b")


def field_errors(error: StudioError, keys: list[str]) -> dict[str, str]:
    """Which form fields a validation error is about: dotted key -> message, for showing it under the field.

    Schema errors read `'lora.rank': Input should be ... (got 0); 'lora.alpha': ...`; cross-field errors name
    the keys in their text (`train.eval_steps needs validation data ...`) and the first key named is blamed;
    the error's `where` (`form (key lora.rank)`) names the first offending key.
    """
    known = set(keys)
    out: dict[str, str] = {}
    last: str | None = None
    for segment in error.what.split("; "):
        match = _KEYED.match(segment)
        if match and _field_of(match.group(1), known):
            last = _field_of(match.group(1), known)
            out[last] = match.group(2) if last not in out else f"{out[last]}; {match.group(2)}"
            continue
        mentioned = [k for k in _MENTION.findall(segment) if k in known]
        if mentioned:
            last = mentioned[0]
            out[last] = segment if last not in out else f"{out[last]}; {segment}"
        elif last is not None:  # a message that itself contained "; "
            out[last] += "; " + segment
    where = _WHERE_KEY.search(error.where or "")
    field = _field_of(where.group(1), known) if where else None
    if field and field not in out:
        out[field] = error.what
    return out


def _field_of(key: str, known: set[str]) -> str | None:
    """The form field a dotted key is about: itself, or the table it is a cell of (`grpo.rewards.0.weight`)."""
    parts = key.split(".")
    return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in known), None)
