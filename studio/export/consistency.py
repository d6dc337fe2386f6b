"""Will it serve the same? A gate, run before `merge` and every `export` completes, on prompts and stop tokens.

The same conversations (with and without a system prompt, one turn and several, a past answer with its
reasoning, a held-out example; each as a whole conversation and as a prompt with the generation prompt)
are rendered through every serving format (studio.export.serving: training, merged model, GGUF, Ollama
Modelfile) and compared with what training rendered:

- prompt format, per format: the rendered text and the token ids, character for character and id for id
  (a difflib diff of the first conversation that differs);
- stop tokens: the merged generation_config must stop on the training end-of-turn token (and, after a
  merge, on exactly what `studio eval` and `studio chat` stopped on); the GGUF's eos/eot ids must include
  it and stop on nothing the merged model continues past; the Modelfile's PARAMETER stop lines must be the
  template family's turn markers plus every token the merged model stops on, no fewer and no more;
- pad token: generation_config's pad id, the tokenizer's and the GGUF's are the same token;
- thinking default: for templates that know `<think>`, whether the generation prompt leaves thinking to the
  model, opens a `<think>` block, or closes an empty one must be the same in every format;
- stop behaviour (export only, studio.export.stopping): greedy answers of the GGUF, through each served
  format's prompt and stop tokens, must stop where the merged model's answers stop (gated only where the
  merged model does stop within eval.max_new_tokens: see that module for why).

The recipe's data.system_prompt is part of the conversation for training (it was prepended to every example)
and for the merged model and the GGUF (which cannot store it: their clients must send it, and a note says so);
Ollama sends it from the Modelfile's SYSTEM, so it is compared as Ollama would render it.

A failed check blocks the merge or export (StudioError: which check, which file, which conversation, the
diff, the fix) and nothing is left in place. Every check, passed or not, is recorded in merge.json /
export.json under "consistency".
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.errors import StudioError
from studio.export.serving import View, describe_ids, gguf_view, merged_view, ollama_view, read_gguf_serving, training_view

SYSTEM = "You are a careful assistant."
QUESTION, ANSWER = "add 2 and 3", "5"
FOLLOW_UP = "and now 4 plus 4?\nAnswer with a number — \"8\" or {8}."
REASONED = "<think>\n2 plus 3 is 5.\n</think>\n\n5"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Case:
    """One conversation every format renders, as a whole (as trained) or as a prompt to answer."""

    name: str
    messages: tuple[dict, ...]
    generation: bool


def conversations(heldout: list | None = None) -> list[Case]:
    """The conversations the gate renders: fixed ones for each shape, plus the first held-out example."""
    user, answer, follow = {"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}, {"role": "user", "content": FOLLOW_UP}
    system = {"role": "system", "content": SYSTEM}
    cases = [
        Case("one user turn, generation prompt", (user,), True),
        Case("system + user turn, generation prompt", (system, user), True),
        Case("multi-turn with a system prompt, generation prompt", (system, user, answer, follow), True),
        Case("multi-turn without a system prompt, generation prompt", (user, answer, follow), True),
        Case("after an answer with <think> reasoning, generation prompt", (user, {"role": "assistant", "content": REASONED}, follow), True),
        Case("whole conversation with a system prompt", (system, user, answer), False),
        Case("whole conversation without a system prompt", (user, answer), False),
    ]
    if heldout:
        messages = tuple(dict(m) for m in heldout[0].messages)
        cases.append(Case("held-out example 1, as trained", messages, False))
        cases.append(Case("held-out example 1, generation prompt", messages[:-1], True))
    return cases


@dataclass
class Check:
    """One comparison: passed or not, what it found, and for a failure the file, the fix and a diff."""

    name: str
    passed: bool
    detail: str
    file: str | None = None
    fix: str | None = None
    diff: str | None = None


@dataclass
class Consistency:
    """Every check of the gate, whether all passed, and notes on what was not compared."""

    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # stop behaviour shares, the GGUF's ids and flags

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that did not pass."""
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        """JSON-ready form (what merge.json and export.json record under "consistency")."""
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks], "figures": self.figures, "notes": self.notes}

    def error(self, action: str) -> StudioError:
        """The StudioError that blocks `action` ("export", "merge"): each failure with its file and diff, the first one's fix."""
        first = self.failures[0]
        lines = [f"the {action} would not serve like training: {len(self.failures)} consistency check(s) failed; nothing was written"]
        for check in self.failures:
            lines.append(f"- {check.name}: {check.detail}" + (f"\n  file: {check.file}" if check.file else "") + (f"\n  fix: {check.fix}" if check.fix and check is not first else ""))
            if check.diff:
                lines.append("  " + check.diff.replace("\n", "\n  "))
        return StudioError("\n".join(lines), where=first.file, fix=first.fix)


