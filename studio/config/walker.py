"""One walk over the Recipe schema: every leaf field with its dotted key, type, default and help text.

The CLI's recipe-key help and the UI's recipe form are both generated from this list, so a field's
default and docstring live in one place, the schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from studio.config.schema import Recipe


@dataclass(frozen=True)
class SchemaField:
    """A leaf of the schema: `lora.rank`, or a top-level field such as `method`."""

    key: str
    info: FieldInfo

    @property
    def annotation(self) -> Any:
        """The field's type (a Literal, int, str | None, ...)."""
        return self.info.annotation

    @property
    def default(self) -> Any:
        """The schema default (a fresh value for fields with a default factory)."""
        return self.info.default_factory() if self.info.default_factory is not None else self.info.default

    @property
    def doc(self) -> str:
        """The field's docstring on one line."""
        return " ".join((self.info.description or "").split())


def recipe_fields() -> list[SchemaField]:
    """Every leaf field of the Recipe schema, in schema order."""
    fields = []
    for section, info in Recipe.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            fields += [SchemaField(f"{section}.{name}", sub) for name, sub in ann.model_fields.items()]
        else:
            fields.append(SchemaField(section, info))
    return fields
