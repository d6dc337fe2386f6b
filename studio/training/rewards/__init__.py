"""Verifiable rewards for GRPO: small plain functions that score completions from 0.0 to 1.0.

A reward is `fn(completions: list[str], <columns>..., *, <options>) -> list[float]`, one score per
completion. Its signature is its contract: parameters after `completions` are dataset columns, passed as
lists aligned with the completions (a default makes the column optional); keyword-only parameters are
options the recipe sets (`grpo.rewards: [{name: numeric_answer, weight: 1.0, args: {tolerance: 0.01}}]`),
and one without a default must be set. `prompts`, `completion_ids` (and trl's other extras) and `**kwargs`
are neither. A user's own rewards live in a Python file (`grpo.reward_file`), written the same way.

    registry.py    Reward, the shipped registry, reward files, option checks, the recipe's choice resolved
    answers.py     numeric_answer, exact_answer and the extraction helpers (extract_final, parse_number)
    formats.py     think_format, regex_match, length_target
    structured.py  json_schema
    guard.py       the trl-facing wrapper: completion text in, finite floats out, errors naming the row

Nothing here imports torch; jsonschema loads only when a JSON Schema is checked.
"""

from __future__ import annotations

from studio.training.rewards import answers, formats, structured  # noqa: F401  (registers the shipped rewards)
from studio.training.rewards.guard import RewardError, check_columns, guarded, reference_scores
from studio.training.rewards.registry import REQUIRED, SHIPPED, Reward, available, check_options, describe, load_reward_file, register, resolve

__all__ = [
    "REQUIRED",
    "SHIPPED",
    "Reward",
    "RewardError",
    "available",
    "check_columns",
    "check_options",
    "describe",
    "guarded",
    "load_reward_file",
    "reference_scores",
    "register",
    "resolve",
]
