"""Did the adapter forget what the base model knew? Three figures on general probes that ship with the studio.

`general_probes.json` (written by the project, Apache-2.0) holds short general questions with short expected
answers (arithmetic, capitals, facts, definitions, lists, yes/no) and a few paragraphs of general text. The
base is the same load with the adapter disabled, every answer is greedy, so the check is deterministic:

    KL          KL(base || adapter) per token, on the base model's own greedy answers to the questions
                (rendered with the run's chat template and system prompt): how far the adapter moved the
                next-token distribution where the base was sure of what to say. Mean and max over tokens.
    perplexity  the adapter's perplexity on the general text divided by the base's (1.0: unchanged).
    agreement   the share of questions whose greedy answer is the base's, after whitespace normalisation;
                each model's accuracy against the expected answers (the `contains` metric) is reported beside.

The verdict, in plain words: "kept" when every figure is within its kept limit (mean KL <= 0.15 nats/token,
perplexity ratio <= 1.05, agreement >= 20%); "forgot" when the mean KL reaches 1.0 or the perplexity ratio 1.25;
else "drifted". Agreement has no forgot limit: one flipped token changes a whole greedy answer. The limits were
chosen from measurements on a 2-core CPU in float32 (light, demo-length and over-trained adapters on the bundled
SmolLM2-135M and on the tiny test model; the constants' comment and the README's evaluation section give the
numbers). Results go into eval.json under "forgetting" and into the model card.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

import torch

from studio.errors import StudioError

PROBES = "general_probes.json"
MAX_NEW_TOKENS = 32  # the expected answers are a few words; a longer continuation adds cost, not evidence
SEED = 0  # greedy decoding needs no randomness; seeded anyway so nothing else can vary between runs

# Thresholds, chosen from measurements on a 2-core CPU in float32 (the README's evaluation section has the table).
# SmolLM2-135M-Instruct's LoRA on the order-extraction data: a light adapter (8 steps) moved the mean KL to 0.099
# nats/token with general-text perplexity x0.996 and unchanged accuracy; the smollm2/135m-lora recipe's (24 steps) to 0.40, x1.025,
# 13 -> 10 of 24 questions right; a diverged one (lr 1e-2, eval loss 0.5 -> 4.5) to 8.3 and x3582. On the tiny test
# model an over-trained adapter (24 steps at lr 1e-2 on 24 chats) reached 1.5 and x1.34, light ones stayed < 0.002.
# "kept" takes in the light adapter but not the recipe's (drifted); "forgot" starts well below every over-trained
# adapter measured and well above the recipe's.
KEPT_MAX_KL = 0.15
FORGOT_MIN_KL = 1.0
KEPT_MAX_PERPLEXITY_RATIO = 1.05
FORGOT_MIN_PERPLEXITY_RATIO = 1.25
# A greedy answer changes whole after one flipped token, and an adapter that only makes answers shorter changes
# most of them: the light adapter above kept 25% of its answers identical, the recipe's 12%. So agreement alone can
# make a verdict "drifted", never "forgot".
KEPT_MIN_AGREEMENT = 0.2

THRESHOLDS = {
    "kept_max_kl": KEPT_MAX_KL, "forgot_min_kl": FORGOT_MIN_KL,
    "kept_max_perplexity_ratio": KEPT_MAX_PERPLEXITY_RATIO, "forgot_min_perplexity_ratio": FORGOT_MIN_PERPLEXITY_RATIO,
    "kept_min_agreement": KEPT_MIN_AGREEMENT,
}
VERDICTS = ("kept", "drifted", "forgot")  # from best to worst


@dataclass
class ForgettingResult:
    """The forgetting check's verdict, its reasons, and the figures it was judged on."""

    verdict: str
    reasons: list[str]
    kl_mean: float
    kl_max: float
    kl_tokens: int
    base_perplexity: float
    adapter_perplexity: float
    perplexity_ratio: float
    agreement: float  # 0..1
    base_accuracy: float  # 0..100, `contains` against the expected answers
    adapter_accuracy: float
    questions: int
    answers: list[dict] = field(default_factory=list)  # per question: question, expected, base, adapter, same
    thresholds: dict = field(default_factory=lambda: dict(THRESHOLDS))

    def to_dict(self) -> dict:
        """The result as JSON-ready data."""
        return asdict(self)


def load_probes() -> tuple[list[dict], list[str]]:
    """(questions with their expected answers, paragraphs of general text) from the shipped probe file."""
    source = files("studio.evaluation") / PROBES
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        questions, text = data["questions"], data["text"]
        if not (questions and text and all(q["question"].strip() and q["answer"].strip() for q in questions) and all(p.strip() for p in text)):
            raise ValueError("empty questions, answers or text")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StudioError(f"the general probe set is missing or damaged ({exc})", where=str(source), fix="reinstall adapter-studio") from None
    return questions, text


def judge(kl_mean: float, perplexity_ratio: float, agreement: float) -> tuple[str, list[str]]:
    """(verdict, reasons): each figure against its kept and forgot limits (agreement has no forgot limit); the
    verdict is the worst of the three, and each figure outside its kept limit is a reason."""
    figures = [
        (f"mean KL {kl_mean:.3g} nats/token", kl_mean <= KEPT_MAX_KL, kl_mean >= FORGOT_MIN_KL, f"kept up to {KEPT_MAX_KL}, forgot from {FORGOT_MIN_KL}"),
        (f"general-text perplexity x{perplexity_ratio:.3f}", perplexity_ratio <= KEPT_MAX_PERPLEXITY_RATIO, perplexity_ratio >= FORGOT_MIN_PERPLEXITY_RATIO,
         f"kept up to x{KEPT_MAX_PERPLEXITY_RATIO}, forgot from x{FORGOT_MIN_PERPLEXITY_RATIO}"),
        (f"{agreement:.0%} of answers as the base's", agreement >= KEPT_MIN_AGREEMENT, False, f"kept from {KEPT_MIN_AGREEMENT:.0%}"),
    ]
    worst, reasons = 0, []
    for text, kept, forgot, limits in figures:
        level = 2 if forgot else 0 if kept else 1
        worst = max(worst, level)
        if level:
            reasons.append(f"{text} ({limits})")
    return VERDICTS[worst], reasons


