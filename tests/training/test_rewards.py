"""GRPO rewards: extraction and scoring on hostile text, the registry's checks, reward files and the trl guard."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
import time

import pytest

from studio.errors import StudioError
from studio.training.rewards import SHIPPED, RewardError, available, check_columns, check_options, guarded, load_reward_file, reference_scores, resolve
from studio.training.rewards.answers import exact_answer, extract_final, last_number, normalize_answer, numeric_answer, parse_number
from studio.training.rewards.formats import length_target, regex_match, think_format
from studio.training.rewards.structured import extract_json, json_schema

MB = "x" * 1_000_000


# --- extraction helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("   \n\t", None),
        ("no marker at all, 42", None),
        ("<answer>42</answer>", "42"),
        ("<answer> 1 </answer> then <answer>2</answer>", "2"),  # the last block wins
        ("<answer>42", None),  # unclosed: no answer block
        ("<answer>1</answer> and <answer>2", "1"),  # the unclosed tail does not count
        ("</answer> stray close", None),
        (r"so \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),  # nested braces kept whole
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{unclosed", None),
        (r"\boxed{3} and \boxed{unclosed", "3"),
        ("work\n#### 1,234", "1,234"),
        ("#### 1\n#### 2\nexplanation", "2"),
        (r"<answer>7</answer> \boxed{8} #### 9", "7"),  # answer tags beat \boxed beat ####
        (r"\boxed{8} #### 9", "8"),
        ("<answer>4\x002</answer>", "4\x002"),
    ],
)
def test_extract_final(text, expected):
    assert extract_final(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42.0),
        ("-7", -7.0),
        ("\u22123", -3.0),  # the typographic minus
        ("+2.5", 2.5),
        ("1,234", 1234.0),
        ("-1,234,567.25", -1234567.25),
        ("$5", 5.0),
        ("$1,000.50", 1000.5),
        ("-$5", -5.0),
        ("12%", 12.0),  # kept as written, not divided by 100
        ("3/4", 0.75),
        ("-3/4", -0.75),
        (r"\frac{3}{4}", 0.75),
        (r"-\dfrac{1}{2}", -0.5),
        (r"\boxed{7}", 7.0),
        ("**42**", 42.0),
        ("42.", 42.0),
        ("$3$", 3.0),
        (".5", 0.5),
        ("1e3", 1000.0),
        (42, 42.0),
        (2.5, 2.5),
        # hostile or not a number
        ("", None),
        ("   ", None),
        ("\u0664\u0662", None),  # Arabic-Indic 42: float() accepts it, a reward must not
        ("\uff14\uff12", None),  # full-width 42
        ("1e999", None),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-Infinity", None),
        ("1" * 5000, None),
        ("1" * 101, None),
        ("4\x002", None),
        ("1,23", None),
        ("12,34,567", None),
        ("1/0", None),
        ("forty-two", None),
        ("42 apples", None),
        ("--5", None),
        (True, None),
        (None, None),
        (float("nan"), None),
        (MB, None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I had 3 apples, then 5.", 5.0),
        ("the total is -12 degrees", -12.0),
        ("pages 3-5", 5.0),  # a dash between numbers is no minus sign
        ("costs $1,234 in all", 1234.0),
        (r"so it is \frac{1}{4} of it", 0.25),
        ("a ratio of 3/4.", 0.75),
        ("I have 3, 4, and 5", 5.0),
        ("no numbers here", None),
        ("", None),
        ("the answer is \u0664\u0662", None),
        ("3 and then 1e999", None),  # the last number is not finite: no number, not 3
        ("7 then " + "9" * 5000, None),
        ("null\x00byte 8", 8.0),
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('  "Paris".  ', "paris"),
        ("**Paris**!", "paris"),
        ("`x = 1`", "x = 1"),
        ("New   York\n City?", "new york city"),
        ("\u201cParis\u201d", "paris"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


# --- answer rewards ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "answer", "tolerance", "expected"),
    [
        ("<answer>42</answer>", "42", 1e-6, 1.0),
        ("<answer>41</answer>", "42", 1e-6, 0.0),
        ("so 40 plus 2 is 42", 42, 1e-6, 1.0),  # no marker: the last number
        ("it is 42, not 41", "42", 1e-6, 0.0),
        ("<answer>42</answer> but maybe 41", "42", 1e-6, 1.0),  # a marker beats the last number
        (r"\boxed{\frac{1}{2}}", "0.5", 1e-6, 1.0),
        ("#### 1,234", "1234", 1e-6, 1.0),
        ("<answer>1234</answer>", "He sold 1,234 apples.\n#### 1,234", 1e-6, 1.0),  # a GSM8K reference
        ("<answer>$5</answer>", "5", 1e-6, 1.0),
        ("<answer>-3</answer>", "-3", 1e-6, 1.0),
        ("<answer>-3</answer>", "3", 1e-6, 0.0),
        ("<answer>3.14</answer>", "3.14159", 0.01, 1.0),
        ("<answer>3.14</answer>", "3.14159", 1e-6, 0.0),
        ("<answer>forty-two</answer>", "42", 1e-6, 0.0),
        ("<answer>42", "42", 1e-6, 1.0),  # unclosed tag: no marker, the last number counts
        ("<answer>\u0664\u0662</answer>", "42", 1e-6, 0.0),
        ("<answer>1e999</answer>", "1", 1e-6, 0.0),
        ("<answer>nan</answer>", "1", 1e-6, 0.0),
        ("", "0", 1e-6, 0.0),
        ("   ", "0", 1e-6, 0.0),
        ("4\x002", "42", 1e-6, 0.0),
        ("1" * 5000, "1", 1e-6, 0.0),
    ],
)
def test_numeric_answer(completion, answer, tolerance, expected):
    assert numeric_answer([completion], [answer], tolerance=tolerance) == [expected]


@pytest.mark.parametrize("bad", ["forty-two", "", None, "nan", "#### none"])
def test_numeric_answer_rejects_a_reference_that_is_no_number(bad):
    with pytest.raises(ValueError, match="reference answer"):
        numeric_answer(["42"], [bad])


@pytest.mark.parametrize(
    ("completion", "answer", "ignore_case", "expected"),
    [
        ("<answer>Paris</answer>", "paris", True, 1.0),
        ("<answer>Paris</answer>", "paris", False, 0.0),
        ("<answer> **Paris**. </answer>", "Paris", False, 1.0),
        ("Paris!", "paris", True, 1.0),  # no marker: the whole completion
        ("The capital is Paris", "paris", True, 0.0),
        ("<answer>x</answer><answer>Rome</answer>", "rome", True, 1.0),
        ("#### 72", "Natalia sold 72 clips.\n#### 72", True, 1.0),
        ("", "paris", True, 0.0),
        ("\x00", "paris", True, 0.0),
    ],
)
def test_exact_answer(completion, answer, ignore_case, expected):
    assert exact_answer([completion], [answer], ignore_case=ignore_case) == [expected]


# --- format rewards ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "kwargs", "expected"),
    [
        ("<think>step 1</think><answer>4</answer>", {}, 1.0),
        ("  <think>\nstep 1\n</think>\n\n<answer> 4 </answer>\n", {}, 1.0),
        ("step 1</think><answer>4</answer>", {}, 1.0),  # the prompt already opened <think>
        ("<think></think><answer>4</answer>", {}, 0.0),  # empty thinking
        ("<think>  </think><answer>4</answer>", {}, 0.0),
        ("<think>x</think><answer></answer>", {}, 0.0),  # empty answer
        ("<think>x</think><answer>4</answer> trailing", {}, 0.0),
        ("preamble <think>x</think><answer>4</answer>", {}, 0.0),
        ("<think>x</think> between <answer>4</answer>", {}, 0.0),
        ("<think>x</think><answer>4</answer><answer>5</answer>", {}, 0.0),
        ("<think>x</think><think>y</think><answer>4</answer>", {}, 0.0),
        ("<think><think>x</think></think><answer>4</answer>", {}, 0.0),  # nested
        ("<think>x <answer>3</answer></think><answer>4</answer>", {}, 0.0),
        ("<think>x</think>", {}, 0.0),
        ("<think>x<answer>4</answer>", {}, 0.0),  # never closed
        ("<answer>4</answer>", {}, 0.0),
        ("", {}, 0.0),
        ("   ", {}, 0.0),
        ("<think>x</think>free text", {"require_answer": False}, 1.0),
        ("<think>x</think>   ", {"require_answer": False}, 0.0),
        ("<r>x</r><a>4</a>", {"think_tag": "r", "answer_tag": "a"}, 1.0),
        # regex-special tags match literally, never as patterns
        ("<th.nk>x</th.nk><a+>4</a+>", {"think_tag": "th.nk", "answer_tag": "a+"}, 1.0),
        ("<thXnk>x</thXnk><a+>4</a+>", {"think_tag": "th.nk", "answer_tag": "a+"}, 0.0),
        ("<(a|b)>x</(a|b)><[z]*>4</[z]*>", {"think_tag": "(a|b)", "answer_tag": "[z]*"}, 1.0),
        ("<a>x</a><>4</>", {"think_tag": "(a|b)", "answer_tag": "[z]*"}, 0.0),
        ("<think>" + MB + "</think><answer>4</answer>", {}, 1.0),
        ("<think>\x00</think><answer>\x00</answer>", {}, 1.0),  # a null byte is content, odd but non-empty
    ],
)
def test_think_format(completion, kwargs, expected):
    assert think_format([completion], **kwargs) == [expected]


@pytest.mark.parametrize(
    ("completion", "pattern", "full_match", "expected"),
    [
        ("Answer: 42", r"Answer: \d+", False, 1.0),
        ("so... Answer: 42", r"Answer: \d+", False, 1.0),
        ("so... Answer: 42", r"Answer: \d+", True, 0.0),
        ("Answer: 42", r"Answer: \d+", True, 1.0),
        ("", r"^$", True, 1.0),
        ("", r"\w", False, 0.0),
        ("a\x00b", r"a\x00b", True, 1.0),
        (MB, r"y", False, 0.0),
    ],
)
def test_regex_match(completion, pattern, full_match, expected):
    assert regex_match([completion], pattern=pattern, full_match=full_match) == [expected]


@pytest.mark.parametrize(
    ("length", "kwargs", "expected"),
    [
        (200, {}, 1.0),
        (250, {}, 1.0),  # at the edge of the tolerance
        (150, {}, 1.0),
        (350, {}, 0.5),  # 100 past the tolerance, half of target
        (450, {}, 0.0),
        (10_000, {}, 0.0),
        (0, {}, 0.25),  # 200 short, 150 past tolerance: 1 - 150/200
        (0, {"target": 10, "tolerance": 0}, 0.0),
        (15, {"target": 10, "tolerance": 0}, 0.5),
    ],
)
def test_length_target_chars(length, kwargs, expected):
    assert length_target(["a" * length], **kwargs) == [pytest.approx(expected)]


def test_length_target_counts_words_not_characters():
    assert length_target(["one two   three\nfour"], target=4, tolerance=0, unit="words") == [1.0]
    assert length_target(["one two"], target=4, tolerance=0, unit="words") == [0.5]


# --- structured rewards ------------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.mark.parametrize(
    ("completion", "row_schema", "option", "expected"),
    [
        ('{"n": 1}', None, SCHEMA, 1.0),
        ('{"n": "one"}', None, SCHEMA, 0.5),  # parses, does not validate
        ("not json", None, SCHEMA, 0.0),
        ('```json\n{"n": 1}\n```', None, SCHEMA, 1.0),
        ('```\n{"n": 1}\n```', None, SCHEMA, 1.0),
        ('```{"n": 1}```', None, SCHEMA, 1.0),
        ('thinking... <answer>{"n": 2}</answer>', None, SCHEMA, 1.0),
        ('<answer>{"n": "x"}</answer><answer>{"n": 3}</answer>', None, SCHEMA, 1.0),
        ('{"n": 1}', json.dumps({"type": "array"}), SCHEMA, 0.5),  # the row's schema wins over the option
        ("[1, 2]", {"type": "array"}, None, 1.0),
        ("[1, 2]", None, None, 1.0),  # no schema at all: parsing is enough
        ('{"n": NaN}', None, None, 0.0),  # not JSON, though Python's json accepts it
        ("", None, SCHEMA, 0.0),
        ("   ", None, None, 0.0),
        ("[" * 100_000 + "]" * 100_000, None, None, 0.0),  # too deep to parse
        ("[" + " " * 1_000_001 + "]", None, None, 0.0),  # over 1 MB
        ('{"n": 1}\x00', None, SCHEMA, 0.0),
    ],
)
def test_json_schema(completion, row_schema, option, expected):
    assert json_schema([completion], [row_schema], schema=option) == [expected]


def test_json_schema_without_the_column_uses_the_option():
    assert json_schema(['{"n": 1}', "{}"], schema=SCHEMA) == [1.0, 0.5]


@pytest.mark.parametrize("bad", [{"type": "no-such-type"}, '{"type": 12}', "{not json", 42])
def test_json_schema_rejects_an_invalid_schema_by_name(bad):
    with pytest.raises(ValueError, match="json_schema"):
        json_schema(['{"n": 1}'], [bad])


def test_extract_json_keeps_plain_text():
    assert extract_json('  {"a": 1}  ') == '{"a": 1}'


# --- hostile input at scale --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [MB, "1 " * 500_000, "\\boxed{" * 140_000, "{" * 1_000_000, "<answer>" * 120_000, "<think>" * 140_000, "9" * 1_000_000],
    ids=["letters", "numbers", "boxed", "braces", "answer-tags", "think-tags", "digits"],
)
def test_every_shipped_reward_stays_fast_on_a_megabyte(text):
    start = time.perf_counter()
    batch = [text]
    scores = [
        *numeric_answer(batch, ["1"]),
        *exact_answer(batch, ["1"]),
        *think_format(batch),
        *regex_match(batch, pattern="zzz"),
        *length_target(batch),
        *json_schema(batch, schema=SCHEMA),
    ]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert time.perf_counter() - start < 1.5


# --- the registry ------------------------------------------------------------------------------------------


def test_shipped_rewards_describe_their_columns_and_options():
    assert {n: (r.columns, r.optional_columns) for n, r in SHIPPED.items()} == {
        "numeric_answer": (("answer",), ()),
        "exact_answer": (("answer",), ()),
        "think_format": ((), ()),
        "regex_match": ((), ()),
        "length_target": ((), ()),
        "json_schema": ((), ("json_schema",)),
    }
    assert SHIPPED["numeric_answer"].options == {"tolerance": 1e-6}
    assert repr(SHIPPED["regex_match"].options["pattern"]) == "REQUIRED"
    assert all(r.summary and r.source == "shipped" and r.fn.__doc__ for r in SHIPPED.values())


@pytest.mark.parametrize(
    ("name", "args", "fragment"),
    [
        ("numeric_answer", {"tolerence": 0.1}, "did you mean 'tolerance'"),
        ("numeric_answer", {"tolerance": "small"}, "must be float"),
        ("numeric_answer", {"tolerance": True}, "must be float"),
        ("numeric_answer", {"tolerance": -1}, "tolerance must be >= 0"),
        ("numeric_answer", {"tolerance": float("inf")}, "inf"),
        ("numeric_answer", ["tolerance"], "mapping"),
        ("regex_match", {}, "needs the option 'pattern'"),
        ("regex_match", {"pattern": "(unclosed"}, "'(unclosed'"),
        ("regex_match", {"pattern": 5}, "must be a string"),
        ("length_target", {"target": 0}, "target must be >= 1"),
        ("length_target", {"tolerance": -5}, "tolerance must be >= 0"),
        ("length_target", {"unit": "tokens"}, "unit must be"),
        ("length_target", {"target": 2.5}, "must be int"),
        ("think_format", {"think_tag": "a", "answer_tag": "a"}, "must differ"),
        ("think_format", {"think_tag": "<think>"}, "without spaces around it or < >"),
        ("think_format", {"think_tag": ""}, "non-empty"),
        ("json_schema", {"schema": {"type": 7}}, "not a valid JSON Schema"),
    ],
)
def test_check_options_refuses_bad_options(name, args, fragment):
    with pytest.raises(StudioError) as info:
        check_options(SHIPPED[name], args, "grpo.rewards[0].args")
    assert fragment in str(info.value)
    assert info.value.where == "grpo.rewards[0].args" and info.value.fix


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("numeric_answer", None, {"tolerance": 1e-6}),
        ("numeric_answer", {"tolerance": 1}, {"tolerance": 1.0}),  # an int will do for a float
        ("regex_match", {"pattern": r"\d+"}, {"pattern": r"\d+", "full_match": False}),
        ("length_target", {"unit": "words"}, {"target": 200, "tolerance": 50, "unit": "words"}),
        ("json_schema", {"schema": SCHEMA}, {"schema": SCHEMA}),
    ],
)
def test_check_options_fills_defaults(name, args, expected):
    options = check_options(SHIPPED[name], args, "here")
    assert options == expected
    assert all(type(options[k]) is type(v) for k, v in expected.items())


@pytest.mark.parametrize(
    ("specs", "fragment", "where"),
    [
        ([{"name": "numeric_anwser"}], "did you mean 'numeric_answer'", "grpo.rewards[0].name"),
        ([{"name": "zzzz"}], "available rewards: exact_answer, json_schema", "grpo.rewards[0].name"),
        ([{"name": "think_format"}, {"name": "regex_match", "args": {"pattern": "["}}], "not a valid regular expression", "grpo.rewards[1].args"),
        ([{"name": "think_format"}, {"name": "think_format", "args": {}}], "listed twice", "grpo.rewards[1]"),
        ([{"name": "think_format", "weight": "heavy"}], "finite number", "grpo.rewards[0].weight"),
        ([{"name": "think_format", "weight": float("nan")}], "finite number", "grpo.rewards[0].weight"),
    ],
)
def test_resolve_refuses_bad_specs(specs, fragment, where):
    with pytest.raises(StudioError) as info:
        resolve(specs)
    assert fragment in info.value.what + (info.value.fix or "")
    assert info.value.where == where


class Spec:
    """The recipe's reward entry as an object (the pydantic model), not a dict."""

    def __init__(self, name, weight=1.0, args=None):
        self.name, self.weight, self.args = name, weight, args


