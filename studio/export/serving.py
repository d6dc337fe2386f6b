"""How each serving format turns a conversation into the model's input, and which tokens end its answers.

One view per format, each built only from the files that format reads:

    training  the adapter's saved tokenizer with the recipe's data.chat_template (what the Renderer used);
              ends answers with the tokenizer's EOS, the token every trained answer ends with
    merged    the merged folder's tokenizer and chat template, encoded without added special tokens (as
              apply_chat_template does); stops on generation_config.json's eos_token_id
    GGUF      the file's own metadata: tokenizer.chat_template rendered with the bos/eos text of the file's
              token list, then the add-BOS / add-EOS flags applied as llama.cpp applies them (it strips a BOS
              the template wrote before adding its own, so none is doubled); stops on the eos/eot/eom ids
    Ollama    the Modelfile: TEMPLATE rendered as a Go template (studio.export.go_template), SYSTEM sent as
              the first message when the conversation has none (as Ollama does), the GGUF's add-BOS flag;
              stops on the PARAMETER stop strings and on the GGUF's end-of-generation ids

A view's `render` returns the prompt as the model sees it, with the BOS a loader adds written out, so the
texts compare as well as the ids. The recipe's data.system_prompt is prepended to conversations without a
system turn for training (training did so), and for merged and GGUF (those formats have nowhere to keep it:
a client must send it); Ollama gets it from the Modelfile's SYSTEM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from studio.errors import StudioError


@dataclass
class View:
    """One serving format: how it renders a conversation, how it encodes the text, where it stops."""

    name: str
    file: str  # the file that decides how prompts render
    fix: str  # what to do when its prompts differ from training's
    render: Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) -> text
    encode: Callable[[str], list[int]]
    tokens: Callable[[list[int]], list[str]]  # ids -> token strings, for messages
    template: str | None
    stop_ids: frozenset[int]
    stop_file: str  # the file that decides where generation stops
    pad_id: int | None = None
    generation_only: bool = False  # Ollama only ever renders a prompt to answer
    stop_strings: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # format-specific facts the gate reports (flags, ids)


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """The messages with a system turn first when they have none and `system` is set (as training's data loader does)."""
    if system and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system}, *messages]
    return list(messages)


def _jinja(tokenizer, messages: list[dict], generation: bool, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation, **kwargs)


def _ids(tokenizer) -> Callable[[str], list[int]]:
    return lambda text: list(tokenizer(text, add_special_tokens=False)["input_ids"])


def training_view(tokenizer, system_prompt: str | None, where: str) -> View:
    """What training rendered: the Renderer on the adapter's tokenizer (recipe template applied), EOS as the stop."""
    from studio.data import Renderer

    renderer = Renderer(tokenizer, 10**9)

    def render(messages, generation):
        messages = with_system(messages, system_prompt)
        return renderer.prompt_text(messages) if generation else renderer.conversation_text(messages)

    return View(
        name="training", file=where, fix="", render=render, encode=_ids(tokenizer), tokens=tokenizer.convert_ids_to_tokens,
        template=_template_text(tokenizer), stop_ids=frozenset({tokenizer.eos_token_id}), stop_file=where, pad_id=tokenizer.pad_token_id,
    )


