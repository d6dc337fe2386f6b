"""GRPO rewards as the UI offers them: the rewards a recipe may name, the picker's help and rows, and the
recipe's choice resolved exactly as training resolves it (`studio.training.rewards`).

A reward file is Python that runs when it is imported, so the results are cached by the file's path and
modification time: typing in the form re-imports nothing, and an edited file is read again. Which reward
file the UI may import at all is the Context's rule (`Context.reward_file`), applied by the callers.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from studio.errors import StudioError
from studio.training.rewards import REQUIRED, Reward, available, resolve
from studio.ui.form import FieldSpec, from_widget, to_widget


def _stamp(reward_file: str | None) -> tuple | None:
    """What tells an edited reward file from the cached one: its modification time and size (None when absent)."""
    try:
        stat = Path(reward_file).stat() if reward_file else None
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size) if stat else None


@lru_cache(maxsize=16)
def _available(reward_file: str | None, stamp: tuple | None) -> tuple[dict | None, StudioError | None]:
    try:
        return available(reward_file), None
    except StudioError as exc:
        return None, exc


@lru_cache(maxsize=64)
def _resolved(specs_json: str, reward_file: str | None, stamp: tuple | None) -> tuple[list | None, StudioError | None]:
    try:
        return resolve(json.loads(specs_json), reward_file), None
    except StudioError as exc:
        return None, exc


def _fresh(error: StudioError) -> StudioError:
    # A copy to raise: raising the cached error itself would grow its traceback on every call.
    return StudioError(error.what, where=error.where, fix=error.fix)


def rewards_named(reward_file: str | None = None) -> dict[str, Reward]:
    """Every reward a recipe may name: the shipped ones and those of `reward_file` (a StudioError if it is broken)."""
    rewards, error = _available(reward_file, _stamp(reward_file))
    if error is not None:
        raise _fresh(error)
    return rewards


def resolved_rewards(specs: list, reward_file: str | None = None) -> list[tuple[Reward, dict, float]]:
    """grpo.rewards (plain data or RewardSpecs) as (reward, options, weight), checked like training checks them."""
    plain = [spec.model_dump() if hasattr(spec, "model_dump") else spec for spec in specs]
    result, error = _resolved(json.dumps(plain, sort_keys=True, default=str), reward_file, _stamp(reward_file))
    if error is not None:
        raise _fresh(error)
    return result


def reward_help(reward: Reward) -> str:
    """One reward for the picker, in markdown: what it scores, the columns it reads, its options and defaults."""
    reads = [f"`{c}`" for c in reward.columns] + [f"`{c}` (if present)" for c in reward.optional_columns]
    if reward.var_kwargs:
        reads.append("every other column")
    options = [f"`{k}` (**required**: set it in args)" if v is REQUIRED else f"`{k}: {v!r}`" for k, v in reward.options.items()]
    source = "" if reward.source == "shipped" else f" · from `{reward.source}`"
    return (f"**{reward.name}**: {reward.summary}  \n"
            f"reads {', '.join(reads) or 'the completion only'} · options {', '.join(options) or 'none'}{source}")


def add_reward(spec: FieldSpec, rows, name: str, weight) -> list[list]:
    """The grpo.rewards table with `name` added at `weight`; a reward already there without options gets the new
    weight instead (the same reward listed twice with the same options is refused by training)."""
    items = from_widget(spec, rows)
    items = items if isinstance(items, list) else []
    weight = from_widget(next(c for c in spec.columns if c.key == "weight"), weight)
    same = next((item for item in items if item.get("name") == name and not item.get("args")), None)
    if same is not None:
        same["weight"] = weight
    else:
        items.append({"name": name, "weight": weight})
    return to_widget(spec, items)


__all__ = ["add_reward", "resolved_rewards", "reward_help", "rewards_named"]
