"""The reward registry: shipped rewards, rewards from a user's file, and the recipe's choice checked against both.

A reward's signature is its contract. After `completions`, positional-or-keyword parameters are dataset
columns (one value per completion; a default makes the column optional), keyword-only parameters are
options set in the recipe (no default: a required option). The trl-supplied names (`prompts`,
`completion_ids`, `trainer_state`, `log_extra`, `log_metric`, `environments`) and `**kwargs` are neither:
the guard passes them through when the function asks for them, as trl itself would.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import itertools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from studio.errors import StudioError


class _Required:
    """The marker for an option without a default: the recipe must set it."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

# What trl hands every reward function besides the dataset columns; never a column or an option.
TRL_NAMES = ("prompts", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments")


@dataclass(frozen=True)
class Reward:
    """One reward function and what its signature says it needs."""

    name: str
    fn: Callable
    summary: str
    columns: tuple[str, ...] = ()
    optional_columns: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)
    source: str = "shipped"
    # Raises ValueError for option values the types alone do not catch (a bad regex, a negative target).
    validate: Callable[[dict], None] | None = field(default=None, compare=False)
    context: tuple[str, ...] = ()  # trl-supplied names the function declares
    var_kwargs: bool = False  # it takes **kwargs: it gets every other column, like a trl reward


SHIPPED: dict[str, Reward] = {}


def describe(fn: Callable, name: str, source: str = "shipped", validate: Callable[[dict], None] | None = None) -> Reward:
    """Build a Reward from a function's signature; ValueError when the signature cannot be a reward."""
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].name != "completions" or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise ValueError(f"reward {name}'s first parameter must be `completions`")
    columns, optional, options, context, var_kwargs = [], [], {}, [], False
    for p in params[1:]:
        if p.kind is p.VAR_KEYWORD:
            var_kwargs = True
        elif p.kind is p.VAR_POSITIONAL:
            raise ValueError(f"reward {name} takes *{p.name}; columns must be named parameters")
        elif p.name in TRL_NAMES:
            context.append(p.name)
        elif p.kind is p.POSITIONAL_ONLY:
            # Columns are passed by name so that any trl-supplied parameter may sit between them.
            raise ValueError(f"reward {name}'s column {p.name} is positional-only; remove the `/`")
        elif p.kind is p.KEYWORD_ONLY:
            options[p.name] = REQUIRED if p.default is p.empty else p.default
        elif p.default is p.empty:
            columns.append(p.name)
        else:
            optional.append(p.name)
    doc = inspect.getdoc(fn) or ""
    summary = doc.strip().splitlines()[0] if doc.strip() else name
    return Reward(name, fn, summary, tuple(columns), tuple(optional), options, source, validate, tuple(context), var_kwargs)


def register(name: str, validate: Callable[[dict], None] | None = None) -> Callable:
    """Decorator: add a shipped reward to SHIPPED under `name`, with an optional option validator."""

    def add(fn: Callable) -> Callable:
        if name in SHIPPED:
            raise ValueError(f"reward {name} is registered twice")
        SHIPPED[name] = describe(fn, name, "shipped", validate)
        return fn

    return add