def merged_view(folder: Path, system_prompt: str | None, display: Path | None = None, run_dir: Path | None = None) -> View:
    """The merged model as transformers (and servers reading its folder) use it: its tokenizer and generation_config."""
    from transformers import AutoTokenizer

    shown = Path(display or folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    stops, source, generation = merged_stop_ids(Path(folder))
    remerge = f"re-run `studio merge {run_dir}` to rewrite it from the adapter" if run_dir else "merge again to rewrite it from the adapter"
    template_file = "chat_template.jinja" if (Path(folder) / "chat_template.jinja").exists() else "tokenizer_config.json"
    return View(
        name="merged model", file=str(shown / template_file),
        fix=f"{remerge}; the merged folder's chat template must not be edited by hand",
        render=lambda messages, generation_prompt: _jinja(tokenizer, with_system(messages, system_prompt), generation_prompt),
        encode=_ids(tokenizer), tokens=tokenizer.convert_ids_to_tokens, template=_template_text(tokenizer), stop_ids=stops,
        stop_file=str(shown / source), pad_id=generation.get("pad_token_id"),
        extra={"tokenizer_eos_id": tokenizer.eos_token_id, "tokenizer_pad_id": tokenizer.pad_token_id, "remerge": remerge,
               "tokenizer_config": str(shown / "tokenizer_config.json")},
    )


def merged_stop_ids(folder: Path) -> tuple[frozenset[int], str, dict]:
    """(the ids a merged folder stops on, the file naming them, that file's settings): generation_config.json,
    else config.json, as transformers' generate() reads them."""
    from studio.training.rundir import read_json_or_empty

    settings, source = read_json_or_empty(folder / "generation_config.json"), "generation_config.json"
    if "eos_token_id" not in settings:
        settings, source = read_json_or_empty(folder / "config.json"), "config.json"
    eos = settings.get("eos_token_id")
    ids = eos if isinstance(eos, list) else [] if eos is None else [eos]
    return frozenset(i for i in ids if isinstance(i, int)), source, settings


@dataclass(frozen=True)
class GGUFServing:
    """The serving metadata of a GGUF file, read with gguf's own reader: template, special ids and flags."""

    chat_template: str | None
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    eom_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    special: dict[int, str]  # the token text of each special id

    @property
    def end_ids(self) -> frozenset[int]:
        """The ids llama.cpp ends generation on (end of sequence, of turn, of message)."""
        return frozenset(i for i in (self.eos_id, self.eot_id, self.eom_id) if i is not None)

    def text(self, token_id: int | None) -> str:
        """The token's text, or '' for no token."""
        return "" if token_id is None else self.special.get(token_id, "")

    def to_dict(self) -> dict:
        """The ids and flags (not the template) for a report."""
        return {"bos_token_id": self.bos_id, "eos_token_id": self.eos_id, "eot_token_id": self.eot_id, "eom_token_id": self.eom_id,
                "padding_token_id": self.pad_id, "add_bos_token": self.add_bos, "add_eos_token": self.add_eos}


def read_gguf_serving(path: Path) -> GGUFServing:
    """The chat template, bos/eos/eot/eom/pad ids and add-BOS/EOS flags stored in a GGUF file."""
    import gguf

    keys = gguf.Keys.Tokenizer
    try:
        fields = gguf.GGUFReader(str(path)).fields
    except (ValueError, OSError) as exc:
        raise StudioError(f"the GGUF's metadata cannot be read: {exc}", where=str(path), fix="re-export the file") from None

    def value(key):
        return fields[key].contents() if key in fields else None

    ids = {key: value(key) for key in (keys.BOS_ID, keys.EOS_ID, keys.EOT_ID, keys.EOM_ID, keys.PAD_ID)}
    tokens = fields.get(keys.LIST)
    special = {i: tokens.contents(i) for i in ids.values() if i is not None and tokens is not None and i < len(tokens.data)}
    return GGUFServing(
        chat_template=value(keys.CHAT_TEMPLATE), bos_id=ids[keys.BOS_ID], eos_id=ids[keys.EOS_ID], eot_id=ids[keys.EOT_ID],
        eom_id=ids[keys.EOM_ID], pad_id=ids[keys.PAD_ID], add_bos=bool(value(keys.ADD_BOS)), add_eos=bool(value(keys.ADD_EOS)), special=special,
    )


def gguf_view(meta: GGUFServing, gguf_tokenizer, system_prompt: str | None, display: Path, reexport: str) -> View:
    """The GGUF as llama.cpp serves it: its metadata's Jinja template and flags, tokenized by the file's own tokenizer."""
    bos, eos = meta.text(meta.bos_id), meta.text(meta.eos_id)

    def render(messages, generation):
        if not meta.chat_template:
            raise StudioError("the GGUF has no tokenizer.chat_template", where=str(display), fix=reexport)
        text = _jinja(gguf_tokenizer, with_system(messages, system_prompt), generation, chat_template=meta.chat_template, bos_token=bos, eos_token=eos)
        return _loader_specials(text, meta)

    return View(
        name="GGUF", file=f"{display} (tokenizer.chat_template)",
        fix=f"{reexport}; if the file's metadata was edited afterwards, restore tokenizer.chat_template and the add_bos/add_eos flags",
        render=render, encode=_ids(gguf_tokenizer), tokens=gguf_tokenizer.convert_ids_to_tokens, template=meta.chat_template,
        stop_ids=meta.end_ids, stop_file=f"{display} (tokenizer.ggml.eos_token_id / eot_token_id)", pad_id=meta.pad_id, extra=meta.to_dict(),
    )


def ollama_view(modelfile, meta: GGUFServing, gguf_tokenizer, display: Path, reexport: str) -> View:
    """The Ollama model: the Modelfile's TEMPLATE, SYSTEM and stops over the GGUF it runs."""
    from studio.export.go_template import render_go_template

    def render(messages, generation):
        if not modelfile.template:
            raise StudioError("the Modelfile has no TEMPLATE", where=str(display), fix=reexport)
        text = render_go_template(modelfile.template, with_system(messages, modelfile.system), where=str(display))
        return _loader_specials(text, meta, strip_template_bos=False)

    stop_ids = set(meta.end_ids)
    for stop in modelfile.stops:  # a stop string that is one token ends generation on that token
        ids = gguf_tokenizer(stop, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            stop_ids.add(ids[0])
    return View(
        name="Ollama Modelfile", file=f"{display} (TEMPLATE)", fix=f"{reexport}; if the Modelfile was edited, restore its TEMPLATE and SYSTEM",
        render=render, encode=_ids(gguf_tokenizer), tokens=gguf_tokenizer.convert_ids_to_tokens, template=modelfile.template,
        stop_ids=frozenset(stop_ids), stop_file=f"{display} (PARAMETER stop)", pad_id=meta.pad_id, generation_only=True,
        stop_strings=tuple(modelfile.stops), extra={"system": modelfile.system, "stops": list(modelfile.stops)},
    )


def _loader_specials(text: str, meta: GGUFServing, strip_template_bos: bool = True) -> str:
    """The text with the BOS/EOS the loader adds written out (llama.cpp first drops a template-written BOS/EOS)."""
    bos, eos = meta.text(meta.bos_id), meta.text(meta.eos_id)
    if meta.add_bos and bos:
        text = bos + (text.removeprefix(bos) if strip_template_bos else text)
    if meta.add_eos and eos:
        text = (text.removesuffix(eos) if strip_template_bos else text) + eos
    return text


def _template_text(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return template.get("default") or next(iter(template.values()), None)
    return template if template else None


def describe_ids(view: View, ids) -> str:
    """Token ids with their text, e.g. `2 '<|im_end|>'`, for messages."""
    ids = sorted(i for i in ids if i is not None)
    return ", ".join(f"{i} {json.dumps(t, ensure_ascii=False)}" for i, t in zip(ids, view.tokens(ids))) or "none"
