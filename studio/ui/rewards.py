"""GRPO rewards as the UI offers them: the rewards a recipe may name, the picker above the grpo.rewards table
(a reward, its weight, a button that adds it, and help on it), and the recipe's choice resolved exactly as training
resolves it (`studio.training.rewards`).

A reward file is Python that runs when it is imported, so the results are cached by the file's path and
modification time: typing in the form re-imports nothing, and an edited file is read again. Which reward
file the UI may import at all is the Context's rule (`Context.reward_file`), applied by the callers.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import gradio as gr

from studio.errors import StudioError
from studio.training.rewards import REQUIRED, Reward, available, resolve
from studio.ui.access import rewards_dir
from studio.ui.context import Context
from studio.ui.errors import help_error
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


def build_reward_picker(ctx: Context, spec: FieldSpec) -> dict:
    """The chooser above the grpo.rewards table: a reward of the registry, its weight, a button that adds it, and
    help on the chosen reward (what it scores, the columns it reads, its options)."""
    rewards = rewards_named()
    first = next(iter(rewards))
    with gr.Group(elem_id="reward-picker"):
        with gr.Row(equal_height=True):
            name = gr.Dropdown(list(rewards), value=first, label="Reward", scale=3, elem_id="reward-choice",
                               info="pick a reward and its weight and add it to grpo.rewards below; edit weights and args (YAML, e.g. {tolerance: 0.01}) "
                                    "in the table, or delete a row from its cell menu")
            weight = gr.Number(1.0, label="weight", scale=1, min_width=100, elem_id="reward-weight")
            add = gr.Button("Add to grpo.rewards", scale=1, min_width=160, size="md", elem_id="reward-add")
    help_md = gr.Markdown(reward_picker_help(ctx, rewards[first], spec), elem_id="reward-help", elem_classes=["picker-help"])
    return {"name": name, "weight": weight, "add": add, "help": help_md}


def reward_picker_help(ctx: Context, reward, spec: FieldSpec) -> str:
    """The picker's help: the chosen reward, the table's own help, and on a shared server the reward files it may run."""
    lines = [reward_help(reward), spec.info]
    if ctx.shared:
        folder = rewards_dir()
        files = sorted(p.name for p in folder.glob("*.py")) if folder.is_dir() else []
        lines.append(f"grpo.reward_file on this server: {', '.join(f'`{f}`' for f in files) if files else 'none'} (the files the owner placed in its rewards folder)")
    return "  \n".join(lines)


def wire_reward_picker(ctx: Context, parts: dict, spec: FieldSpec, table, reward_file) -> None:
    """Connect the chooser: picking a reward explains it, the button adds it to the table, and a reward file
    (where this server may run it) adds its rewards to the choices."""
    name, weight, add, help_md = parts["name"], parts["weight"], parts["add"], parts["help"]

    def on_name(chosen, path):
        try:
            rewards = rewards_named(ctx.reward_file(path))
        except StudioError as exc:
            return help_error(exc)
        return reward_picker_help(ctx, rewards[chosen], spec) if chosen in rewards else gr.update()

    def on_file(chosen, path):
        try:
            rewards, note = rewards_named(ctx.reward_file(path)), None
        except StudioError as exc:
            rewards, note = rewards_named(), help_error(exc)
        chosen = chosen if chosen in rewards else next(iter(rewards))
        return gr.update(choices=list(rewards), value=chosen), note or reward_picker_help(ctx, rewards[chosen], spec)

    def on_add(chosen, value, rows):
        return add_reward(spec, rows, chosen, value)

    name.change(on_name, [name, reward_file], [help_md], api_visibility="undocumented", show_progress="hidden")
    reward_file.change(on_file, [name, reward_file], [name, help_md], api_visibility="undocumented", show_progress="hidden")
    add.click(on_add, [name, weight, table], [table], api_visibility="undocumented", show_progress="hidden")


__all__ = ["add_reward", "build_reward_picker", "resolved_rewards", "reward_help", "rewards_named", "wire_reward_picker"]
