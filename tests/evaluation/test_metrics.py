"""Task metrics: what counts as a right answer."""

import pytest

from studio.evaluation.metrics import (
    contains,
    exact_match,
    field_accuracy,
    parse_json_object,
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