def compare_prompts(reference: View, view: View, cases: list[Case]) -> Check:
    """Whether `view` renders and encodes every conversation as training did; a diff of the first that differs."""
    name = f"prompt format: {view.name}"
    compared, differing, skipped, first = 0, [], [], None
    for case in cases:
        if case.generation is False and view.generation_only:
            continue
        try:
            expected = reference.render(list(case.messages), case.generation)
        except StudioError:  # the training template refuses this shape (e.g. no system role): nothing to serve alike
            skipped.append(case.name)
            continue
        try:
            got = view.render(list(case.messages), case.generation)
        except StudioError as exc:
            return Check(name, False, f"cannot render '{case.name}': {exc.what}", exc.where or view.file, exc.fix or view.fix)
        except Exception as exc:  # a template raises whatever its author chose
            return Check(name, False, f"its template fails on '{case.name}': {type(exc).__name__}: {exc}", view.file, view.fix)
        compared += 1
        if got != expected:
            differing.append(case.name)
            first = first or (case, "text", _text_diff(expected, got, reference, view))
        else:
            want, have = reference.encode(expected), view.encode(got)
            if want != have:
                differing.append(case.name)
                first = first or (case, "token ids", _ids_diff(want, have, reference, view))
    if not differing:
        unused = f" (the training template refuses {', '.join(repr(c) for c in skipped)}: not compared)" if skipped else ""
        return Check(name, True, f"{compared} conversations render to the same text and token ids as in training{unused}")
    case, what, diff = first
    others = f" (and {len(differing) - 1} more: {', '.join(repr(d) for d in differing[1:])})" if len(differing) > 1 else ""
    return Check(name, False, f"the {what} of conversation '{case.name}' {'differ' if what == 'token ids' else 'differs'} from training's{others}", view.file, view.fix, diff)


def _visible(text: str) -> list[str]:
    # JSON-escaped lines, so a missing newline, a tab or a trailing space shows in the diff
    return [json.dumps(line, ensure_ascii=False)[1:-1] for line in text.splitlines(keepends=True)] or [""]


def _text_diff(expected: str, got: str, reference: View, view: View) -> str:
    lines = difflib.unified_diff(_visible(expected), _visible(got), fromfile=f"training: {reference.file}", tofile=f"{view.name}: {view.file}", lineterm="", n=2)
    return "\n".join(lines)


def _ids_diff(want: list[int], have: list[int], reference: View, view: View) -> str:
    matcher = difflib.SequenceMatcher(a=want, b=have, autojunk=False)
    tag, i1, i2, j1, j2 = next(op for op in matcher.get_opcodes() if op[0] != "equal")
    return (f"--- training ids {want}\n+++ {view.name} ids {have}\n"
            f"first difference ({tag}) at token {i1}: training {want[i1:i2]} {reference.tokens(want[i1:i2])} vs {view.name} {have[j1:j2]} {view.tokens(have[j1:j2])}")


def merged_stop_checks(training: View, merged: View, expected: frozenset[int] | None = None) -> list[Check]:
    """The merged generation_config stops on the training end-of-turn token (and on `expected` when given); pads consistently."""
    (eos,) = training.stop_ids
    remerge = merged.extra["remerge"]
    checks = []
    stops = sorted(merged.stop_ids | {eos})
    if eos not in merged.stop_ids:
        checks.append(Check("stop tokens: merged model", False,
                            f"eos_token_id is [{describe_ids(merged, merged.stop_ids)}]: it leaves out {describe_ids(training, [eos])}, the end-of-turn token every trained answer ends with, so answers would not stop",
                            merged.stop_file, f'set "eos_token_id": {stops} in {merged.stop_file}, or {remerge}'))
    elif expected is not None and merged.stop_ids != expected:
        checks.append(Check("stop tokens: merged model", False,
                            f"eos_token_id is [{describe_ids(merged, merged.stop_ids)}], but `studio eval` and `studio chat` stopped on [{describe_ids(merged, expected)}]",
                            merged.stop_file, f'set "eos_token_id": {sorted(expected)} in {merged.stop_file}, or {remerge}'))
    elif merged.extra["tokenizer_eos_id"] != eos:
        checks.append(Check("stop tokens: merged model", False,
                            f"the tokenizer's eos_token is {describe_ids(merged, [merged.extra['tokenizer_eos_id']])}, not the trained end-of-turn {describe_ids(training, [eos])}: servers that stop on the tokenizer's EOS would not stop",
                            merged.extra["tokenizer_config"], f"set eos_token to {json.dumps(training.tokens([eos])[0])} in {merged.extra['tokenizer_config']}, or {remerge}"))
    else:
        checks.append(Check("stop tokens: merged model", True, f"stops on [{describe_ids(merged, merged.stop_ids)}], including the trained end-of-turn"))
    pad = merged.extra["tokenizer_pad_id"]
    if merged.pad_id != pad:
        checks.append(Check("pad token: merged model", False, f"generation_config pad_token_id {merged.pad_id} is not the tokenizer's pad token {pad}",
                            merged.stop_file, f'set "pad_token_id": {pad} in {merged.stop_file}, or {remerge}'))
    else:
        checks.append(Check("pad token: merged model", True, f"pad_token_id {pad} in generation_config and tokenizer"))
    return checks


