"""Turn normalized examples into token ids and labels, exactly as training sees them.

Chat examples are rendered with the tokenizer's chat template (or an override, or ChatML when the
model has none). The loss covers each assistant turn through its end-of-turn token; everything else
gets label -100. The end-of-sequence token is always trained, so the model learns to stop.

How the assistant spans are found without `{% generation %}` markers: for assistant turn i, the
template rendered for messages[:i] with a generation prompt is a prefix of the rendering of
messages[:i+1]; the characters between the two are the turn. Character spans map to tokens through
the fast tokenizer's offsets, so the split never depends on how a boundary tokenizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.data.formats import Example
from studio.errors import StudioError

IGNORE = -100

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Encoded:
    """Token ids and labels of one example, and whether it was cut to max_length."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool
    where: str
    # Vision-language rows also keep the rendered text and their image files: the batch's pixels are made from them
    # (studio.data.vision.VisionCollator), not stored.
    text: str | None = None
    images: tuple[str, ...] = ()

    @property
    def trained_tokens(self) -> int:
        """How many tokens carry the loss."""
        return sum(1 for label in self.labels if label != IGNORE)


def template_text(chat_template: str) -> str:
    """data.chat_template as template text: the file's contents when it names a .jinja file, else the text itself."""
    if not chat_template.endswith(".jinja"):
        return chat_template
    path = Path(chat_template)
    if not path.exists():
        raise StudioError(f"chat template file not found: {path}", where="data.chat_template", fix="check the path")
    return path.read_text(encoding="utf-8")


def prepare_tokenizer(tokenizer, chat_template: str | None = None):
    """Give the tokenizer the template training will use, and a pad token; return it.

    The template is stored on the tokenizer so the adapter directory carries it and chat and
    evaluation render prompts exactly as training did.
    """
    if chat_template:
        tokenizer.chat_template = template_text(chat_template)
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.eos_token_id is None:
        raise StudioError("the tokenizer has no end-of-sequence token", where="model.name", fix="use a tokenizer with an eos_token, or set one in its tokenizer_config.json")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "is_fast", False):
        raise StudioError("the tokenizer is not a fast tokenizer; loss masks need character offsets", where="model.name", fix="use a model that ships tokenizer.json")
    return tokenizer


class Renderer:
    """Encodes examples for one tokenizer, template and loss policy."""

    def __init__(self, tokenizer, max_length: int, train_on: str = "assistant"):
        self.tok = tokenizer
        self.max_length = max_length
        self.train_on = train_on
        self.eos = tokenizer.eos_token_id

    def encode(self, example: Example) -> Encoded:
        """Token ids and labels for one example (truncated to max_length)."""
        if example.text is not None:
            ids = self.tok(example.text, add_special_tokens=True)["input_ids"] + [self.eos]
            labels = list(ids)
        else:
            ids, labels = self._encode_chat(example)
        truncated = len(ids) > self.max_length
        return Encoded(ids[: self.max_length], labels[: self.max_length], truncated, example.where)

    def prompt_text(self, messages: list[dict] | tuple[dict, ...]) -> str:
        """The text a model is given to answer the last user turn (generation prompt appended)."""
        return self._apply(list(messages), add_generation_prompt=True)

    def conversation_text(self, messages: list[dict] | tuple[dict, ...]) -> str:
        """A whole conversation rendered with the template, as training sees it (before tokenization)."""
        return self._apply(list(messages))

    def _apply(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        try:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception as exc:  # jinja raises TemplateError subclasses, templates raise their own messages
            raise StudioError(f"the chat template failed to render: {exc}", where="data.chat_template", fix="check the template, or set data.chat_template to one that accepts these roles") from None

    def _encode_chat(self, example: Example) -> tuple[list[int], list[int]]:
        messages = list(example.messages)
        full = self._apply(messages)
        enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        if self.train_on == "all":
            labels = list(ids)
        else:
            spans = self._assistant_spans(messages, full, example.where)
            labels = [tid if any(s <= start < e for s, e in spans) else IGNORE for tid, (start, _end) in zip(ids, offsets)]
        return self._ensure_eos_trained(ids, labels)

    def _assistant_spans(self, messages: list[dict], full: str, where: str) -> list[tuple[int, int]]:
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            through = self._apply(messages[: i + 1])
            if i:
                before = self._apply(messages[:i], add_generation_prompt=True)
            else:
                # Nothing precedes an opening assistant turn but the template's own header (and any
                # default system block): the answer starts where its content does.
                before = through[: max(0, through.rfind(message["content"]))]
            if not (full.startswith(through) and through.startswith(before)):
                raise StudioError(
                    "the chat template renders earlier turns differently once later turns follow, so assistant turns cannot be located",
                    where=where,
                    fix="set data.chat_template to a template that renders conversations incrementally (e.g. ChatML), or data.train_on: all",
                )
            end = len(through.rstrip())
            # Templates that put whitespace before the answer keep it out of the loss.
            spans.append((len(before), end))
        return spans

    def _ensure_eos_trained(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        """Insert an EOS after every assistant turn whose template does not end it with one."""
        if self.train_on == "all":
            if not ids or ids[-1] != self.eos:
                ids, labels = ids + [self.eos], labels + [self.eos]
            return ids, labels
        out_ids, out_labels = [], []
        for index, (tid, label) in enumerate(zip(ids, labels)):
            out_ids.append(tid)
            out_labels.append(label)
            closes_span = label != IGNORE and (index + 1 == len(ids) or labels[index + 1] == IGNORE)
            if closes_span and tid != self.eos:
                out_ids.append(self.eos)
                out_labels.append(self.eos)
        return out_ids, out_labels


def render_pairs(renderer: Renderer, examples: list[Example]) -> list[dict]:
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