@torch.no_grad()
def answer_kl(model, pairs: list[tuple[list[int], list[int]]], batch_size: int = 8) -> list[float]:
    """KL(base || adapter) in nats at every answer token of (prompt ids, answer ids) pairs, teacher-forced: the
    distribution each model gives for the token the base chose, the base being the adapter disabled."""
    device = next(model.parameters()).device
    kls: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = [(p, a) for p, a in pairs[start : start + batch_size] if a]
        if not chunk:
            continue
        width = max(len(p) + len(a) for p, a in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, (prompt, answer) in enumerate(chunk):  # right padding: real tokens keep positions 0..n-1
            ids[row, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
            mask[row, : len(prompt) + len(answer)] = 1
        ids, mask = ids.to(device), mask.to(device)
        with model.disable_adapter():
            base = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        adapted = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        for row, (prompt, answer) in enumerate(chunk):
            # The logits at position i predict token i + 1: the answer's tokens are predicted from len(prompt) - 1 on.
            at = slice(len(prompt) - 1, len(prompt) + len(answer) - 1)
            b, a = base[row, at], adapted[row, at]
            kls.extend(float(max(v, 0.0)) for v in (b.exp() * (b - a)).sum(-1).tolist())  # rounding can dip below 0
    return kls


def measure_forgetting(model, tokenizer, recipe) -> ForgettingResult:
    """The three figures and the verdict for a loaded model with its adapter attached (load_with_adapter's)."""
    from studio.data import Example, Renderer
    from studio.evaluation.generate import generate, generate_ids, heldout_loss, perplexity
    from studio.evaluation.metrics import score

    torch.manual_seed(SEED)
    questions, text = load_probes()
    renderer = Renderer(tokenizer, recipe.data.max_length)
    system = [{"role": "system", "content": recipe.data.system_prompt}] if recipe.data.system_prompt else []
    prompts = [renderer.prompt_text([*system, {"role": "user", "content": q["question"]}]) for q in questions]
    paragraphs = [renderer.encode(Example(where=f"{PROBES} text[{i}]", text=p)) for i, p in enumerate(text)]
    with model.disable_adapter():
        pairs = generate_ids(model, tokenizer, prompts, MAX_NEW_TOKENS)
        base_loss = heldout_loss(model, paragraphs)
    base_answers = [tokenizer.decode(answer, skip_special_tokens=True).strip() for _prompt, answer in pairs]
    answers = generate(model, tokenizer, prompts, MAX_NEW_TOKENS)
    adapter_loss = heldout_loss(model, paragraphs)
    kls = answer_kl(model, pairs)
    expected = [q["answer"] for q in questions]
    same = [" ".join(b.split()) == " ".join(a.split()) for b, a in zip(base_answers, answers)]
    kl_mean = sum(kls) / len(kls) if kls else 0.0
    base_ppl, adapter_ppl = perplexity(base_loss), perplexity(adapter_loss)
    ratio = adapter_ppl / base_ppl
    agreement = sum(same) / len(same)
    verdict, reasons = judge(kl_mean, ratio, agreement)
    return ForgettingResult(
        verdict=verdict,
        reasons=reasons,
        kl_mean=kl_mean,
        kl_max=max(kls, default=0.0),
        kl_tokens=len(kls),
        base_perplexity=base_ppl,
        adapter_perplexity=adapter_ppl,
        perplexity_ratio=ratio,
        agreement=agreement,
        base_accuracy=score("contains", base_answers, expected),
        adapter_accuracy=score("contains", answers, expected),
        questions=len(questions),
        answers=[{"question": q["question"], "expected": e, "base": b, "adapter": a, "same": s}
                 for q, e, b, a, s in zip(questions, expected, base_answers, answers, same)],
    )


def check_forgetting(run_dir: str | Path, model=None, tokenizer=None) -> ForgettingResult:
    """Measure a run's forgetting, add it to eval.json (under "forgetting", every other key kept) and the model
    card. `model` and `tokenizer` reuse a load of this run's adapter (the Compare tab's); else the run is loaded."""
    from studio.modeling.adapter import load_with_adapter
    from studio.modeling.source import resolve_model
    from studio.modeling.vision import refuse_images_unseen
    from studio.training.model_card import write_model_card
    from studio.training.rundir import ADAPTER, EVAL, open_run, read_json_or_empty, write_json

    run_dir, recipe = open_run(run_dir)
    refuse_images_unseen(resolve_model(recipe.model.name, recipe.model.revision), "the forgetting check", str(run_dir))
    if model is None or tokenizer is None:
        loaded = load_with_adapter(recipe, run_dir / ADAPTER)
        model, tokenizer = loaded.model, loaded.tokenizer
    result = measure_forgetting(model, tokenizer, recipe)
    record = read_json_or_empty(run_dir / EVAL)
    record["forgetting"] = result.to_dict()
    write_json(run_dir / EVAL, record)
    write_model_card(run_dir)
    return result
