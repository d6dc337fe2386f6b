"""Recognise a row's format and turn it into one normal form: a list of chat messages, or plain text.

Formats: chat (`messages`/`conversations`, OpenAI `role`/`content` or ShareGPT `from`/`value`),
alpaca (`instruction`, optional `input`, `output`), prompt_completion (`prompt`/`completion`, strings
or message lists), text (`text`, trained as a plain completion), preference (prompt/chosen/rejected) and
prompt (a `prompt` alone, or GSM8K's `question`/`answer`: GRPO's data, where the model writes the answers and
every other column goes to the reward functions). Chat and prompt_completion messages may hold images, as content
parts or LLaVA's `<image>` with an `images` column (studio.data.images).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, replace

from studio.config.schema import DataFormat
from studio.data.images import content_parts, with_row_images
from studio.data.readers import Row
from studio.errors import StudioError

FORMATS = tuple(f for f in typing.get_args(DataFormat) if f != "auto")  # the schema's names, one place
_ROLE_NAMES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
}


@dataclass(frozen=True)
class Example:
    """One training example in normal form: `messages` for chat-like formats, else `text`. Prompt rows (GRPO)
    keep their other columns in `columns`, for the reward functions."""

    where: str
    messages: tuple[dict, ...] | None = None
    text: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    columns: dict | None = None


def detect_format(row: dict) -> str | None:
    """Name the format a row's columns indicate, or None when none fits."""
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "messages" in row or "conversations" in row:
        return "chat"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "prompt" in row or ("question" in row and "answer" in row):
        return "prompt"
    if "text" in row:
        return "text"
    return None


def normalize(rows: list[Row], fmt: str = "auto", columns: dict[str, str] | None = None, system_prompt: str | None = None) -> tuple[str, list[Example]]:
    """Rename columns, detect (or check) the format, and convert every row to an Example."""
    if not rows:
        raise StudioError("dataset has no rows", where="data.path", fix="add examples to the file")
    renamed = [_rename(row, columns or {}) for row in rows]
    if fmt == "auto":
        fmt = detect_format(renamed[0].data) or ""
        if not fmt:
            keys = sorted(renamed[0].data)
            raise StudioError(
                f"cannot detect the data format from columns {keys}",
                where=renamed[0].where,
                fix="use `messages`, `instruction`/`output`, `prompt`/`completion`, `prompt` (for grpo) or `text` columns, or map yours with data.columns (e.g. {instruction: question, output: answer})",
            )
    convert = {"chat": _chat, "alpaca": _alpaca, "prompt_completion": _prompt_completion, "text": _text, "preference": _preference, "prompt": _prompt_only}[fmt]
    examples = [convert(row) for row in renamed]
    if fmt in ("preference", "prompt"):
        _refuse_parts(fmt, examples)
    if fmt != "prompt":  # prompt rows keep every column already
        examples = [_with_schema(ex, row) for ex, row in zip(examples, renamed)]
    if system_prompt:
        examples = [_with_system(ex, system_prompt) for ex in examples]
    return fmt, examples


def _refuse_parts(fmt: str, examples: list[Example]) -> None:
    """Message parts (images) train with supervised chat data only; preference and GRPO rows stay text."""
    for example in examples:
        if any(not isinstance(m["content"], str) for m in example.messages or ()):
            raise StudioError(f"{fmt} rows take text messages; content parts (images) are for chat and prompt_completion rows", where=example.where,
                              fix="write each message's content as a string, or train the images with method lora/qlora on chat rows")


def _with_schema(example: Example, row: Row) -> Example:
    """Keep a row's `json_schema` column: the json_valid metric checks the model's answer to it against it."""
    if row.data.get("json_schema") is None or example.messages is None:
        return example
    return replace(example, columns={"json_schema": row.data["json_schema"]})


def _rename(row: Row, columns: dict[str, str]) -> Row:
    if not columns:
        return row
    data = dict(row.data)
    for wanted, actual in columns.items():
        if actual not in data:
            raise StudioError(f"column '{actual}' (mapped to '{wanted}') is missing", where=row.where, fix=f"check data.columns; this row has {sorted(row.data)}")
        data[wanted] = data.pop(actual)
    return Row(data, row.where)


def _require(row: Row, key: str, fmt: str) -> object:
    if key not in row.data:
        raise StudioError(f"{fmt} row has no '{key}' column", where=row.where, fix=f"every row must have the same columns; this one has {sorted(row.data)}")
    return row.data[key]


def _string(row: Row, key: str, value: object, allow_empty: bool = False) -> str:
    if value is None and allow_empty:
        return ""
    if not isinstance(value, str):
        raise StudioError(f"'{key}' must be text, got {type(value).__name__}", where=row.where, fix="store text values as strings")
    if not allow_empty and not value.strip():
        raise StudioError(f"'{key}' is empty", where=row.where, fix="remove the row or fill in the value")
    return value


def _messages(row: Row, key: str, value: object, need_assistant: bool = True) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise StudioError(f"'{key}' must be a non-empty list of messages", where=row.where, fix='write [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]')
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise StudioError(f"message {i} is a {type(msg).__name__}, not an object", where=row.where, fix="each message needs role and content")
        role = msg.get("role", msg.get("from"))
        content = msg.get("content", msg.get("value"))
        if not isinstance(role, str) or role.lower() not in _ROLE_NAMES:
            raise StudioError(f"message {i} has unknown role {role!r}", where=row.where, fix=f"use one of {sorted(_ROLE_NAMES)}")
        if isinstance(content, list):  # parts: text and images (studio.data.images)
            content = content_parts(row.where, i, content)
        elif not isinstance(content, str) or not content.strip():
            raise StudioError(f"message {i} ({role}) has empty or non-text content", where=row.where, fix="give every message non-empty text content")
        out.append({"role": _ROLE_NAMES[role.lower()], "content": content})
    if need_assistant and not any(m["role"] == "assistant" for m in out):
        raise StudioError("conversation has no assistant message, so there is nothing to learn", where=row.where, fix="add the assistant's reply")
    return out


