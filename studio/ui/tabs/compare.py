"""The Compare tab: one prompt through the base model and the adapter side by side, held-out prompts pre-filled;
and the forgetting check (what the adapter changed on general questions and text), with its verdict."""

from __future__ import annotations

import threading

import gradio as gr

from studio.errors import StudioError
from studio.training.rundir import has_adapter, open_run
from studio.ui.context import Context
from studio.ui.errors import shows_errors

_lock = threading.Lock()
_session: dict = {}  # run_dir -> ChatSession; one loaded model at a time


def adapter_runs(ctx: Context, request) -> list[str]:
    """Run directories the user may open that have a trained adapter."""
    return [d for d in ctx.run_dirs(request) if has_adapter(d)]


def heldout_prompts(run_dir: str, limit: int = 5) -> list[str]:
    """The last user message of the first few held-out examples (data.test_path, else data.val_path)."""
    from studio.evaluation.probes import heldout_examples

    try:
        examples = heldout_examples(open_run(run_dir, need_adapter=False)[1])
    except StudioError:
        return []
    prompts = []
    for ex in examples[:limit]:
        users = [m["content"] for m in ex.messages if m["role"] == "user"]
        if users:
            prompts.append(users[-1])
    return prompts


def compare(run_dir: str, prompt: str, max_new_tokens: int) -> tuple[str, str]:
    """(base answer, adapter answer) for one prompt, greedy, with the run's chat template."""
    if not prompt or not prompt.strip():
        raise StudioError("the prompt is empty", where="Compare tab", fix="type a prompt or pick a held-out example")
    with _lock:
        session = _loaded(run_dir)
        session.max_new_tokens = int(max_new_tokens)
        session.reset()
        with session.model.disable_adapter():
            base = session.ask(prompt)
        session.reset()
        adapter = session.ask(prompt)
        session.reset()
    return shown_answer(base), shown_answer(adapter)


def _loaded(run_dir: str):
    """The ChatSession of run_dir, loading it (and dropping any other run's) when needed; call with _lock held."""
    from studio.evaluation.chat import ChatSession

    session = _session.get(run_dir)
    if session is None:
        _session.clear()
        session = _session[run_dir] = ChatSession(run_dir, use_adapter=True)
    return session


FORGETTING_HEADERS = ["question", "expected", "base", "adapter", "same answer"]


def forgetting(run_dir: str) -> tuple[str, list[list[str]]]:
    """(verdict and figures as Markdown, one row per general question) of the forgetting check on run_dir, which
    also records it in eval.json and the model card; it reuses the model the tab has loaded."""
    from studio.evaluation.forgetting import check_forgetting

    with _lock:
        session = _loaded(run_dir)
        result = check_forgetting(run_dir, session.model, session.tokenizer)
    return forgetting_markdown(result), [[a["question"], a["expected"], shown_answer(a["base"]), shown_answer(a["adapter"]), "yes" if a["same"] else "no"]
                                         for a in result.answers]


def forgetting_markdown(result) -> str:
    """The verdict in plain words, why, and the three figures."""
    said = {"kept": "the adapter kept what the base model knew", "drifted": "the adapter changed the base model's general behaviour somewhat",
            "forgot": "the adapter lost much of what the base model knew"}[result.verdict]
    lines = [f"### Forgetting: **{result.verdict}**: {said}", ""]
    lines += [f"- {reason}" for reason in result.reasons]
    lines += [
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| KL(base ‖ adapter) per token, on the base's own answers | mean {result.kl_mean:.4f}, max {result.kl_max:.4f} |",
        f"| perplexity on general text, adapter / base | {result.perplexity_ratio:.3f} ({result.adapter_perplexity:.2f} / {result.base_perplexity:.2f}) |",
        f"| greedy answers equal to the base's | {result.agreement:.0%} of {result.questions} |",
        f"| expected answers given, base / adapter | {result.base_accuracy:.1f}% / {result.adapter_accuracy:.1f}% |",
    ]
    return "\n".join(lines)


EMPTY_ANSWER = "(empty answer: the model ended its turn at once)"


def shown_answer(text: str) -> str:
    """An answer as the page shows it: an empty one says so instead of leaving a blank box."""
    return text if text.strip() else EMPTY_ANSWER


def build(ctx: Context) -> dict:
    """Lay out the Compare tab; return what the app refreshes on page load."""
    with gr.Row():
        # allow_custom_value so API clients can name a run; on_compare checks that the user may open it.
        run = gr.Dropdown(label="Run", choices=[], scale=3, allow_custom_value=True, elem_id="compare-run")
        max_new = gr.Slider(8, 512, value=128, step=8, label="max_new_tokens", scale=2, elem_id="compare-max-new")
    example = gr.Dropdown(label="Held-out examples (from data.test_path)", choices=[], allow_custom_value=False)
    prompt = gr.Textbox(label="Prompt", lines=3, elem_id="compare-prompt")
    go = gr.Button("Compare", variant="primary", elem_id="compare-go")
    with gr.Row():
        base = gr.Textbox(label="Base model", lines=8, interactive=False, elem_id="compare-base")
        adapter = gr.Textbox(label="With adapter", lines=8, interactive=False, elem_id="compare-adapter")
    check = gr.Button("Check forgetting", elem_id="compare-forgetting")
    verdict = gr.Markdown(elem_id="forgetting-verdict")
    answers = gr.Dataframe(headers=FORGETTING_HEADERS, type="array", interactive=False, wrap=True, elem_id="forgetting-answers")

    def refresh(request: gr.Request):
        runs = adapter_runs(ctx, request)
        return gr.update(choices=runs, value=runs[0] if runs else None)

    def on_run(run_dir, request: gr.Request):
        if not run_dir or not ctx.may_open(request, run_dir):
            return gr.update(choices=[], value=None), ""
        prompts = heldout_prompts(run_dir)
        return gr.update(choices=prompts, value=prompts[0] if prompts else None), prompts[0] if prompts else ""

    @shows_errors
    def on_compare(run_dir, prompt_text, max_new_tokens, request: gr.Request):
        return compare(ctx.run_for(request, run_dir, "Compare tab: Run"), prompt_text, max_new_tokens)

    @shows_errors
    def on_forgetting(run_dir, request: gr.Request):
        return forgetting(ctx.run_for(request, run_dir, "Compare tab: Run"))

    run.change(on_run, [run], [example, prompt], api_visibility="undocumented")
    example.input(lambda e: e, [example], [prompt], api_visibility="undocumented")
    go.click(on_compare, [run, prompt, max_new], [base, adapter], api_name="compare")
    check.click(on_forgetting, [run], [verdict, answers], api_name="check_forgetting")
    return {"refresh": refresh, "outputs": [run]}
