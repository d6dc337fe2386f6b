"""The Compare tab: one prompt through the base model and the adapter side by side, held-out prompts pre-filled;
and the forgetting check (what the adapter changed on general questions and text), with its verdict."""

from __future__ import annotations

import threading
from pathlib import Path

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


def heldout_cases(run_dir: str, limit: int = 5) -> list[tuple[str, list[str]]]:
    """(text, image files) of the last user message of the first few held-out examples (data.test_path, else
    data.val_path); the files are empty for text rows."""
    from studio.data.images import text_of
    from studio.evaluation.probes import heldout_examples

    try:
        examples = heldout_examples(open_run(run_dir, need_adapter=False)[1])
    except StudioError:
        return []
    cases = []
    for ex in examples[:limit]:
        users = [m["content"] for m in ex.messages if m["role"] == "user"]
        if users:
            last = users[-1]
            cases.append((text_of(last), [p["image"] for p in last if p["type"] == "image"] if isinstance(last, list) else []))
    return cases


def heldout_prompts(run_dir: str, limit: int = 5) -> list[str]:
    """The text of the last user message of the first few held-out examples."""
    return [text for text, _images in heldout_cases(run_dir, limit)]


def compare(run_dir: str, prompt: str, max_new_tokens: int, image: str | None = None) -> tuple[str, str]:
    """(base answer, adapter answer) for one prompt (with the image file `image`, for a vision-language run), greedy,
    with the run's chat template."""
    if not prompt or not prompt.strip():
        raise StudioError("the prompt is empty", where="Compare tab", fix="type a prompt or pick a held-out example")
    images = [image] if image else []
    with _lock:
        session = _loaded(run_dir)
        session.max_new_tokens = int(max_new_tokens)
        session.reset()
        with session.model.disable_adapter():
            base = session.ask(prompt, images)
        session.reset()
        adapter = session.ask(prompt, images)
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
    example = gr.Dropdown(label="Held-out examples (from data.test_path)", choices=[], allow_custom_value=False, elem_id="compare-example")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, scale=3, elem_id="compare-prompt")
        # Vision-language runs only: the picture goes before the prompt's text. A held-out image is shown decoded
        # (studio.data.images.load_image), so no file path of the server reaches the page.
        image = gr.Image(label="Image", type="filepath", sources=["upload"], visible=False, scale=1, height=160, elem_id="compare-image")
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

    cases: dict = {}  # run_dir -> its held-out cases, for the example picker

    def on_run(run_dir, request: gr.Request):
        if not run_dir or not ctx.may_open(request, run_dir):
            return gr.update(choices=[], value=None), "", gr.update(value=None, visible=False)
        cases[run_dir] = found = heldout_cases(run_dir)
        pixels = _image_pixels(run_dir)
        choices = [(f"{n + 1}: {text[:60]}" + (f" [{Path(files[0]).name}]" if files else ""), n) for n, (text, files) in enumerate(found)]
        first = _case_values(found, 0, pixels)
        return gr.update(choices=choices, value=0 if found else None), first[0], first[1]

    def on_example(run_dir, index):
        return _case_values(cases.get(run_dir, []), index, _image_pixels(run_dir) if run_dir else 0)

    @shows_errors
    def on_compare(run_dir, prompt_text, max_new_tokens, picture=None, request: gr.Request = None):  # picture optional for API clients
        return compare(ctx.run_for(request, run_dir, "Compare tab: Run"), prompt_text, max_new_tokens, picture)

    @shows_errors
    def on_forgetting(run_dir, request: gr.Request):
        return forgetting(ctx.run_for(request, run_dir, "Compare tab: Run"))

    run.change(on_run, [run], [example, prompt, image], api_visibility="undocumented")
    example.input(on_example, [run, example], [prompt, image], api_visibility="undocumented")
    go.click(on_compare, [run, prompt, max_new, image], [base, adapter], api_name="compare")
    check.click(on_forgetting, [run], [verdict, answers], api_name="check_forgetting")
    return {"refresh": refresh, "outputs": [run]}


def _image_pixels(run_dir: str) -> int:
    """The run's data.image_max_pixels for a vision-language run, 0 for a text run (no image input)."""
    from studio.modeling.source import resolve_model
    from studio.modeling.vision import is_vision_model

    try:
        recipe = open_run(run_dir, need_adapter=False)[1]
        return recipe.data.image_max_pixels if is_vision_model(resolve_model(recipe.model.name, recipe.model.revision)) else 0
    except StudioError:
        return 0


def _case_values(found: list, index, pixels: int) -> tuple:
    """(prompt text, image update) for held-out case `index`: the image decoded and bounded as training reads it, so
    the copy the page sends back with Compare gives the model the same pixels. `pixels` 0: a text run."""
    from studio.data.images import load_image

    vision = pixels > 0
    if index is None or not found or not 0 <= int(index) < len(found):
        return "", gr.update(value=None, visible=vision)
    text, files = found[int(index)]
    try:
        picture = load_image(files[0], "held-out example", pixels) if files and vision else None
    except StudioError:  # the picker only previews; an unreadable image is reported by evaluation and training
        picture = None
    return text, gr.update(value=picture, visible=vision)