def test_resolve_returns_rewards_options_and_weights():
    resolved = resolve([Spec("numeric_answer", 2, {"tolerance": 0.5}), {"name": "think_format", "weight": 0.5}, Spec("length_target", args={"target": 10}), Spec("length_target", args={"target": 20})])
    assert [(r.name, o, w) for r, o, w in resolved] == [
        ("numeric_answer", {"tolerance": 0.5}, 2.0),
        ("think_format", {"think_tag": "think", "answer_tag": "answer", "require_answer": True}, 0.5),
        ("length_target", {"target": 10, "tolerance": 50, "unit": "chars"}, 1.0),
        ("length_target", {"target": 20, "tolerance": 50, "unit": "chars"}, 1.0),
    ]


REWARD_FILE = '''
"""Two rewards, and a helper imported from elsewhere that is not one."""
from studio.training.rewards.answers import numeric_answer, last_number
from os.path import join

def exclaims(completions, **kwargs):
    """1.0 when the completion ends with an exclamation mark."""
    return [1.0 if c.endswith("!") else 0.0 for c in completions]

def mentions(completions, keyword, hint=None, *, bonus: float = 1.0, word: str):
    """bonus when the completion mentions the row's keyword (and the word option)."""
    return [bonus if k in c and word in c else 0.0 for c, k in zip(completions, keyword)]

def _private(completions):
    return [0.0]

def not_a_reward(text):
    return 1
'''