def gguf_stop_checks(training: View, merged: View, gguf: View, reexport: str) -> list[Check]:
    """The GGUF's end-of-generation ids include the training end-of-turn and stop on nothing the merged model continues past."""
    (eos,) = training.stop_ids
    checks = []
    extra = gguf.stop_ids - merged.stop_ids
    fix = f"{reexport}; if the metadata was edited, set tokenizer.ggml.eos_token_id back to {eos}"
    if eos not in gguf.stop_ids:
        checks.append(Check("stop tokens: GGUF", False,
                            f"it ends generation on [{describe_ids(gguf, gguf.stop_ids)}], not on {describe_ids(training, [eos])}, the end-of-turn token every trained answer ends with: llama.cpp would run past the answer",
                            gguf.stop_file, fix))
    elif extra:
        checks.append(Check("stop tokens: GGUF", False,
                            f"it ends generation on [{describe_ids(gguf, extra)}], which the merged model continues past: answers would be cut short",
                            gguf.stop_file, fix))
    else:
        checks.append(Check("stop tokens: GGUF", True, f"ends generation on [{describe_ids(gguf, gguf.stop_ids)}], as the merged model does"))
    pad = merged.extra["tokenizer_pad_id"]
    if gguf.pad_id != pad:
        checks.append(Check("pad token: GGUF", False, f"tokenizer.ggml.padding_token_id is {gguf.pad_id}, the merged tokenizer pads with {pad}", gguf.stop_file, reexport))
    else:
        checks.append(Check("pad token: GGUF", True, f"padding_token_id {pad}, as the merged tokenizer"))
    return checks


def modelfile_stop_check(merged: View, ollama: View, family_stops: tuple[str, ...], reexport: str) -> Check:
    """The Modelfile's stop strings are the template family's turn markers plus every token the merged model stops on."""
    required = list(dict.fromkeys([*family_stops, *merged.tokens(sorted(merged.stop_ids))]))
    missing = [s for s in required if s not in ollama.stop_strings]
    extra = [s for s in ollama.stop_strings if s not in required]
    if missing:
        lines = "; ".join(f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in missing)
        return Check("stop tokens: Ollama Modelfile", False,
                     f"no PARAMETER stop for {', '.join(json.dumps(s, ensure_ascii=False) for s in missing)}: Ollama would run past the end of the turn",
                     ollama.stop_file, f"{reexport}; or add the line(s) {lines} to the Modelfile")
    if extra:
        return Check("stop tokens: Ollama Modelfile", False,
                     f"PARAMETER stop {', '.join(json.dumps(s, ensure_ascii=False) for s in extra)}: the merged model does not stop there, so answers would be cut short",
                     ollama.stop_file, f"{reexport}; or remove those PARAMETER stop lines")
    return Check("stop tokens: Ollama Modelfile", True, f"stops on {', '.join(json.dumps(s, ensure_ascii=False) for s in required)}")


def thinking_default(view: View) -> str:
    """How the format's generation prompt leaves thinking: 'open' (<think> opened), 'off' (an empty block closed), 'model'."""
    prompt = view.render([{"role": "user", "content": QUESTION}], True)
    tail = prompt[prompt.rfind(QUESTION) + len(QUESTION):]
    opened, closed = tail.rfind(THINK_OPEN), tail.rfind(THINK_CLOSE)
    if opened < 0 and closed < 0:
        return "model"
    return "off" if closed > opened else "open"


_THINKING = {"model": "leaves thinking to the model (no <think> in the generation prompt)",
             "open": "starts thinking (the generation prompt opens <think>)",
             "off": "turns thinking off (the generation prompt closes an empty <think></think>)"}


