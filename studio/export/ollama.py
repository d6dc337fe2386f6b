"""An Ollama Modelfile whose prompt format is the one the model was trained with.

Ollama does not run Jinja; its TEMPLATE is a Go template. Rather than translate arbitrary Jinja, the
training chat template is *recognised*: probe conversations are rendered with it and compared,
character for character, with what each known family produces. A match selects that family's Go
template (the `.Messages` range form, where Ollama passes the Modelfile's SYSTEM as the first
message); no match is an error, never a guess.

Families:

- ChatML (`<|im_start|>role\\n...<|im_end|>\\n`): Qwen, SmolLM, the studio's fallback. A template that
  inserts a default system turn when there is none (SmolLM2) is recognised too; that default
  becomes the Modelfile's SYSTEM.
- Llama 3 (`<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>`), the 3.0 form without the
  date preamble. Its `<|begin_of_text|>` is the BOS token the GGUF's add-BOS flag already adds.

A vision run's Modelfile names the projector GGUF in a second FROM (see PROJECTOR_COMMENT for what Ollama does with it).

`parse_modelfile` reads a Modelfile back (FROM, projector, TEMPLATE, SYSTEM, stops) for the serving-consistency gate, which
renders its TEMPLATE (studio.export.go_template) and compares it with training.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from studio.errors import StudioError

_PROBE_SYSTEM, _PROBE_USER, _PROBE_ANSWER, _PROBE_USER2 = "SYS-1", "USER-1", "ANSWER-1", "USER-2"


@dataclass(frozen=True)
class ChatFamily:
    """A prompt format: how a turn is written (for the probe), its Go template and its stop strings."""

    name: str
    turn: str  # format string with {role} and {content}
    generation: str  # what opens the assistant's turn
    template: str  # Go template for Ollama
    stops: tuple[str, ...]
    bos: bool  # the Jinja template writes bos_token first (the GGUF's add-BOS flag adds it in Ollama)

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        """What this family's Go template produces for these messages (the format, as plain Python)."""
        text = "".join(self.turn.format(role=m["role"], content=m["content"]) for m in messages)
        return text + (self.generation if add_generation_prompt else "")


CHATML = ChatFamily(
    name="chatml",
    turn="<|im_start|>{role}\n{content}<|im_end|>\n",
    generation="<|im_start|>assistant\n",
    template=(
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
        "{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n"
    ),
    stops=("<|im_end|>", "<|im_start|>"),
    bos=False,
)

