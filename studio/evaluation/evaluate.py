"""Evaluate a run on held-out examples: the task metric for base and adapter, loss, and side-by-side answers.

The base model and the adapter answer the same templated prompts with the same greedy decoding (the base
is the same load with the adapter disabled), so the difference in score is the adapter's doing. With
`eval.metric: none` no task score is computed, only the held-out losses. Results go to eval.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.errors import StudioError
from studio.evaluation.probes import HeldoutReader, heldout_examples
from studio.training.rundir import ADAPTER, EVAL, open_run, read_json_or_empty, write_json


@dataclass
class EvalResult:
    """Scores (0..100, None without a task metric) and losses on held-out examples, with a few answers side by side."""

    metric: str
    examples: int
    base_score: float | None
    adapter_score: float | None
    base_loss: float | None
    adapter_loss: float | None
    adapter_perplexity: float | None
    samples: list[dict] = field(default_factory=list)
    base_rewards: dict | None = None  # grpo runs: each reward's mean on the greedy answers, and their weighted total
    adapter_rewards: dict | None = None

    def to_dict(self) -> dict:
        """The result as JSON-ready data."""
        return asdict(self)


def evaluate(run_dir: str | Path, data: str | None = None, limit: int | None = None, with_base: bool = True, samples: int = 3, batch_size: int = 16) -> EvalResult:
    """Score base and adapter on held-out examples with the recipe's metric; write eval.json."""
    from studio.data.images import message_images, text_of
    from studio.evaluation.generate import generate, heldout_loss, perplexity
    from studio.evaluation.metrics import score
    from studio.modeling.adapter import load_with_adapter
    from studio.training.model_card import write_model_card

    run_dir, recipe = open_run(run_dir)
    metric = recipe.eval.metric
    examples = heldout_examples(recipe, data)[: limit or recipe.eval.limit or None]
    references = [text_of(e.messages[-1]["content"]) for e in examples]
    schemas = [(e.columns or {}).get("json_schema") for e in examples]  # json_valid checks answers against them

    def scored(answers):
        if metric == "none":
            return None
        try:
            return score(metric, answers, references, schemas)
        except ValueError as exc:  # a reference or schema the metric cannot use: the data's fault, not the model's
            raise StudioError(f"cannot score with {metric}: {exc}", where=data or recipe.data.test_path or recipe.data.val_path,
                              fix="pick an eval.metric that fits these reference answers, or fix the examples") from None

    scored(references)  # such data fails here, before a model is loaded and answers are generated
    loaded = load_with_adapter(recipe, run_dir / ADAPTER, vision=True)
    model, tokenizer = loaded.model, loaded.tokenizer
    reader = HeldoutReader(recipe, tokenizer, loaded.processor)
    prompts = [reader.renderer.prompt_text(e.messages[:-1]) for e in examples]
    encoded = [reader.renderer.encode(e) for e in examples]
    images = reader.images(examples)

    def answer():
        return generate(model, tokenizer, prompts, recipe.eval.max_new_tokens, batch_size, loaded.processor, images)

    rewarded = None
    if recipe.method == "grpo":
        from studio.training.grpo_data import mean_rewards, resolved_rewards

        resolved = resolved_rewards(recipe)

        def rewarded(answers):
            return mean_rewards(resolved, examples, answers)

    base_answers, base_score, base_loss = None, None, None
    if with_base:
        with model.disable_adapter():
            base_answers = answer()
            base_loss = heldout_loss(model, encoded, collator=reader.collator)
        base_score = scored(base_answers)
    answers = answer()
    adapter_loss = heldout_loss(model, encoded, collator=reader.collator)
    result = EvalResult(
        metric=metric,
        examples=len(examples),
        base_score=base_score,
        adapter_score=scored(answers),
        base_loss=base_loss,
        adapter_loss=adapter_loss,
        adapter_perplexity=perplexity(adapter_loss),
        base_rewards=rewarded(base_answers) if rewarded and base_answers else None,
        adapter_rewards=rewarded(answers) if rewarded else None,
        samples=[
            {
                "prompt": text_of(e.messages[-2]["content"]) if len(e.messages) > 1 else "",
                "images": message_images(e.messages[:-1]),  # the held-out pictures, for side-by-side views
                "reference": ref,
                "base": base_answers[i] if base_answers else None,
                "adapter": answers[i],
            }
            for i, (e, ref) in enumerate(zip(examples, references))
            if i < samples
        ],
    )
    written = result.to_dict()
    # The other checks of the same adapter (`--forgetting`, `--tasks`) keep their keys.
    kept = {k: v for k, v in read_json_or_empty(run_dir / EVAL).items() if k not in written}
    write_json(run_dir / EVAL, {**written, **kept})
    write_model_card(run_dir)
    return result