def test_a_reward_file_brings_its_own_functions_only(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARD_FILE)
    rewards = load_reward_file(path)
    assert sorted(rewards) == ["exclaims", "mentions"]
    mentions = rewards["mentions"]
    assert (mentions.columns, mentions.optional_columns, mentions.source) == (("keyword",), ("hint",), str(path))
    assert mentions.options["bonus"] == 1.0 and repr(mentions.options["word"]) == "REQUIRED"
    assert rewards["exclaims"].summary == "1.0 when the completion ends with an exclamation mark."
    assert rewards["exclaims"].var_kwargs
    both = available(path)
    assert set(SHIPPED) < set(both) and "exclaims" in both
    resolved = resolve([{"name": "mentions", "args": {"word": "ok"}}], reward_file=path)
    assert resolved[0][1] == {"bonus": 1.0, "word": "ok"}
    with pytest.raises(StudioError, match="needs the option 'word'"):
        resolve([{"name": "mentions"}], reward_file=path)


@pytest.mark.parametrize(
    ("source", "fragment", "where_suffix"),
    [
        ("def broken(completions:\n    return []\n", "syntax error", ":1"),
        ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import", ""),
        ("import sys\nsys.exit(3)\n", "SystemExit", ""),
        ("def helper(text):\n    return 1\n", "defines no reward function", ""),
        ("def numeric_answer(completions, answer):\n    return [1.0]\n", "already a shipped reward", ""),
        ("def bad(completions, col, /):\n    return [1.0]\n", "positional-only", ": def bad"),
    ],
)
def test_a_bad_reward_file_is_a_clear_error(tmp_path, source, fragment, where_suffix):
    path = tmp_path / "rewards.py"
    path.write_text(source)
    with pytest.raises(StudioError) as info:
        available(path)
    assert fragment in info.value.what
    assert info.value.where == f"{path}{where_suffix}" and info.value.fix


