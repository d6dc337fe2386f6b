"""Task metrics: what counts as a right answer."""

import json
import time

import pytest

from studio.evaluation.metrics import (
    contains,
    exact_match,
    field_accuracy,
    json_valid,
    numeric_answer,
    parse_json_object,
    reference_schema,
    rouge_l,
    score,
)

REF = '{"item": "blue mug", "qty": 12, "unit": "box", "city": "Oslo"}'


def test_field_accuracy_full_and_partial_credit():
    assert field_accuracy(REF, REF) == 1.0
    assert field_accuracy('{"item": "blue mug", "qty": 12, "unit": "crate", "city": "Bergen"}', REF) == 0.5
    assert field_accuracy('{"item": "blue mug"}', REF) == 0.25  # missing fields score nothing
    assert field_accuracy('{"other": 1}', REF) == 0.0


def test_field_accuracy_ignores_chatter_around_the_json():
    answer = 'Sure! Here is the order:\n{"item": "blue mug", "qty": 12, "unit": "box", "city": "Oslo"}\nAnything else?'
    assert field_accuracy(answer, REF) == 1.0


def test_field_accuracy_invalid_json_scores_zero():
    assert field_accuracy('{"item": "blue mug", "qty": 12,', REF) == 0.0
    assert field_accuracy("blue mug, 12 boxes, Oslo", REF) == 0.0
    assert field_accuracy('["blue mug", 12]', REF) == 0.0


def test_field_accuracy_numbers_equal_their_strings_and_case_and_spacing_fold():
    assert field_accuracy('{"item": "Blue  Mug", "qty": "12", "unit": "BOX", "city": " oslo "}', REF) == 1.0
    assert field_accuracy('{"item": "blue mug", "qty": 13, "unit": "box", "city": "Oslo"}', REF) == 0.75


def test_field_accuracy_needs_a_json_reference():
    with pytest.raises(ValueError, match="not a JSON object"):
        field_accuracy(REF, "just text")


def test_parse_json_object_skips_a_broken_first_brace():
    assert parse_json_object('noise {not json} then {"a": 1}') == {"a": 1}
    assert parse_json_object('{"outer": {"inner": 2}}') == {"outer": {"inner": 2}}
    assert parse_json_object("no braces") is None


def test_braces_inside_json_strings_do_not_break_parsing():
    # A valid object whose text values contain braces, e.g. an extracted note "use {code} at checkout".
    answer = '{"note": "use {code} at checkout", "qty": 2}'
    assert parse_json_object(answer) == {"note": "use {code} at checkout", "qty": 2}
    assert parse_json_object('Here: {"note": "a } b", "qty": 1} done') == {"note": "a } b", "qty": 1}
    assert field_accuracy(answer, answer) == 1.0


def test_exact_match():
    assert exact_match("  5\n", "5") == 1.0
    assert exact_match("5.", "5") == 0.0
    assert exact_match("Five", "five") == 0.0  # exact means exact, apart from surrounding whitespace


def test_contains():
    assert contains("The answer is OSLO, Norway", "oslo") == 1.0
    assert contains("The answer is Bergen", "oslo") == 0.0


def test_score_is_a_mean_on_a_0_to_100_scale():
    assert score("exact_match", ["5", "6", "7", "x"], ["5", "6", "7", "8"]) == pytest.approx(75.0)
    assert score("field_accuracy", [REF, '{"item": "blue mug"}'], [REF, REF]) == pytest.approx(62.5)
    assert score("contains", ["a b", "c"], ["b", "d"]) == pytest.approx(50.0)
    assert score("exact_match", [], []) == 0.0


def test_score_rejects_an_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric"):
        score("bleu", ["a"], ["a"])


def test_every_metric_the_schema_offers_exists_and_no_other():
    """eval.metric is a typed Literal; each name but `none` must be a metric here, and each metric must be offered."""
    import typing

    from studio.config.schema import Metric
    from studio.evaluation.metrics import METRICS

    assert set(METRICS) | {"none"} == set(typing.get_args(Metric))


@pytest.mark.parametrize(("prediction", "reference", "expected"), [
    ("the cat sat on the mat", "the cat sat on the mat", 1.0),
    ("the cat sat on the mat", "the cat is on the mat", 5 / 6),  # LCS "the cat on the mat": 5 of 6 words each way
    ("The CAT, sat!", "the cat sat", 1.0),  # case and punctuation are not words
    ("mat the on sat cat the", "the cat sat on the mat", 0.5),  # same words, order lost: LCS "the cat the" of 3
    ("Paris", "The capital of France is Paris", 2 * (1 * 1 / 6) / (1 + 1 / 6)),  # precision 1, recall 1/6
    ("", "Paris", 0.0),
    ("Paris", "", 0.0),
    ("", "", 1.0),  # two answers without words: equal, so 1
    ("  ", "", 1.0),
    ("!!", "??", 0.0),
    ("👍", "👍", 1.0),
    ("Zürich", "zürich", 1.0),  # non-ASCII letters are words (the package's default tokenizer would drop them)
    ("東京 です", "東京 です", 1.0),
    ("Straße", "STRASSE", 1.0),  # casefolded
    ("<script>alert(1)</script> Paris", "Paris", 2 * (1 / 5) / (1 + 1 / 5)),
    ("\x00\x00 cat \u202e", "cat", 1.0),  # control characters are no words
    ("{\"a\": 1}", "{\"a\": 2}", 0.5),
])
def test_rouge_l(prediction, reference, expected):
    assert rouge_l(prediction, reference) == pytest.approx(expected)


