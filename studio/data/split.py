"""The validation split every training method uses: a seeded share of the rows held out, never all of them."""

from __future__ import annotations

import random
from typing import TypeVar

from studio.errors import StudioError

T = TypeVar("T")


def seeded_split(items: list[T], fraction: float, seed: int, what: str = "rows") -> tuple[list[T], list[T]]:
    """(training, held out): `fraction` of `items` (at least one) picked by a seeded shuffle, order kept.

    The same seed and items give the same split on every machine, so a resumed or reproduced run
    validates on the same rows. A split that would leave nothing to train on is a StudioError.
    """
    if not fraction:
        return list(items), []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(items) * fraction))
    if n_val >= len(items):
        raise StudioError(f"data.val_split {fraction} leaves no training {what} out of {len(items)}", where="data.val_split",
                          fix="lower data.val_split, add rows, or give a separate data.val_path")
    held = set(order[:n_val])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]
