"""Structured-output rewards: does the completion hold JSON, and does that JSON fit a JSON Schema?

jsonschema is imported inside the functions, so importing the rewards stays fast.
"""

from __future__ import annotations

import json
from typing import Any

from studio.training.rewards.registry import register

MAX_JSON_CHARS = 1_000_000  # a completion this long is degenerate; parsing it would only burn the step's time


def _schema_object(schema: Any) -> dict | bool:
    """A schema as given (a dict, true/false, or a JSON string of one), checked against its metaschema.

    ValueError naming the schema when it is not one: a bad schema is the data's fault, not the model's.
    """
    from jsonschema import exceptions, validators

    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"json_schema {schema[:80]!r} is not valid JSON: {exc}") from None
    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"json_schema must be an object (or true/false), not {type(schema).__name__}")
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        raise ValueError(f"json_schema {json.dumps(schema)[:80]} is not a valid JSON Schema: {exc.message}") from None
    return schema


def _validator(schema: dict | bool):
    """A jsonschema validator for a checked schema, of the draft the schema names (the newest by default)."""
    from jsonschema import validators

    return validators.validator_for(schema)(schema)


def extract_json(text: str) -> str:
    """The JSON text of a completion: the last <answer> block, else the completion without a ```json fence."""
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end) if end != -1 else -1
    if start != -1:
        return text[start + len("<answer>") : end].strip()
    body = text.strip()
    if body.startswith("```") and body.endswith("```") and len(body) >= 6:
        body = body[3:-3]
        first, _, rest = body.partition("\n")
        # The fence's info string (json, JSON, jsonc) sits on the first line; a one-line fence has none.
        if rest and first.strip().isalpha():
            body = rest
    return body.strip()


def _reject_constant(name: str) -> Any:
    """json.loads accepts NaN and Infinity, which JSON itself does not: refuse them."""
    raise ValueError(f"{name} is not JSON")


def _check_schema_option(options: dict) -> None:
    """The recipe's schema option must be a valid JSON Schema before training starts."""
    if options["schema"] is not None:
        _schema_object(options["schema"])


@register("json_schema", validate=_check_schema_option)
def json_schema(completions: list[str], json_schema: list | None = None, *, schema: dict | None = None) -> list[float]:
    """1.0 for JSON that fits the schema, 0.5 for JSON that does not, 0.0 for no JSON.

    The schema is the row's `json_schema` column (an object or a JSON string) when present, else the
    `schema` option; with neither, parsing alone earns 1.0. The JSON is the last <answer> block, or the
    completion with a ```json fence removed. Over 1 MB, or nested past Python's recursion limit, is 0.0.
    """
    per_row = json_schema if json_schema is not None else [None] * len(completions)
    if len(per_row) != len(completions):
        raise ValueError(f"json_schema column has {len(per_row)} values for {len(completions)} completions")
    cache: dict[str, Any] = {}  # schema text -> validator: a batch repeats the same few schemas
    scores = []
    for text, row_schema in zip(completions, per_row):
        chosen = row_schema if row_schema is not None else schema
        validator = None
        if chosen is not None:
            key = chosen if isinstance(chosen, str) else json.dumps(chosen, sort_keys=True)
            if key not in cache:
                cache[key] = _validator(_schema_object(chosen))
            validator = cache[key]
        scores.append(_score(text, validator))
    return scores


def _score(text: str, validator) -> float:
    """One completion's score against one validator (None: parsing is enough)."""
    body = extract_json(text) if len(text) <= MAX_JSON_CHARS else None
    if not body or len(body) > MAX_JSON_CHARS:
        return 0.0
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return 0.0
    if validator is None:
        return 1.0
    try:
        return 1.0 if validator.is_valid(value) else 0.5
    except RecursionError:  # parsed but too deep to check: it is JSON, not verified JSON
        return 0.5
