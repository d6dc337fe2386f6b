"""Task metrics on generated answers, each 0..100: field accuracy for JSON, exact match, contains, numeric answer."""

from __future__ import annotations

import json


def parse_json_object(text: str) -> dict | None:
    """The first JSON object in a generated answer, or None when there is none (models add chatter)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def _norm(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 12.0 and 12 are the same quantity
    return " ".join(str(value).split()).casefold()


def field_accuracy(prediction: str, reference: str) -> float:
    """Share of the reference's JSON fields that the prediction has with an equal value (0..1).

    Values compare after whitespace and case folding, and `12` equals `"12"`: a user reading the
    extraction would not care about either difference. Unparseable output scores 0.
    """
    ref = parse_json_object(reference)
    if not ref:
        raise ValueError("the reference answer is not a JSON object; use the exact_match metric for this data")
    pred = parse_json_object(prediction) or {}
    return sum(1 for key, value in ref.items() if key in pred and _norm(pred[key]) == _norm(value)) / len(ref)


def exact_match(prediction: str, reference: str) -> float:
    """1 when the answer equals the reference up to surrounding whitespace, else 0."""
    return float(prediction.strip() == reference.strip())


def contains(prediction: str, reference: str) -> float:
    """1 when the reference text appears in the answer (case-insensitive), else 0."""
    return float(_norm(reference) in _norm(prediction))


def numeric_answer(prediction: str, reference: str) -> float:
    """1 when the answer's final number (after an <answer> tag, \\boxed{}, ####, else the last number written)
    equals the reference's: the GRPO reward of the same name, so held-out accuracy scores what training rewarded."""
    from studio.training.rewards.answers import numeric_answer as reward

    return reward([prediction], [reference])[0]


METRICS = {"field_accuracy": field_accuracy, "exact_match": exact_match, "contains": contains, "numeric_answer": numeric_answer}


def score(metric: str, predictions: list[str], references: list[str]) -> float:
    """Mean of a metric over examples, as a 0..100 score."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")
    if not references:
        return 0.0
    fn = METRICS[metric]
    return 100.0 * sum(fn(p, r) for p, r in zip(predictions, references)) / len(references)
