"""Task metrics on generated answers, each 0..100: field accuracy for JSON, exact match, contains, numeric answer,
ROUGE-L (the rouge-score package) and JSON validity (with jsonschema, as the json_schema reward checks it)."""

from __future__ import annotations

import json
import re
from functools import lru_cache


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


ROUGE_MAX_TOKENS = 2048  # rouge-score's LCS table is pure Python (len x len): a runaway answer would take minutes


class _WordTokenizer:
    """Casefolded Unicode words: rouge-score's default tokenizer keeps only [a-z0-9], so "Zürich" or "東京" would
    lose their letters and an answer in another script would score 0 against its own exact copy."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """The words of a text, at most ROUGE_MAX_TOKENS of them."""
        return re.findall(r"\w+", text.casefold())[:ROUGE_MAX_TOKENS]


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WordTokenizer())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of the answer against the reference (0..1): the longest common subsequence of their words,
    for free-text answers where wording may differ but word order still says something. Two answers without
    a single word (only punctuation, or empty) score 1 when equal, else 0."""
    if not _WordTokenizer.tokenize(reference) and not _WordTokenizer.tokenize(prediction):
        return exact_match(prediction, reference)
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


_OBJECT_SCHEMA = {"type": "object"}


def reference_schema(reference: str) -> dict | None:
    """The JSON Schema a reference answer holds (a JSON object with "$schema", or with "type" and "properties"),
    or None when the reference is anything else, such as an example answer."""
    try:
        value = json.loads(reference)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, dict) and ("$schema" in value or ("type" in value and isinstance(value.get("properties"), dict))):
        return value
    return None


def json_valid(prediction: str, reference: str, schema=None) -> float:
    """1 when the answer is a JSON object that fits the schema, else 0: whether a program could use the answer.

    The schema is the example's `json_schema` column (`schema`), else the reference when it holds one; with
    neither, any JSON object passes. The answer is read as the json_schema reward reads a completion (the whole
    answer, its last <answer> block, or a ```json fence; no chatter around it), and checked by that reward.
    A schema that is not a valid JSON Schema is a ValueError naming it.
    """
    from studio.training.rewards.structured import json_schema as reward

    chosen = schema if schema is not None else reference_schema(reference)
    if reward([prediction], schema=_OBJECT_SCHEMA)[0] != 1.0:
        return 0.0
    return 1.0 if chosen is None else float(reward([prediction], [chosen])[0] == 1.0)


METRICS = {
    "field_accuracy": field_accuracy, "exact_match": exact_match, "contains": contains, "numeric_answer": numeric_answer,
    "rouge_l": rouge_l, "json_valid": json_valid,
}
TAKES_SCHEMA = {"json_valid"}  # metrics that read the example's json_schema column


def score(metric: str, predictions: list[str], references: list[str], schemas: list | None = None) -> float:
    """Mean of a metric over examples, as a 0..100 score; `schemas` are the examples' json_schema column values
    (None where a row has none). A reference or schema the metric cannot use is a ValueError naming the example."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")
    if not references:
        return 0.0
    fn = METRICS[metric]
    schemas = schemas if schemas is not None else [None] * len(references)
    total = 0.0
    for number, (p, r, s) in enumerate(zip(predictions, references, schemas), start=1):
        try:
            total += fn(p, r, s) if metric in TAKES_SCHEMA else fn(p, r)
        except ValueError as exc:
            raise ValueError(f"example {number}: {exc}") from None
    return 100.0 * total / len(references)
