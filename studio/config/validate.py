"""Validate plain recipe data against the schema, with errors a person can act on in seconds.

One StudioError lists every problem, each at `file:line (key k)` (or the `--set` that supplied it); an
unknown key gets the nearest valid one ("did you mean 'lora.rank'?"), including the names other tools use
for the same knob (`lr`, `lora_r`, `per_device_train_batch_size`, ...). Checks pydantic's lax mode would
let through are made first: non-finite numbers, NUL bytes and lone surrogates, booleans given for numbers.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from pydantic import BaseModel, ValidationError

from studio.config.schema import Recipe, is_numeric
from studio.errors import StudioError


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