def thinking_check(reference: View, views: list[View]) -> Check:
    """Every format keeps training's thinking default: a thinking template must not gain or lose its <think>."""
    name = "thinking default"
    templates = [v.template or "" for v in (reference, *views)]
    if not any(THINK_OPEN in t or "enable_thinking" in t for t in templates):
        return Check(name, True, "no template mentions <think> or enable_thinking: not a thinking model")
    try:
        want = thinking_default(reference)
    except StudioError as exc:  # a template that refuses a lone user turn: the prompt-format checks cover the rest
        return Check(name, True, f"not compared: the training template cannot render a one-turn prompt ({exc.what})")
    for view in views:
        try:
            got = thinking_default(view)
        except Exception:  # a template's own error: its prompt-format check reports it
            continue
        if got != want:
            return Check(name, False, f"training {_THINKING[want]}; the {view.name} {_THINKING[got]}", view.file, view.fix)
    return Check(name, True, f"every format {_THINKING[want]}")


def _cases(recipe) -> list[Case]:
    from studio.evaluation.probes import heldout_examples

    try:
        return conversations(heldout_examples(recipe))
    except StudioError:  # no held-out data: the fixed conversations alone
        return conversations()


def _training_source(run_dir: Path, recipe) -> str:
    """Where training's prompt format came from: the recipe's data.chat_template, else the adapter's saved tokenizer."""
    from studio.training.rundir import ADAPTER, RECIPE

    if recipe.data.chat_template:
        return f"{run_dir / RECIPE} (data.chat_template)"
    return f"{run_dir / ADAPTER} (the tokenizer and chat template training saved)"


def _notes(recipe) -> list[str]:
    if not recipe.data.system_prompt:
        return []
    return ["data.system_prompt is not stored in the merged model or the GGUF: their clients must send it (compared as if they do); "
            "the Ollama Modelfile sends it as SYSTEM"]


def check_merge(tokenizer, folder: Path, recipe, expected_stops, display: Path, run_dir: Path) -> Consistency:
    """The gate of `studio merge`: the merged folder `folder` (shown as `display`) against the training tokenizer.

    `expected_stops`: the ids `studio eval` and `studio chat` stopped on, which generation_config must name.
    """
    training = training_view(tokenizer, recipe.data.system_prompt, _training_source(run_dir, recipe))
    merged = merged_view(folder, recipe.data.system_prompt, display, run_dir)
    checks = [compare_prompts(training, merged, _cases(recipe)), *merged_stop_checks(training, merged, frozenset(expected_stops)), thinking_check(training, [merged])]
    return Consistency(checks, _notes(recipe))


def check_export(run_dir: Path, recipe, fmt: str, merged_folder: Path, merged_model, gguf_file: Path, gguf_display: Path,
                 gguf_model, gguf_tokenizer, modelfile: str | None = None, modelfile_display: Path | None = None) -> Consistency:
    """The gate of `studio export`: training, the merged model, the written GGUF (`gguf_file`, shipped as
    `gguf_display`) and, for Ollama, the Modelfile text, compared on prompts, stop tokens, thinking and stopping."""
    from studio.export.ollama import parse_modelfile, recognise_template
    from studio.export.stopping import stop_behaviour
    from studio.modeling.loading import load_tokenizer
    from studio.training.rundir import ADAPTER

    reexport = f"export again (`studio export {run_dir} --format {fmt}`); if it differs again, report it with this run directory"
    tokenizer = load_tokenizer(run_dir / ADAPTER, recipe)
    training = training_view(tokenizer, recipe.data.system_prompt, _training_source(run_dir, recipe))
    merged = merged_view(merged_folder, recipe.data.system_prompt, run_dir=run_dir)
    meta = read_gguf_serving(gguf_file)
    gguf = gguf_view(meta, gguf_tokenizer, recipe.data.system_prompt, gguf_display, reexport)
    served = [gguf]
    cases = _cases(recipe)
    checks = [compare_prompts(training, merged, cases), compare_prompts(training, gguf, cases)]
    if modelfile is not None:
        ollama = ollama_view(parse_modelfile(modelfile, str(modelfile_display)), meta, gguf_tokenizer, modelfile_display, reexport)
        served.append(ollama)
        checks.append(compare_prompts(training, ollama, cases))
    checks += merged_stop_checks(training, merged) + gguf_stop_checks(training, merged, gguf, reexport)
    if modelfile is not None:
        checks.append(modelfile_stop_check(merged, ollama, recognise_template(tokenizer).family.stops, reexport))
    checks.append(thinking_check(training, [merged, *served]))
    behaviour, figures = stop_behaviour(recipe, merged_model, merged, gguf_model, served)
    checks.append(behaviour)
    return Consistency(checks, _notes(recipe), {"stopping": figures, "gguf": meta.to_dict()})