LLAMA3 = ChatFamily(
    name="llama3",
    turn="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
    generation="<|start_header_id|>assistant<|end_header_id|>\n\n",
    template=(
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
        "{{ .Content }}<|eot_id|>"
        "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    stops=("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
    bos=True,
)

FAMILIES = (CHATML, LLAMA3)


@dataclass(frozen=True)
class TemplateMatch:
    """The recognised family and the system prompt the Jinja template adds by itself, if any."""

    family: ChatFamily
    default_system: str | None


def recognise_template(tokenizer) -> TemplateMatch:
    """Which known family the tokenizer's chat template is, checked on probe conversations."""
    bos = tokenizer.bos_token or ""

    def jinja(messages, gen):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    with_system = [
        {"role": "system", "content": _PROBE_SYSTEM},
        {"role": "user", "content": _PROBE_USER},
        {"role": "assistant", "content": _PROBE_ANSWER},
        {"role": "user", "content": _PROBE_USER2},
    ]
    user_only = [{"role": "user", "content": _PROBE_USER}]
    for family in FAMILIES:
        prefix = bos if family.bos else ""
        try:
            if jinja(with_system, True) != prefix + family.render(with_system, True):
                continue
            if jinja(with_system[:3], False) != prefix + family.render(with_system[:3], False):
                continue
            plain = jinja(user_only, True)
        except Exception:  # a template that rejects a probe (e.g. no system role) is not this family
            continue
        if plain == prefix + family.render(user_only, True):
            return TemplateMatch(family, None)
        # A template that adds a system turn of its own when the conversation has none.
        head = prefix + family.turn.format(role="system", content="\x00")
        before, _, after = head.partition("\x00")
        rest = family.render(user_only, True)
        if plain.startswith(before) and plain.endswith(after + rest):
            default = plain[len(before) : len(plain) - len(after + rest)]
            if prefix + family.render([{"role": "system", "content": default}, *user_only], True) == plain:
                return TemplateMatch(family, default)
    raise StudioError(
        "the chat template is neither ChatML nor Llama 3, so no matching Ollama TEMPLATE can be written",
        where="tokenizer chat_template",
        fix="export with --format gguf (the file carries the Jinja template for llama.cpp), or train with a ChatML template (data.chat_template)",
    )


def modelfile_text(tokenizer, gguf_name: str = "model.gguf", system_prompt: str | None = None, extra_stops: tuple[str, ...] = (),
                   projector: str | None = None) -> str:
    """The Modelfile: FROM the GGUF, TEMPLATE of the training format, its stop tokens, and the system prompt.

    `extra_stops`: the other tokens the merged model stops on (its generation_config's eos ids as text), so
    Ollama ends an answer wherever transformers does. `projector`: a vision run's projector GGUF (file name,
    beside the model), named by a second FROM.
    """
    match = recognise_template(tokenizer)
    system = system_prompt if system_prompt is not None else match.default_system
    stops = list(match.family.stops)
    for stop in (tokenizer.eos_token, *extra_stops):
        if stop and stop not in stops:
            stops.append(stop)
    lines = [f"FROM ./{gguf_name}"]
    if projector:
        lines += [*PROJECTOR_COMMENT, f"FROM ./{projector}"]
    lines += ["", f'TEMPLATE """{_quoted(match.family.template)}"""']
    if system:
        lines.append(f'SYSTEM """{_quoted(system)}"""')
    lines.append("")
    lines += [f"PARAMETER stop {_quoted_param(stop)}" for stop in stops]
    return "\n".join(lines) + "\n"


# Why a second FROM: `ollama create` stores a GGUF whose general.type is "mmproj" as the model's projector layer, and
# Ollama serves a model with a separate projector through its llama.cpp engine (its own engine would ignore the
# projector: ollama/ollama#12241). Older Ollama releases kept such a projector but answered text only (#9967).
PROJECTOR_COMMENT = (
    "# The vision projector (llama.cpp mmproj GGUF). Ollama stores it as this model's projector and runs",
    "# split-projector models on its llama.cpp engine; releases before that fallback answer text only.",
)


def _quoted(text: str) -> str:
    if '"""' in text:
        raise StudioError('the template or system prompt contains """, which a Modelfile cannot quote', where="data.system_prompt", fix='remove the triple quote')
    return text


def _quoted_param(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Modelfile:
    """What a Modelfile tells Ollama about prompts: the GGUF it runs, its TEMPLATE, SYSTEM and stop strings."""

    source: str | None
    template: str | None
    system: str | None
    stops: tuple[str, ...]
    projector: str | None = None  # a second FROM: the vision projector GGUF


_INSTRUCTION = re.compile(r'^[ \t]*([A-Za-z]+)[ \t]+("""(.*?)"""|[^\n]*)', re.M | re.S)


def parse_modelfile(text: str, where: str = "Modelfile") -> Modelfile:
    """Read a Modelfile back (FROM, a second FROM as the projector, TEMPLATE, SYSTEM and every `PARAMETER stop`), as Ollama parses it."""
    values: dict[str, str] = {}
    stops: list[str] = []
    sources: list[str] = []
    for match in _INSTRUCTION.finditer(text):
        name, raw, triple = match.group(1).upper(), match.group(2), match.group(3)
        value = triple if triple is not None else _unquoted(raw.strip(), where)
        if name == "FROM":
            sources.append(value)
        elif name == "PARAMETER":
            try:
                key, *rest = shlex.split(raw)
            except ValueError as exc:
                raise StudioError(f"a PARAMETER line of the Modelfile cannot be read ({exc})", where=where, fix="quote the value as PARAMETER stop \"<token>\"") from None
            if key.lower() == "stop" and rest:
                stops.append(" ".join(rest))
        else:
            values[name] = value
    return Modelfile(sources[0] if sources else None, values.get("TEMPLATE"), values.get("SYSTEM"), tuple(stops), sources[1] if len(sources) > 1 else None)


def _unquoted(value: str, where: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return shlex.split(value)[0]
        except ValueError:
            raise StudioError("a quoted Modelfile value is not closed", where=where, fix='close the quote, or use """ for text over several lines') from None
    return value
