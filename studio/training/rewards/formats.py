"""Format rewards: the shape of a completion (think/answer tags, a pattern, a length), not its correctness.

Tags are matched as literal text (str.find and str.count, never a regex built from them), so a tag with
regex-special characters such as `th.nk` or `a+b` matches only itself.
"""

from __future__ import annotations

import re

from studio.training.rewards.registry import register


def _check_tags(options: dict) -> None:
    """Tags must be distinct, non-empty and free of angle brackets, or no completion could ever match them."""
    think, answer = options["think_tag"], options["answer_tag"]
    for tag in (think, answer):
        if not tag.strip() or "<" in tag or ">" in tag or tag != tag.strip():
            raise ValueError(f"tag {tag!r} must be a non-empty name without spaces around it or < >, like 'think'")
    if think == answer:
        raise ValueError(f"think_tag and answer_tag are both {think!r}; they must differ")


def _block(text: str, open_tag: str, close_tag: str) -> str | None:
    """The non-empty content of a text that is exactly one open…close block (whitespace around it allowed)."""
    text = text.strip()
    if not (text.startswith(open_tag) and text.endswith(close_tag)) or len(text) < len(open_tag) + len(close_tag):
        return None
    content = text[len(open_tag) : len(text) - len(close_tag)].strip()
    return content or None


@register("think_format", validate=_check_tags)
def think_format(completions: list[str], *, think_tag: str = "think", answer_tag: str = "answer", require_answer: bool = True) -> list[float]:
    """1.0 for exactly one non-empty <think> block followed by exactly one non-empty <answer> block and nothing else.

    With require_answer false, the think block must be followed by any non-empty text instead. R1-style chat
    templates often end the prompt with `<think>` already written, so a completion may also start directly
    with the thinking and contain only the closing `</think>`. Repeated or nested tags score 0.0.
    """
    t_open, t_close = f"<{think_tag}>", f"</{think_tag}>"
    a_open, a_close = f"<{answer_tag}>", f"</{answer_tag}>"
    scores = []
    for text in completions:
        scores.append(1.0 if _think_shape(text, t_open, t_close, a_open, a_close, require_answer) else 0.0)
    return scores


def _think_shape(text: str, t_open: str, t_close: str, a_open: str, a_close: str, require_answer: bool) -> bool:
    """Whether one completion has the think (then answer) shape; see think_format."""
    opens, closes = text.count(t_open), text.count(t_close)
    if closes != 1 or opens > 1:
        return False
    split = text.find(t_close)
    head, rest = text[:split], text[split + len(t_close) :]
    thinking = head.strip()
    if opens == 1:  # the tag was written by the model: it must open the completion
        if not thinking.startswith(t_open):
            return False
        thinking = thinking[len(t_open) :].strip()
    if not thinking:
        return False
    if not require_answer:
        return bool(rest.strip())
    if text.count(a_open) != 1 or text.count(a_close) != 1:
        return False
    return _block(rest, a_open, a_close) is not None


def _check_pattern(options: dict) -> None:
    """Compile the pattern when the recipe is checked, so a typo fails before any model loads."""
    pattern = options["pattern"]
    if not isinstance(pattern, str):
        raise ValueError(f"pattern must be a string (a Python regular expression), not {type(pattern).__name__}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None


@register("regex_match", validate=_check_pattern)
def regex_match(completions: list[str], *, pattern: str, full_match: bool = False) -> list[float]:
    """1.0 when the completion matches the regular expression (anywhere, or whole with full_match), else 0.0.

    The simplest verifiable check: a required phrase, a date format, a final "Answer: X" line.
    """
    rx = re.compile(pattern)
    match = rx.fullmatch if full_match else rx.search
    return [1.0 if match(text) else 0.0 for text in completions]


def _check_length(options: dict) -> None:
    """A target below 1 has no scale to fall off over, and a negative tolerance means nothing."""
    if options["target"] < 1:
        raise ValueError(f"target must be >= 1, not {options['target']}")
    if options["tolerance"] < 0:
        raise ValueError(f"tolerance must be >= 0, not {options['tolerance']}")
    if options["unit"] not in ("chars", "words"):
        raise ValueError(f"unit must be 'chars' or 'words', not {options['unit']!r}")


@register("length_target", validate=_check_length)
def length_target(completions: list[str], *, target: int = 200, tolerance: int = 50, unit: str = "chars") -> list[float]:
    """1.0 within target ± tolerance characters (or words), falling linearly to 0.0 a further `target` away.

    Keeps completions from growing or shrinking without bound when another reward would favour it.
    """
    scores = []
    for text in completions:
        length = len(text.split()) if unit == "words" else len(text)
        over = max(0, abs(length - target) - tolerance)
        scores.append(max(0.0, 1.0 - over / target))
    return scores
