"""Does the exported model stop where the merged model stops? Greedy answers to held-out prompts, compared.

Each held-out prompt (the run's test/validation conversations without their answer, else the fixed probe
prompts) is rendered and encoded by each format's own view, and answered greedily for at most
eval.max_new_tokens tokens by the merged model (transformers) and by the GGUF loaded with the independent
reader (studio.export.round_trip). Generation runs until a token that *any* of the formats stops on, so
both answers end at the same decision point; then, per prompt and format:

- both answers are identical and end on a token both stop on (or neither stopped): they agree;
- both are identical, but one format stops on the final token and the other does not: a mismatch, gated
  (the GGUF would run past the merged model's end of turn, or cut an answer the merged model continues);
- the answers diverge before either stops (a quantization near-tie): inconclusive, counted, not gated.

The prompts go through each model as one left-padded batch (padding can move a logit by ~1e-6, which at
most flips a near-tie: counted as diverged, like a quantization one).

Why gate on agreement rather than on "the GGUF stops": a model that never ends its answer within
eval.max_new_tokens (an untrained tiny model; a run with a short limit) cannot stop in any format, and
that is not the export's fault. The share of prompts each format stopped on is recorded either way, and the
static stop-token checks (studio.export.consistency) apply whether or not any answer stopped.
"""

from __future__ import annotations

from studio.export.consistency import Check
from studio.export.serving import View, describe_ids

PROMPTS = 4  # held-out prompts answered per format: the static checks carry the rest, this is behaviour


def heldout_prompts(recipe, limit: int = PROMPTS) -> list[list[dict]]:
    """The first `limit` held-out conversations without their final answer, else the fixed probe prompts."""
    from studio.errors import StudioError
    from studio.evaluation.probes import FIXED_PROMPTS, heldout_examples

    try:
        return [list(e.messages[:-1]) for e in heldout_examples(recipe)[:limit]]
    except StudioError:  # no held-out data: the prompts merge and export compare logits on
        return [[{"role": "user", "content": p}] for p in FIXED_PROMPTS[:limit]]


def _greedy(model, prompts: list[list[int]], stops: set[int], max_new_tokens: int, pad_id: int | None) -> list[list[int]]:
    """Greedy answers to all prompts in one left-padded batch, each cut after its first stop token."""
    import torch
    from transformers import GenerationConfig

    if not prompts:
        return []
    device = next(model.parameters()).device
    pad = pad_id if pad_id is not None else min(stops)
    width = max(len(ids) for ids in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(stops), pad_token_id=pad)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, width:].tolist()
    # a finished row is padded to the batch's length: keep it through its first stop only
    return [row[: next((i + 1 for i, t in enumerate(row) if t in stops), len(row))] for row in out]


def _prompt_ids(view: View, messages: list[dict]) -> list[int] | None:
    """The format's prompt ids, or None when its template fails (the prompt-format check reports that)."""
    try:
        return view.encode(view.render(messages, True))
    except Exception:  # a template raises what its author chose; reported by compare_prompts, not here
        return None


def _first_stop(tokens: list[int], stops) -> int | None:
    return next((i for i, t in enumerate(tokens) if t in stops), None)


def judge(merged: list[int], served: list[int], merged_stops, served_stops) -> str:
    """'agree', 'diverged', 'runs on' (served continues where the merged model stops) or 'cuts' (the reverse)."""
    m, s = _first_stop(merged, merged_stops), _first_stop(served, served_stops)
    common = next((i for i, (a, b) in enumerate(zip(merged, served)) if a != b), min(len(merged), len(served)))
    first = min(i for i in (m, s, float("inf")) if i is not None)
    if m == s:
        return "agree"
    if first >= common:
        return "diverged"
    return "runs on" if m == first else "cuts"


def stop_behaviour(recipe, merged_model, merged: View, gguf_model, served: list[View]) -> tuple[Check, dict]:
    """Greedy answers of the merged model and the GGUF (through each served view) on held-out prompts, compared."""
    limit = recipe.eval.max_new_tokens
    prompts = heldout_prompts(recipe)
    union = set(merged.stop_ids).union(*(v.stop_ids for v in served))
    figures = {"prompts": len(prompts), "max_new_tokens": limit, "stopped": {merged.name: 0, **{v.name: 0 for v in served}}, "diverged": 0}
    problems: list[tuple[View, str]] = []
    merged_ids = [_prompt_ids(merged, m) for m in prompts]
    served_ids = {v.name: [_prompt_ids(v, m) for m in prompts] for v in served}
    kept = [i for i, ids in enumerate(merged_ids) if ids is not None]
    answers = dict(zip(kept, _greedy(merged_model, [merged_ids[i] for i in kept], union, limit, merged.pad_id)))
    # the GGUF and the Modelfile usually feed the model the same ids: answer each distinct prompt once
    distinct = list(dict.fromkeys(tuple(ids) for all_ids in served_ids.values() for ids in all_ids if ids is not None))
    pad = next((v.pad_id for v in served if v.pad_id is not None), None)
    cache = dict(zip(distinct, _greedy(gguf_model, [list(ids) for ids in distinct], union, limit, pad)))
    for index in kept:
        answer = answers[index]
        figures["stopped"][merged.name] += _first_stop(answer, merged.stop_ids) is not None
        for view in served:
            ids = served_ids[view.name][index]
            if ids is None:
                continue
            tokens = cache[tuple(ids)]
            figures["stopped"][view.name] += _first_stop(tokens, view.stop_ids) is not None
            verdict = judge(answer, tokens, merged.stop_ids, view.stop_ids)
            figures["diverged"] += verdict == "diverged"
            if verdict in ("runs on", "cuts"):  # generation ended on the token one side stops on: the last one
                token = describe_ids(view, tokens[-1:])
                problems.append((view, f"the {view.name} {'does not stop on' if verdict == 'runs on' else 'stops on'} {token} where the merged model {'stops' if verdict == 'runs on' else 'continues'}"))
    shares = ", ".join(f"{name} {count}/{len(prompts)}" for name, count in figures["stopped"].items())
    figures["mismatches"] = [text for _view, text in problems]
    name = "stop behaviour"
    if problems:
        view, first = problems[0]
        return Check(name, False, f"{len(problems)} greedy answer(s) to held-out prompts end differently: {first} (stopped within {limit} tokens: {shares})",
                     view.stop_file, "fix the stop tokens the checks above name; this check only confirms them on real answers"), figures
    if figures["stopped"][merged.name] == 0:
        return Check(name, True, f"the merged model ends no held-out answer within eval.max_new_tokens={limit}, so stopping could not be compared (not gated); stopped: {shares}"), figures
    return Check(name, True, f"every format stops where the merged model does (stopped within {limit} tokens: {shares}; diverged before a stop: {figures['diverged']})"), figures