def _chat(row: Row) -> Example:
    key = "messages" if "messages" in row.data else "conversations"
    messages = _messages(row, key, _require(row, key, "chat"))
    images = row.data.get("images", row.data.get("image"))
    if images is not None:  # the LLaVA / ShareGPT spelling: <image> in the text, the files in `images` (or one `image`)
        messages = with_row_images(row.where, messages, [images] if isinstance(images, str) else images)
    return Example(row.where, messages=tuple(messages))


def _alpaca(row: Row) -> Example:
    instruction = _string(row, "instruction", _require(row, "instruction", "alpaca"))
    extra = _string(row, "input", row.data.get("input"), allow_empty=True)
    output = _string(row, "output", _require(row, "output", "alpaca"))
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return Example(row.where, messages=({"role": "user", "content": prompt}, {"role": "assistant", "content": output}))


def _prompt_completion(row: Row) -> Example:
    prompt, completion = _require(row, "prompt", "prompt_completion"), _require(row, "completion", "prompt_completion")
    if isinstance(prompt, list):
        head = _messages(row, "prompt", prompt, need_assistant=False)
        tail = _messages(row, "completion", completion) if isinstance(completion, list) else [{"role": "assistant", "content": _string(row, "completion", completion)}]
        return Example(row.where, messages=tuple(head + tail))
    return Example(
        row.where,
        messages=({"role": "user", "content": _string(row, "prompt", prompt)}, {"role": "assistant", "content": _string(row, "completion", completion)}),
    )


def _preference(row: Row) -> Example:
    """A preference pair: `messages` holds the prompt turns, `chosen` and `rejected` the two answers.

    Spellings: prompt/chosen/rejected as strings; prompt as messages with chosen/rejected as strings or
    one-message lists; or no prompt, with chosen and rejected as whole conversations sharing a prefix.
    """
    chosen, rejected = _require(row, "chosen", "preference"), _require(row, "rejected", "preference")
    prompt = row.data.get("prompt")
    if prompt is None:
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise StudioError("a preference row without 'prompt' needs chosen and rejected as conversations", where=row.where, fix="add a 'prompt' column, or give chosen/rejected as message lists")
        good, bad = _messages(row, "chosen", chosen), _messages(row, "rejected", rejected)
        if good[:-1] != bad[:-1] or good[-1]["role"] != "assistant" or bad[-1]["role"] != "assistant":
            raise StudioError("chosen and rejected must be the same conversation up to a different last assistant answer", where=row.where, fix="make both conversations share every turn but the final assistant answer")
        head, good_text, bad_text = good[:-1], good[-1]["content"], bad[-1]["content"]
    else:
        head = _messages(row, "prompt", prompt, need_assistant=False) if isinstance(prompt, list) else [{"role": "user", "content": _string(row, "prompt", prompt)}]
        good_text, bad_text = (_answer(row, key, value) for key, value in (("chosen", chosen), ("rejected", rejected)))
    if not head:
        raise StudioError("preference row has an empty prompt", where=row.where, fix="give the prompt the answers respond to")
    if good_text == bad_text:
        raise StudioError("chosen and rejected answers are identical, so there is no preference to learn", where=row.where, fix="remove the row or fix one answer")
    return Example(row.where, messages=tuple(head), chosen=good_text, rejected=bad_text)


def _answer(row: Row, key: str, value: object) -> str:
    if isinstance(value, list):
        messages = _messages(row, key, value)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise StudioError(f"'{key}' must be one assistant message when 'prompt' is given", where=row.where, fix=f'write "{key}": [{{"role": "assistant", "content": "..."}}] or a plain string')
        return messages[0]["content"]
    return _string(row, key, value)


def _prompt_only(row: Row) -> Example:
    """A GRPO prompt: `prompt` as text (one user turn) or messages, or GSM8K's `question`; every other column is
    kept for the rewards. A GSM8K `answer` ("...reasoning... #### 42") becomes `answer: "42"`, and the whole text
    is kept as `solution`."""
    data = dict(row.data)
    key = "prompt" if "prompt" in data else "question"
    prompt = _require(row, key, "prompt")
    del data[key]
    if isinstance(prompt, list):
        messages = _messages(row, key, prompt, need_assistant=False)
        if messages[-1]["role"] == "assistant":
            raise StudioError(f"the {key} ends with an assistant message; the model writes the answer in GRPO", where=row.where, fix="end the prompt with the user's turn")
    else:
        messages = [{"role": "user", "content": _string(row, key, prompt)}]
    answer = data.get("answer")
    if key == "question" and isinstance(answer, str) and "####" in answer:
        data["solution"] = answer
        data["answer"] = answer.rsplit("####", 1)[1].strip().replace(",", "")
    return Example(row.where, messages=tuple(messages), columns=data)


def reference_of(example: Example) -> str | None:
    """The reference answer of a prompt row (its `answer` column as text), or None when it has none."""
    value = (example.columns or {}).get("answer")
    return None if value is None else str(value)


def _text(row: Row) -> Example:
    return Example(row.where, text=_string(row, "text", _require(row, "text", "text")))


def _with_system(example: Example, system_prompt: str) -> Example:
    if example.messages is None or example.messages[0]["role"] == "system":
        return example
    return replace(example, messages=({"role": "system", "content": system_prompt}, *example.messages))