def _type_ok(value: Any, default: Any) -> bool:
    """Whether an option value has the default's type (an int will do for a float; a bool is never a number)."""
    if default is None or default is REQUIRED:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def check_options(reward: Reward, args: dict | None, where: str) -> dict:
    """The reward's full options from the recipe's `args`: unknown, missing or mistyped options are StudioErrors."""
    args = {} if args is None else args
    allowed = ", ".join(reward.options) or "none"
    if not isinstance(args, dict):
        raise StudioError(f"args of reward {reward.name} must be a mapping of option names to values, not {type(args).__name__}", where=where, fix=f"options: {allowed}")
    for key in args:
        if key not in reward.options:
            hint = difflib.get_close_matches(str(key), list(reward.options), n=1)
            maybe = f"did you mean '{hint[0]}'? " if hint else ""
            raise StudioError(f"reward {reward.name} has no option '{key}'", where=where, fix=f"{maybe}options of {reward.name}: {allowed}")
    options = {**reward.options, **args}
    for key, value in options.items():
        default = reward.options[key]
        if value is REQUIRED:
            raise StudioError(f"reward {reward.name} needs the option '{key}'", where=where, fix=f"set grpo.rewards[].args.{key} for {reward.name}")
        if not _type_ok(value, default):
            raise StudioError(
                f"option '{key}' of reward {reward.name} must be {type(default).__name__}, not {type(value).__name__} ({value!r})"[:300],
                where=where,
                fix=f"give {key} a {type(default).__name__} value, like its default {default!r}",
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise StudioError(f"option '{key}' of reward {reward.name} is {value}", where=where, fix="use a finite number")
        if isinstance(default, float):
            options[key] = float(value)
    if reward.validate is not None:
        try:
            reward.validate(options)
        except ValueError as exc:
            raise StudioError(f"reward {reward.name}: {exc}", where=where, fix=f"fix the option in grpo.rewards[].args (options of {reward.name}: {allowed})") from None
    return options


_loads = itertools.count()


def load_reward_file(path: str | Path) -> dict[str, Reward]:
    """The rewards a local Python file defines: its public functions whose first parameter is `completions`.

    The file is imported and so runs, trusted exactly like any script the user runs themselves. Functions it
    only imports (helpers from other modules) are not rewards; neither are names starting with `_`.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise StudioError(f"reward file {path} does not exist", where=where, fix="check grpo.reward_file: a path to a .py file, relative to where you run studio")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"studio_reward_file_{digest}_{next(_loads)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise StudioError(f"reward file {path} cannot be imported as Python", where=where, fix="give the reward file a .py name")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling inside the file look their module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise StudioError(
            f"reward file has a syntax error: {exc.msg}",
            where=f"{path}:{exc.lineno}",
            fix="fix the Python syntax; `python -m py_compile FILE` shows the same error",
        ) from None
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise StudioError(
            f"importing the reward file raised {type(exc).__name__}: {exc}"[:500],
            where=where,
            fix="run `python FILE` to see the full traceback; a reward file should only define functions at import",
        ) from None
    rewards: dict[str, Reward] = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != module_name:
            continue
        params = list(inspect.signature(obj).parameters)
        if not params or params[0] != "completions":
            continue
        try:
            rewards[name] = describe(obj, name, where)
        except ValueError as exc:
            raise StudioError(str(exc), where=f"{path}: def {name}", fix="a reward is `def name(completions, column, ..., *, option=default) -> list[float]`") from None
    if not rewards:
        raise StudioError(
            f"reward file {path} defines no reward function",
            where=where,
            fix="define `def my_reward(completions, answer, **kwargs) -> list[float]`: a public function whose first parameter is `completions`",
        )
    return rewards


def available(reward_file: str | Path | None = None) -> dict[str, Reward]:
    """Every reward a recipe may name: the shipped ones plus the reward file's, which may not reuse a shipped name."""
    rewards = dict(SHIPPED)
    if reward_file:
        for name, reward in load_reward_file(reward_file).items():
            if name in SHIPPED:
                raise StudioError(
                    f"reward file defines {name}, which is already a shipped reward",
                    where=str(reward_file),
                    fix=f"rename your function (for example my_{name}) and use that name in grpo.rewards",
                )
            rewards[name] = reward
    return rewards


def _field(spec: Any, key: str, default: Any = None) -> Any:
    """A spec's field, whether the spec is a dict or an object (the recipe's pydantic model)."""
    return spec.get(key, default) if isinstance(spec, dict) else getattr(spec, key, default)


def resolve(specs: list, reward_file: str | Path | None = None) -> list[tuple[Reward, dict, float]]:
    """The recipe's reward choices as (reward, full options, weight); unknown names and options are StudioErrors."""
    rewards = available(reward_file)
    resolved: list[tuple[Reward, dict, float]] = []
    seen: list[tuple[str, dict]] = []
    for i, spec in enumerate(specs):
        where = f"grpo.rewards[{i}]"
        name = _field(spec, "name")
        if name not in rewards:
            names = sorted(rewards)
            hint = difflib.get_close_matches(str(name), names, n=1)
            maybe = f"did you mean '{hint[0]}'? " if hint else ""
            raise StudioError(f"unknown reward '{name}'", where=f"{where}.name", fix=f"{maybe}available rewards: {', '.join(names)} (or define it in grpo.reward_file)")
        reward = rewards[name]
        weight = _field(spec, "weight", 1.0)
        weight = 1.0 if weight is None else weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise StudioError(f"weight of reward {name} must be a finite number, not {weight!r}", where=f"{where}.weight", fix="use a number such as 1.0")
        options = check_options(reward, _field(spec, "args"), f"{where}.args")
        if (name, options) in seen:
            raise StudioError(f"reward {name} is listed twice with the same options", where=where, fix="remove the duplicate, or raise the weight of the one entry")
        seen.append((name, options))
        resolved.append((reward, options, float(weight)))
    return resolved
