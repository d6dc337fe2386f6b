"""Answer rewards: is the completion's final answer the reference? Plus the extraction helpers they share.

Every helper here takes hostile text (megabytes, null bytes, Unicode digits, 5000-digit numbers) and returns
None rather than raising or hanging: the model writes whatever it likes.
"""

from __future__ import annotations

import math
import re
from typing import Any

from studio.training.rewards.registry import register

MAX_DIGITS = 100  # longer digit strings are no answer anyone checks, and float() of them is inf or slow
MAX_NUMBER_CHARS = 4 * MAX_DIGITS  # a number span longer than this is prose, not a number

# re.ASCII: \d must not match Arabic-Indic or full-width digits, which float() would happily accept.
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = re.compile(rf"(?P<sign>[+\-\u2212]?)\s*(?P<dollar>\$?)\s*(?P<sign2>[+\-\u2212]?)(?P<num>{_UNSIGNED})\s*%?", re.ASCII)
_FRACTION = re.compile(r"(?P<sign>[+\-\u2212]?)\s*(?P<a>\d+)\s*/\s*(?P<b>\d+)", re.ASCII)
_LATEX_FRACTION = re.compile(r"(?P<sign>[+\-\u2212]?)\s*\\[dt]?frac\s*\{\s*(?P<a>[+\-]?\d+(?:\.\d+)?)\s*\}\s*\{\s*(?P<b>[+\-]?\d+(?:\.\d+)?)\s*\}", re.ASCII)
# Anywhere in prose: a sign only where it cannot be a minus between two terms ("3-5" is 3 and 5).
_ANY_NUMBER = re.compile(
    rf"\\[dt]?frac\s*\{{\s*[+\-]?\d+(?:\.\d+)?\s*\}}\s*\{{\s*[+\-]?\d+(?:\.\d+)?\s*\}}|(?:(?<![\w)\]}}])[+\-\u2212])?\$?(?:\d+\s*/\s*\d+(?!\d|[.,]\d)|{_UNSIGNED})%?",
    re.ASCII,
)
_BOXED = re.compile(r"\\boxed\{|[{}]")


def extract_final(text: str) -> str | None:
    """The final answer span: the last <answer>…</answer>, else the last \\boxed{…}, else what follows the last ####.

    Models are asked for one of these markers; taking the last one lets a completion revise itself. None when
    there is no marker, so callers can fall back to the last number.
    """
    if not isinstance(text, str):
        return None
    end = text.rfind("</answer>")
    if end != -1:
        start = text.rfind("<answer>", 0, end)
        if start != -1:
            return text[start + len("<answer>") : end].strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    mark = text.rfind("####")
    if mark != -1:
        rest = text[mark + 4 :].strip()
        return rest.splitlines()[0].strip() if rest else ""
    return None


def _last_boxed(text: str) -> str | None:
    """The content of the last closed \\boxed{…}, nested braces kept whole; one pass, so hostile text stays linear."""
    first = text.find("\\boxed{")
    if first == -1:
        return None
    stack: list[int | None] = []  # for each open brace: where its boxed content starts, or None for a plain brace
    best: tuple[int, int] | None = None
    for match in _BOXED.finditer(text, first):
        token = match.group()
        if token == "}":
            if stack:
                start = stack.pop()
                if start is not None and (best is None or start > best[0]):
                    best = (start, match.start())
        else:
            stack.append(match.end() if token != "{" else None)
    return None if best is None else text[best[0] : best[1]].strip()


def _unwrap(text: str) -> str:
    """Drop the decoration models put around a lone number: bold, \\boxed{}, $…$ or \\(…\\), a final full stop."""
    for _ in range(4):
        before = text
        text = text.strip()
        if text.startswith("**") and text.endswith("**") and len(text) >= 4:
            text = text[2:-2]
        if text.startswith("\\boxed{") and text.endswith("}"):
            text = text[len("\\boxed{") : -1]
        if text.startswith("\\(") and text.endswith("\\)"):
            text = text[2:-2]
        if text.startswith("$$") and text.endswith("$$") and len(text) >= 4:
            text = text[2:-2]
        elif text.startswith("$") and text.endswith("$") and len(text) >= 2 and text.count("$") == 2:
            text = text[1:-1]
        text = text.rstrip(".").strip()
        if text == before:
            break
    return text


def _finite(value: float) -> float | None:
    """The value, or None for inf and nan."""
    return value if math.isfinite(value) else None


def _negative(*signs: str | None) -> bool:
    """Whether the sign marks (either spelling of minus) make the number negative."""
    return sum(1 for s in signs if s in ("-", "\u2212")) % 2 == 1