def test_a_missing_reward_file_is_a_clear_error(tmp_path):
    with pytest.raises(StudioError, match="does not exist") as info:
        load_reward_file(tmp_path / "nope.py")
    assert info.value.where == str(tmp_path / "nope.py")


def test_importing_the_rewards_loads_neither_torch_nor_jsonschema():
    probe = "import sys, studio.training.rewards; print(sorted(m for m in ('torch', 'jsonschema', 'trl', 'transformers') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the guard ---------------------------------------------------------------------------------------------


def reward_of(source: str, tmp_path, name: str):
    """A reward from a one-function reward file, resolved with no options."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return load_reward_file(path)[name]


def test_guarded_looks_like_a_trl_reward_and_scores():
    fn = guarded(SHIPPED["numeric_answer"], {"tolerance": 1e-6})
    assert fn.__name__ == "numeric_answer"
    assert list(inspect.signature(fn).parameters) == ["prompts", "completions", "completion_ids", "kwargs"]
    scores = fn(prompts=["p", "p"], completions=["<answer>4</answer>", "5"], completion_ids=[[1], [2]], answer=["4", "4"], _where=["a.jsonl:1", "a.jsonl:1"], trainer_state=None)
    assert scores == [1.0, 0.0] and all(type(s) is float for s in scores)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ([{"role": "assistant", "content": "<answer>4</answer>"}], 1.0),
        ([{"role": "assistant", "content": "3"}, {"role": "assistant", "content": "4"}], 1.0),  # the last message
        ([{"role": "assistant", "content": [{"type": "text", "text": "4"}]}], 1.0),
        ([{"role": "assistant", "content": None}], 0.0),
        ([], 0.0),
        ("4", 1.0),
    ],
)
def test_guarded_reads_chat_completions(completion, expected):
    fn = guarded(SHIPPED["numeric_answer"], {"tolerance": 1e-6})
    assert fn(prompts=["p"], completions=[completion], answer=["4"], _where=["r1"]) == [expected]


def test_guarded_passes_optional_columns_only_when_present():
    fn = guarded(SHIPPED["json_schema"], {"schema": None})
    assert fn(prompts=["p"], completions=['{"n": 1}'], _where=["r1"]) == [1.0]
    assert fn(prompts=["p"], completions=['{"n": 1}'], json_schema=[{"type": "array"}], _where=["r1"]) == [0.5]


def test_guarded_passes_every_column_to_a_kwargs_reward(tmp_path):
    reward = reward_of("def echo(completions, prompts, **kwargs):\n    return [float(len(prompts) + len(kwargs['extra']) + ('_where' in kwargs))]\n", tmp_path, "echo")
    assert guarded(reward, {})(prompts=["p"], completions=["c"], extra=["e"], _where=["r1"]) == [2.0]


@pytest.mark.parametrize(
    ("body", "what", "where"),
    [
        ("raise ZeroDivisionError('no way')", "reward bad raised ZeroDivisionError: no way", "rows r1, r2, r3 and 1 more"),
        ("return [None, 1.0, 1.0, 1.0, 1.0]", "returned None for completion 0", "row r1"),
        ("return [1.0, float('nan'), 1.0, 1.0, 1.0]", "returned nan for completion 1", "row r1"),
        ("return [1.0, 1.0, 1.0, float('inf'), 1.0]", "returned inf for completion 3", "row r3"),
        ("return [1.0, '1', 1.0, 1.0, 1.0]", "returned '1' for completion 1", "row r1"),
        ("return [1.0, 1.0]", "returned 2 scores for 5 completions", "rows r1, r2, r3 and 1 more"),
        ("return 1.0", "returned float, expected a list of 5 numbers", "rows r1, r2, r3 and 1 more"),
        ("return {'a': 1}", "returned dict", "rows r1, r2, r3 and 1 more"),
    ],
)
def test_guarded_turns_reward_failures_into_reward_errors(tmp_path, body, what, where):
    fn = guarded(reward_of(f"def bad(completions, **kwargs):\n    {body}\n", tmp_path, "bad"), {})
    with pytest.raises(RewardError) as info:
        fn(prompts=["p"] * 5, completions=["c"] * 5, _where=["r1", "r1", "r2", "r3", "r4"])
    assert what in info.value.what
    assert info.value.where == where
    assert "studio train --resume" in info.value.fix
    assert isinstance(info.value, StudioError)


def test_guarded_accepts_bools_and_numeric_subclasses_as_scores(tmp_path):
    fn = guarded(reward_of("def ok(completions):\n    return [True, False, 1]\n", tmp_path, "ok"), {})
    scores = fn(prompts=["p"] * 3, completions=["c"] * 3, _where=["r1"] * 3)
    assert scores == [1.0, 0.0, 1.0] and all(type(s) is float for s in scores)


def test_guarded_turns_a_bad_reference_into_a_reward_error_naming_the_row():
    fn = guarded(SHIPPED["numeric_answer"], {"tolerance": 1e-6})
    with pytest.raises(RewardError) as info:
        fn(prompts=["p"], completions=["4"], answer=["forty-two"], _where=["train.jsonl:7"])
    assert "ValueError: reference answer 'forty-two' is not a number" in info.value.what
    assert info.value.where == "row train.jsonl:7"


def test_guarded_names_a_missing_column():
    with pytest.raises(RewardError, match="needs the 'answer' column"):
        guarded(SHIPPED["exact_answer"], {"ignore_case": True})(prompts=["p"], completions=["c"], _where=["r1"])


def test_check_columns_names_the_first_row_without_a_column():
    resolved = resolve([{"name": "think_format"}, {"name": "numeric_answer"}])
    rows = [{"prompt": "q", "answer": "1"}, {"prompt": "q", "answer": None}, {"prompt": "q"}]
    with pytest.raises(StudioError) as info:
        check_columns(resolved, rows, ["train.jsonl:1", "train.jsonl:2", "train.jsonl:3"])
    assert info.value.what == "row has no 'answer' column, which reward numeric_answer needs"
    assert info.value.where == "train.jsonl:2" and info.value.fix
    check_columns(resolved, rows[:1], ["train.jsonl:1"])  # a complete row passes
    check_columns(resolve([{"name": "json_schema"}]), [{"prompt": "q"}], ["x"])  # optional columns are optional


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "q", "answer": "42"}, {"numeric_answer": 1.0, "exact_answer": 1.0, "think_format": 0.0, "json_schema": 1.0}),
        ({"prompt": "q", "answer": "42", "solution": "<think>so</think><answer>42</answer>"}, {"numeric_answer": 1.0, "exact_answer": 1.0, "think_format": 1.0, "json_schema": 1.0}),
        ({"prompt": "q"}, {"numeric_answer": None, "exact_answer": None, "think_format": None, "json_schema": None}),
        ({"prompt": "q", "answer": "forty-two"}, {"numeric_answer": None, "exact_answer": 1.0, "think_format": 0.0, "json_schema": 0.0}),
        ({"prompt": "q", "answer": "42", "json_schema": {"type": "string"}}, {"numeric_answer": 1.0, "exact_answer": 1.0, "think_format": 0.0, "json_schema": 0.5}),
        ({"prompt": "q", "answer": "42", "json_schema": {"type": 5}}, {"numeric_answer": 1.0, "exact_answer": 1.0, "think_format": 0.0, "json_schema": None}),
    ],
)
def test_reference_scores(row, expected):
    resolved = resolve([{"name": n} for n in ("numeric_answer", "exact_answer", "think_format", "json_schema")])
    assert reference_scores(resolved, row) == expected


def test_reference_scores_keeps_repeated_rewards_apart():
    resolved = resolve([{"name": "length_target", "args": {"target": 2, "tolerance": 0}}, {"name": "length_target", "args": {"target": 50, "tolerance": 0}}])
    scores = reference_scores(resolved, {"answer": "42"})
    assert scores == {"length_target": 1.0, "length_target#2": pytest.approx(0.04)}
    assert all(math.isfinite(v) for v in scores.values())