def test_rouge_l_of_a_runaway_answer_is_quick():
    started = time.perf_counter()
    value = rouge_l("word " * 200_000, " ".join(["word"] * 3000))  # both sides past the token cap
    assert 0.0 <= value <= 1.0 and time.perf_counter() - started < 30


SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["name"],
          "properties": {"name": {"type": "string"}, "qty": {"type": "integer"}}}
QTY_INT = {"type": "object", "properties": {"qty": {"type": "integer"}}, "required": ["qty"]}


@pytest.mark.parametrize(("prediction", "reference", "schema", "expected"), [
    ('{"a": 1}', "any reference", None, 1.0),  # no schema: any JSON object
    ('  {"a": 1}\n', "x", None, 1.0),
    ("```json\n{\"a\": 1}\n```", "x", None, 1.0),  # a fenced answer, as the json_schema reward reads it
    ("thinking...<answer>{\"a\": 1}</answer>", "x", None, 1.0),
    ('Sure! {"a": 1}', "x", None, 0.0),  # chatter around it: a program reading the answer could not parse it
    ("[1, 2]", "x", None, 0.0),  # JSON, but not an object
    ('"text"', "x", None, 0.0),
    ("42", "x", None, 0.0),
    ("null", "x", None, 0.0),
    ('{"a": NaN}', "x", None, 0.0),  # not JSON, though Python's json accepts it
    ('{"a": Infinity}', "x", None, 0.0),
    ('{"a": 1', "x", None, 0.0),
    ("", "x", None, 0.0),
    ("\x00{}", "x", None, 0.0),
    ("[" * 100_000, "x", None, 0.0),  # nested past the recursion limit
    ('{"a":' * 50_000 + "1" + "}" * 50_000, "x", None, 0.0),
    ('{"a": "' + "x" * 1_100_000 + '"}', "x", None, 0.0),  # over the 1 MB cap
    ('{"name": "Ann", "qty": 3}', json.dumps(SCHEMA), None, 1.0),  # the reference is a JSON Schema
    ('{"qty": 3}', json.dumps(SCHEMA), None, 0.0),  # required name missing
    ('{"name": 7}', json.dumps(SCHEMA), None, 0.0),
    ('{"other": 1}', '{"name": "Ann", "qty": 3}', None, 1.0),  # an example answer is no schema: any object passes
    ('{"qty": 3}', "x", QTY_INT, 1.0),  # the row's json_schema column
    ('{"qty": "3"}', "x", QTY_INT, 0.0),
    ('{"qty": 3}', "x", json.dumps(QTY_INT), 1.0),  # the column as a JSON string
    ('{"qty": 3}', json.dumps(SCHEMA), QTY_INT, 1.0),  # the column wins over the reference
    ("[3]", "x", True, 0.0),  # `true` accepts anything, but the answer must still be an object
])
def test_json_valid(prediction, reference, schema, expected):
    assert json_valid(prediction, reference, schema) == expected


@pytest.mark.parametrize("reference", ['{"name": "Ann"}', "[1]", "not json", '{"type": "object"}', "", "{" * 10_000])
def test_a_reference_that_is_no_schema(reference):
    assert reference_schema(reference) is None


@pytest.mark.parametrize("schema", [{"type": 5}, '{"type": "objekt"}', "{not json", 7])
def test_json_valid_names_a_broken_schema(schema):
    with pytest.raises(ValueError, match="json_schema"):
        json_valid('{"a": 1}', "x", schema)
    with pytest.raises(ValueError, match="example 2"):
        score("json_valid", ['{"a": 1}'] * 2, ["x"] * 2, [None, schema])


@pytest.mark.parametrize(("prediction", "reference", "expected"), [
    ("The answer is 42", "42", 1.0),
    ("<answer>41</answer> and later 42", "42", 0.0),  # the tagged answer counts, not the last number
    ("#### 1,234", "1234", 1.0),
    ("\\boxed{7}", "7", 1.0),
    ("no number at all", "3", 0.0),
    ("", "3", 0.0),
    ("9" * 5000, "3", 0.0),
])
def test_numeric_answer(prediction, reference, expected):
    assert numeric_answer(prediction, reference) == expected


def test_score_of_the_new_metrics():
    assert score("rouge_l", ["a b", "c"], ["a b", "d"]) == pytest.approx(50.0)
    assert score("json_valid", ['{"qty": 3}', '{"qty": "3"}', "[]"], ["x"] * 3, [QTY_INT, QTY_INT, None]) == pytest.approx(100 / 3)