def parse_number(text: Any) -> float | None:
    """The number a short string is: `-1,234.5`, `$5`, `12%` (as 12), `3/4`, `\\frac{3}{4}`; None for anything else.

    ASCII digits only, at most 100 of them, and finite: a reward must never score `inf`, `nan` or "٤٢".
    Never raises.
    """
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        try:
            return _finite(float(text))
        except OverflowError:
            return None
    if not isinstance(text, str) or len(text) > MAX_NUMBER_CHARS:
        return None
    text = _unwrap(text)
    if sum(c.isdigit() for c in text) > MAX_DIGITS:
        return None
    try:
        if m := _LATEX_FRACTION.fullmatch(text):
            a, b = float(m["a"]), float(m["b"])
            return None if b == 0 else _finite((-1 if _negative(m["sign"]) else 1) * a / b)
        if m := _FRACTION.fullmatch(text):
            a, b = float(m["a"]), float(m["b"])
            return None if b == 0 else _finite((-1 if _negative(m["sign"]) else 1) * a / b)
        if m := _NUMBER.fullmatch(text):
            if m["sign"] and m["sign2"]:
                return None  # "-$-5" is no number
            value = float(m["num"].replace(",", ""))
            return _finite(-value if _negative(m["sign"], m["sign2"]) else value)
    except (ValueError, OverflowError, ZeroDivisionError):
        return None
    return None


def last_number(text: Any) -> float | None:
    """The last number written anywhere in the text, parsed by parse_number's rules; None when there is none."""
    if not isinstance(text, str):
        return None
    last = None
    for last in _ANY_NUMBER.finditer(text):
        pass
    return None if last is None else parse_number(last.group())


def reference_number(answer: Any) -> float:
    """The reference answer as a number: 42, "1,234", or a GSM8K answer ending in "#### 42"; ValueError otherwise."""
    value = answer
    if isinstance(answer, str) and "####" in answer:
        value = answer[answer.rfind("####") + 4 :].strip()
    number = parse_number(value)
    if number is None:
        raise ValueError(f"reference answer {_short(answer)} is not a number")
    return number


def _short(value: Any, limit: int = 80) -> str:
    """repr of a value, cut to a readable length for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _check_tolerance(options: dict) -> None:
    """numeric_answer's tolerance is an absolute distance: it cannot be negative."""
    if options["tolerance"] < 0:
        raise ValueError(f"tolerance must be >= 0, not {options['tolerance']}")


@register("numeric_answer", validate=_check_tolerance)
def numeric_answer(completions: list[str], answer: list, *, tolerance: float = 1e-6) -> list[float]:
    """1.0 when the completion's final number equals the reference within `tolerance`, else 0.0.

    The completion's number is its marked final answer (<answer>, \\boxed{}, ####) when it has one, else
    the last number it writes. The reference may be a number, "1,234" or a GSM8K "… #### 42".
    """
    scores = []
    for completion, ref in zip(completions, answer, strict=True):
        expected = reference_number(ref)
        final = extract_final(completion)
        got = parse_number(final) if final is not None else last_number(completion)
        scores.append(1.0 if got is not None and abs(got - expected) <= tolerance else 0.0)
    return scores


_QUOTES = ('"', "'", "`", "\u201c\u201d", "\u2018\u2019")


def normalize_answer(text: str, ignore_case: bool = True) -> str:
    """An answer reduced to what matters for comparison: no outer whitespace, quotes, bold or final punctuation."""
    text = " ".join(text.split())
    for _ in range(8):
        before = text
        text = text.strip()
        if len(text) >= 4 and text.startswith("**") and text.endswith("**"):
            text = text[2:-2]
        for quote in _QUOTES:
            left, right = (quote[0], quote[-1])
            if len(text) >= 2 and text.startswith(left) and text.endswith(right):
                text = text[1:-1]
        text = text.rstrip(".!?")
        if text == before:
            break
    text = text.strip()
    return text.casefold() if ignore_case else text


@register("exact_answer")
def exact_answer(completions: list[str], answer: list, *, ignore_case: bool = True) -> list[float]:
    """1.0 when the final answer (or, without a marker, the whole completion) equals the reference, normalised.

    Normalising strips whitespace, quotes, backticks, **bold** and a final . ! or ?, so formatting alone never
    costs the reward; a GSM8K-style reference is compared by its part after ####.
    """
    scores = []
    for completion, ref in zip(completions, answer, strict=True):
        if ref is None:
            raise ValueError("reference answer is missing (None)")
        ref = str(ref)
        if "####" in ref:
            ref = ref[ref.rfind("####") + 4 :]
        final = extract_final(completion)
        got = normalize_answer(completion if final is None else final, ignore_case)
        scores.append(1.0 if got == normalize_answer(ref, ignore_case) else 0.0)
    return scores
