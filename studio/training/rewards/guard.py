"""The guard between trl and a reward: text in, finite floats out, and a StudioError naming the row otherwise.

trl's GRPOTrainer calls each reward as `fn(prompts=..., completions=..., completion_ids=..., **columns)`,
with every dataset column as a list aligned with the completions. A reward that raises, or returns None,
NaN or the wrong number of scores, would otherwise surface as a tensor error deep inside the trainer.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

from studio.errors import StudioError
from studio.training.rewards.registry import Reward

RESUME_FIX = "the run stays resumable from its last checkpoint (`studio train --resume RUN_DIR`)"


class RewardError(StudioError):
    """A reward failed during training: it raised, or returned something that is not one finite number per completion."""


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is; a chat completion's last message content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        if not completion:
            return ""
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else completion[-1]
        if isinstance(content, list):  # multimodal content parts: keep the text ones
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return "" if content is None else str(content)
    return "" if completion is None else str(completion)


def _rows(wheres: list | None) -> str | None:
    """The batch's rows for an error: up to three distinct ones, and how many more there are."""
    if not wheres:
        return None
    distinct = list(dict.fromkeys(str(w) for w in wheres))
    shown = ", ".join(distinct[:3])
    more = f" and {len(distinct) - 3} more" if len(distinct) > 3 else ""
    return f"row {shown}" if len(distinct) == 1 else f"rows {shown}{more}"


def _short(value: Any, limit: int = 300) -> str:
    """Text cut to a readable length: a reward's message may quote a megabyte completion."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _arguments(reward: Reward, kwargs: dict, where_column: str, prompts: Any, completion_ids: Any) -> dict:
    """The keyword arguments the reward asks for, taken from what trl passed."""
    args: dict[str, Any] = {}
    for col in reward.columns:
        if col not in kwargs:
            raise RewardError(
                f"reward {reward.name} needs the '{col}' column, which the training data does not have",
                where=_rows(kwargs.get(where_column)),
                fix=f"add '{col}' to every row; " + RESUME_FIX,
            )
        args[col] = kwargs[col]
    for col in reward.optional_columns:
        if col in kwargs:
            args[col] = kwargs[col]
    trl = {"prompts": prompts, "completion_ids": completion_ids, **kwargs}
    for name in reward.context:
        if name in trl:
            args[name] = trl[name]
    if reward.var_kwargs:
        taken = set(args) | set(reward.options) | {where_column}
        args.update({k: v for k, v in kwargs.items() if k not in taken})
    return args


def guarded(reward: Reward, options: dict, where_column: str = "_where") -> Callable[..., list[float]]:
    """The reward as trl calls it, checked: exceptions and bad scores become RewardErrors naming the rows."""

    def call(prompts: Any = None, completions: Any = None, completion_ids: Any = None, **kwargs: Any) -> list[float]:
        texts = [completion_text(c) for c in completions or []]
        wheres = kwargs.get(where_column)
        try:
            scores = reward.fn(texts, **_arguments(reward, kwargs, where_column, prompts, completion_ids), **options)
        except RewardError:
            raise
        except Exception as exc:
            raise RewardError(f"reward {reward.name} raised {type(exc).__name__}: {_short(exc)}", where=_rows(wheres), fix="fix the reward function or the data; " + RESUME_FIX) from exc
        return _checked(reward.name, scores, len(texts), wheres)

    call.__name__ = call.__qualname__ = reward.name
    call.__doc__ = reward.summary
    return call


def _checked(name: str, scores: Any, expected: int, wheres: list | None) -> list[float]:
    """The scores as plain floats, or a RewardError for the first that is not a finite number (bools count as 0/1)."""
    fix = f"make {name} return one finite number per completion; " + RESUME_FIX
    if not isinstance(scores, (list, tuple)):
        raise RewardError(f"reward {name} returned {type(scores).__name__}, expected a list of {expected} numbers", where=_rows(wheres), fix=fix)
    if len(scores) != expected:
        raise RewardError(f"reward {name} returned {len(scores)} scores for {expected} completions", where=_rows(wheres), fix=fix)
    out = []
    for i, value in enumerate(scores):
        # A bool is a pass/fail score: True is 1.0, the common `[a == b for ...]` reward.
        number = float(value) if isinstance(value, numbers.Real) else None
        if number is None or not math.isfinite(number):
            where = f"row {wheres[i]}" if wheres and i < len(wheres) else None
            raise RewardError(f"reward {name} returned {_short(repr(value), 80)} for completion {i}, which is not a finite number", where=where, fix=fix)
        out.append(number)
    return out


def check_columns(resolved: list[tuple[Reward, dict, float]], rows: list[dict], wheres: list[str]) -> None:
    """Before any model loads: every row has every column its rewards need (a null counts as missing)."""
    for i, row in enumerate(rows):
        for reward, _, _ in resolved:
            for col in reward.columns:
                if row.get(col) is None:
                    raise StudioError(
                        f"row has no '{col}' column, which reward {reward.name} needs",
                        where=wheres[i],
                        fix=f"add '{col}' to every row of the data, or drop {reward.name} from grpo.rewards",
                    )


def reference_scores(resolved: list[tuple[Reward, dict, float]], row: dict) -> dict[str, float | None]:
    """What each reward gives the row's reference answer (`solution`, else `answer`) as a completion, for the data preview.

    None for a reward where the row has no reference, lacks a column, or the reward fails: the preview shows
    the gap and never raises.
    """
    reference = row.get("solution") if row.get("solution") is not None else row.get("answer")
    scores: dict[str, float | None] = {}
    for reward, options, _ in resolved:
        key = reward.name if reward.name not in scores else f"{reward.name}#{sum(k.split('#')[0] == reward.name for k in scores) + 1}"
        scores[key] = None if reference is None else _reference_score(reward, options, row, completion_text(reference))
    return scores


def _reference_score(reward: Reward, options: dict, row: dict, text: str) -> float | None:
    """One reward's score of the reference text, or None when it cannot be computed."""
    if any(row.get(col) is None for col in reward.columns):
        return None
    # The row as trl would pass it for a batch of one; a null optional column is left out, as if absent.
    batch = {key: [value] for key, value in row.items() if key not in ("prompt", "completion") and value is not None}
    try:
        args = _arguments(reward, batch, "_where", [row.get("prompt")], None)
        scores = _checked(reward.name, reward.fn([text], **args, **options), 1, None)
    except Exception:
        return None
    return scores[0]
