"""GRPO's data: prompt rows, the rewards they are scored by, and the checks that run before any model loads.

Torch-free, so `studio validate` runs the same checks as training (reward names, options, and every column a
reward needs, row by row) in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.config.schema import Recipe
from studio.data import Example, Renderer, load_examples
from studio.data.manifest import sha256_of
from studio.errors import StudioError
from studio.training.rewards import check_columns, guarded, resolve


@dataclass
class PromptData:
    """GRPO's training prompts (chat messages), the columns each row hands the rewards, and the manifest."""

    examples: list[Example]
    manifest: dict = field(default_factory=dict)


def load_prompt_examples(recipe: Recipe, resolved=None) -> list[Example]:
    """The recipe's prompt rows, with the columns every chosen reward needs checked row by row.

    Runs before any model loads (and in `studio validate`-style checks), so a row without the `answer` a
    reward needs is an error naming the row and the reward in seconds, not after minutes of loading.
    """
    spec = recipe.data
    fmt, examples = load_examples(spec.path, spec)
    if fmt != "prompt":
        raise StudioError(f"method grpo needs prompt rows (a `prompt`, or `question`/`answer`), but {spec.path} is {fmt} data", where=spec.path,
                          fix="give rows a `prompt` plus the columns the rewards read (such as `answer`), set data.format: prompt, or use method qlora/lora for supervised data")
    check_columns(resolved or resolved_rewards(recipe), [e.columns or {} for e in examples], [e.where for e in examples])
    return examples


def resolved_rewards(recipe: Recipe):
    """The recipe's rewards as (reward, options, weight), shipped ones and those of grpo.reward_file."""
    return resolve(recipe.grpo.rewards, recipe.grpo.reward_file)


def build_prompt_data(recipe: Recipe, tokenizer, resolved) -> PromptData:
    """Prompts that fit data.max_length once templated (longer ones are left out and counted), and data.json.
    `resolved`: the recipe's rewards (resolved_rewards), resolved once: a reward file is imported once per run."""
    spec = recipe.data
    examples = load_prompt_examples(recipe, resolved)
    renderer = Renderer(tokenizer, spec.max_length)
    kept, too_long, lengths = [], [], []
    for example in examples:
        n = len(tokenizer(renderer.prompt_text(example.messages), add_special_tokens=False)["input_ids"])
        if n > spec.max_length:
            too_long.append(example.where)
            continue
        kept.append(example)
        lengths.append(n)
    if not kept:
        raise StudioError(f"every prompt is longer than data.max_length ({spec.max_length} tokens) once templated", where=spec.path, fix="raise data.max_length or shorten the prompts")
    manifest = {
        "path": spec.path,
        "sha256": sha256_of(spec.path),
        "format": "prompt",
        "rows": len(examples),
        "train": {"prompts": len(kept), "too_long": len(too_long), "prompt_tokens": {"max": max(lengths), "mean": round(sum(lengths) / len(lengths), 1)}},
        "max_length": spec.max_length,
        "rewards": [_reward_entry(r, opts, w) for r, opts, w in resolved],
    }
    if too_long:
        manifest["train"]["too_long_where"] = too_long[:20]
    return PromptData(kept, manifest)


def _reward_entry(reward, options: dict, weight: float) -> dict:
    """How data.json records a reward: a file's reward with the file's sha256, which `studio reproduce` checks."""
    entry = {"name": reward.name, "weight": weight, "args": options, "source": reward.source}
    if reward.source != "shipped":
        entry["sha256"] = sha256_of(reward.source)
    return entry


def mean_rewards(resolved, examples: list[Example], answers: list[str]) -> dict[str, float]:
    """Each reward's mean over `answers` to `examples` (their columns as the rewards read them), and `total`, the
    weighted sum GRPO maximises: how `studio eval` reports base and adapter on a GRPO run's held-out prompts."""
    if not examples:
        return {}
    names = {key for e in examples for key in (e.columns or {})}
    columns = {key: [(e.columns or {}).get(key) for e in examples] for key in names}
    wheres = [e.where for e in examples]
    means, total = {}, 0.0
    for reward, options, weight in resolved:
        scores = guarded(reward, options)(None, answers, None, _where=wheres, **columns)
        means[reward.name] = sum(scores) / len(scores)
        total += weight * means[reward.name]
    means["total"] = total
    return {k: round(v, 6) for k, v in means.items()}
