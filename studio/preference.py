"""Preference training (DPO, ORPO) through trl, on the same LoRA/QLoRA models as supervised training.

Pairs are rendered with the model's chat template by the studio (so prompts look exactly as they will at
inference), then handed to trl as plain prompt/chosen/rejected text: each answer is the assistant turn
through its end-of-turn token. With peft, DPO's reference model is the base with the adapter disabled.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from .errors import StudioError
from .recipe import Recipe


def render_pairs(renderer, examples) -> list[dict]:
    """prompt/chosen/rejected texts: the templated prompt and each answer as the template continues it."""
    eos = renderer.tok.eos_token
    pairs = []
    for example in examples:
        prompt = renderer.prompt_text(example.messages)
        pair = {"prompt": prompt}
        for key in ("chosen", "rejected"):
            full = renderer.conversation_text([*example.messages, {"role": "assistant", "content": getattr(example, key)}])
            if not full.startswith(prompt):
                raise StudioError("the chat template renders the prompt differently once an answer follows", where=example.where, fix="set data.chat_template to a template that renders conversations incrementally (e.g. ChatML)")
            answer = full[len(prompt):].rstrip()
            pair[key] = answer if answer.endswith(eos) else answer + eos
        pairs.append(pair)
    return pairs


def build_preference_data(recipe: Recipe, tokenizer) -> tuple[list[dict], list[dict], dict]:
    """Training and validation pairs plus the manifest written to data.json."""
    from .data import Renderer, load_examples
    from .data.manifest import sha256_of

    spec = recipe.data
    fmt, examples = load_examples(spec.path, spec)
    if fmt != "preference":
        raise StudioError(f"method {recipe.method} needs preference data (prompt/chosen/rejected), but {spec.path} is {fmt} data", where=spec.path, fix="use rows with chosen and rejected answers, or method qlora/lora for supervised data")
    renderer = Renderer(tokenizer, spec.max_length)
    pairs = render_pairs(renderer, examples)
    val: list[dict] = []
    if spec.val_path:
        val = render_pairs(renderer, load_examples(spec.val_path, spec)[1])
    elif spec.val_split:
        order = list(range(len(pairs)))
        random.Random(recipe.train.seed).shuffle(order)
        held = set(order[: max(1, round(len(pairs) * spec.val_split))])
        val = [p for i, p in enumerate(pairs) if i in held]
        pairs = [p for i, p in enumerate(pairs) if i not in held]
    manifest = {"path": spec.path, "sha256": sha256_of(spec.path), "format": fmt, "rows": len(examples), "train": {"pairs": len(pairs)}, "val": {"pairs": len(val)}, "max_length": spec.max_length}
    return pairs, val, manifest


def build_preference_trainer(recipe: Recipe, model, tokenizer, pairs: list[dict], val: list[dict], run_dir: Path, device, callbacks: list):
    """trl's DPOTrainer or ORPOTrainer configured from the recipe (the reference model is the base itself)."""
    import datasets

    from .train import trainer_arguments

    common = {**trainer_arguments(recipe, model, run_dir, device, bool(val)), "beta": recipe.preference.beta}
    train_set = datasets.Dataset.from_list(pairs)
    val_set = datasets.Dataset.from_list(val) if val else None
    datasets.disable_progress_bars()
    if recipe.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=train_set, eval_dataset=val_set, processing_class=tokenizer, callbacks=callbacks)
    else:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer = ORPOTrainer(model=model, args=ORPOConfig(**common), train_dataset=train_set, eval_dataset=val_set, processing_class=tokenizer, callbacks=callbacks)
    from transformers import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


@torch.no_grad()
def preference_margin(model, tokenizer, pairs: list[dict]) -> float:
    """Mean over pairs of log p(chosen | prompt) - log p(rejected | prompt): what preference training raises."""
    device = next(model.parameters()).device
    margins = []
    for pair in pairs:
        prompt_ids = tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"]
        scores = []
        for key in ("chosen", "rejected"):
            ids = tokenizer(pair["prompt"] + pair[key], add_special_tokens=False)["input_ids"]
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:], device=device)[:, None])[:, 0]
            scores.append(float(logp[len(prompt_ids) - 1 :].sum()))
        margins.append(scores[0] - scores[1])
    return sum(margins) / len(margins)
