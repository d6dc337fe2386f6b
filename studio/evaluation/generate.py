"""Batched greedy generation and teacher-forced loss, shared by evaluation, chat, the demo and the UI."""

from __future__ import annotations

import math

import torch

from studio.data import IGNORE, Encoded


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS plus any the model's generation config names."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif isinstance(config_eos, list):
        ids.update(config_eos)
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate_ids(model, tokenizer, prompts: list[str], max_new_tokens: int = 128, batch_size: int = 16,
                 processor=None, images: list[list] | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, greedy answer ids through the first stop token) for already-templated prompts, batched with
    left padding: the tokens themselves, for checks that score the exact continuation (re-encoding its text
    need not give the same tokens back). A vision-language run passes its `processor` and, per prompt, the PIL
    `images` its placeholders stand for."""
    device = next(model.parameters()).device
    stops = stop_token_ids(tokenizer, model)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pairs: list[tuple[list[int], list[int]]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            if processor is None:
                batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            else:
                batch = _vision_batch(model, processor, chunk, (images or [[]] * len(prompts))[start : start + batch_size])
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )
            width = batch["input_ids"].shape[1]
            for row in range(out.shape[0]):
                prompt = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
                new = out[row, width:].tolist()
                # generate pads a finished row after its stop token; the answer ends at that token
                end = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))
                pairs.append((prompt, new[:end]))
    finally:
        tokenizer.padding_side = side
    return pairs


def _vision_batch(model, processor, prompts: list[str], images: list[list]) -> dict:
    from studio.data.vision import on_device

    kwargs = {"images": images} if any(images) else {}
    batch = processor(text=prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False, **kwargs)
    return on_device(dict(batch), next(model.parameters()).device, model.dtype)


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 128, batch_size: int = 16,
             processor=None, images: list[list] | None = None) -> list[str]:
    """Greedy answers for already-templated prompts, batched with left padding (see generate_ids for images)."""
    pairs = generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size, processor, images)
    return [tokenizer.decode(new, skip_special_tokens=True).strip() for _prompt, new in pairs]


@torch.no_grad()
def heldout_loss(model, encoded: list[Encoded], batch_size: int = 8, collator=None) -> float | None:
    """Mean loss per trained token on encoded examples (the training masks), or None without examples. Vision-language
    rows are batched by their `collator` (studio.data.vision.VisionCollator), which adds their pixels."""
    if not encoded:
        return None
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        if collator is not None:
            from studio.data.vision import on_device

            inputs = on_device(collator.encoded_batch(chunk), device, model.dtype)
            labels = inputs.pop("labels")
        else:
            width = max(len(e.input_ids) for e in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, e in enumerate(chunk):
                ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
                labels[row, : len(e.labels)] = torch.tensor(e.labels)
                mask[row, : len(e.input_ids)] = 1
            inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        logits = model(**inputs).logits.float()
        shifted = labels[:, 1:].to(device)
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=IGNORE, reduction="sum")
        total += float(losses)
        count += int((shifted != IGNORE).sum())
    return total / count if count else None


def perplexity(loss: float | None) -> float | None:
    """exp(loss), capped so a diverged model reports a number instead of overflowing."""
    return None if loss is None else math.exp(min(loss, 50.0))
