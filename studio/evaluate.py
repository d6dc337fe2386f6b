"""Evaluate a run on held-out examples: the task metric for base and adapter, loss, and side-by-side answers.

The base model and the adapter answer the same templated prompts with the same greedy decoding, so the
difference in score is the adapter's doing. Results go to eval.json in the run directory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import StudioError
from .recipe_io import load_recipe
from .rundir import ADAPTER, RECIPE, check_run_dir, write_json


@dataclass
class EvalResult:
    """Scores (0..100) and losses on held-out examples, with a few answers side by side."""

    metric: str
    examples: int
    base_score: float | None
    adapter_score: float
    base_loss: float | None
    adapter_loss: float | None
    adapter_perplexity: float | None
    samples: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The result as JSON-ready data."""
        return asdict(self)


def heldout_examples(recipe, path: str | None = None):
    """Held-out chat examples: `path`, else data.test_path, else data.val_path."""
    from .data import load_heldout

    source = path or recipe.data.test_path or recipe.data.val_path
    if not source:
        raise StudioError("no held-out examples to evaluate on", where="data.test_path", fix="set data.test_path (or data.val_path) in the recipe, or pass --data FILE")
    _fmt, examples = load_heldout(source, recipe.data)
    usable = [e for e in examples if e.messages and e.messages[-1]["role"] == "assistant"]
    if not usable:
        raise StudioError("held-out data has no examples ending in an assistant answer", where=source, fix="use chat, alpaca or prompt/completion rows")
    return usable


def evaluate(run_dir: str | Path, data: str | None = None, limit: int | None = None, with_base: bool = True, samples: int = 3, batch_size: int = 16) -> EvalResult:
    """Score base and adapter on held-out examples with the recipe's metric; write eval.json."""
    from peft import PeftModel

    from .data import Renderer
    from .generate import generate, heldout_loss, perplexity
    from .metrics import score
    from .model_source import resolve_model
    from .models import load_base, load_tokenizer, pick_device, pick_dtype

    run_dir = check_run_dir(run_dir)
    recipe = load_recipe(run_dir / RECIPE)
    metric = recipe.eval.metric if recipe.eval.metric != "none" else "exact_match"
    examples = heldout_examples(recipe, data)[: limit or recipe.eval.limit or None]
    device = pick_device(recipe.train.device)
    model_dir = resolve_model(recipe.model.name, recipe.model.revision)
    tokenizer = load_tokenizer(run_dir / ADAPTER, recipe)
    renderer = Renderer(tokenizer, recipe.data.max_length, recipe.data.train_on)
    prompts = [renderer.prompt_text(e.messages[:-1]) for e in examples]
    references = [e.messages[-1]["content"] for e in examples]
    encoded = [renderer.encode(e) for e in examples]
    model = load_base(model_dir, pick_dtype(recipe.model.dtype, device), device, recipe.model.trust_remote_code, allow_pickle=recipe.model.allow_pickle)

    base_answers, base_score, base_loss = None, None, None
    if with_base:
        base_answers = generate(model, tokenizer, prompts, recipe.eval.max_new_tokens, batch_size)
        base_score = score(metric, base_answers, references)
        base_loss = heldout_loss(model, encoded)
    model = PeftModel.from_pretrained(model, run_dir / ADAPTER).eval()
    answers = generate(model, tokenizer, prompts, recipe.eval.max_new_tokens, batch_size)
    adapter_loss = heldout_loss(model, encoded)
    result = EvalResult(
        metric=metric,
        examples=len(examples),
        base_score=base_score,
        adapter_score=score(metric, answers, references),
        base_loss=base_loss,
        adapter_loss=adapter_loss,
        adapter_perplexity=perplexity(adapter_loss),
        samples=[
            {
                "prompt": e.messages[-2]["content"] if len(e.messages) > 1 else "",
                "reference": ref,
                "base": base_answers[i] if base_answers else None,
                "adapter": answers[i],
            }
            for i, (e, ref) in enumerate(zip(examples, references))
            if i < samples
        ],
    )
    write_json(run_dir / "eval.json", result.to_dict())
    from .model_card import write_model_card

    write_model_card(run_dir)
    return result
