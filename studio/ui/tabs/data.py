"""The Data tab: upload or pick a dataset, see its format and columns, a sample exactly as training sees it,
a histogram of token lengths against max_length, and warnings (empty rows, duplicates, rows over the limit).

Preference data (prompt/chosen/rejected) is shown as a pair: the prompt rendered with the chat template once,
then the chosen and rejected answers side by side, as preference training receives them.

Vision-language data (a recipe whose model has a vision tower) is encoded by the model's processor as training encodes
it: the sample's images as thumbnails beside its tokens, each run of image tokens one untrained mark (data_images.py).
An upload may be several files, e.g. a JSONL with a .zip of its images, which land in one folder (studio.ui.uploads).

Prompt data (GRPO) is shown as the model is given it: the first rows' prompts rendered with the chat template,
then a table of the columns the rewards see for those rows and what each of the recipe's rewards gives the
row's reference answer (a reward that cannot give the reference full marks is a reward worth checking).
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path

import gradio as gr
import yaml

from studio.config.validate import validate_recipe
from studio.data import IGNORE, Renderer, detect_format, normalize, read_rows, reference_of, render_pairs
from studio.data.formats import FORMATS
from studio.data.images import has_images, resolve_images
from studio.data.readers import FILE_SUFFIXES
from studio.data.vision import VisionRenderer, is_processor
from studio.errors import StudioError
from studio.training.rewards import check_columns, reference_scores
from studio.ui.access import check_data_path
from studio.ui.context import Context, recipe_data
from studio.ui.errors import shows_errors
from studio.ui.rewards import resolved_rewards
from studio.ui.tabs.data_images import IMAGE_LEGEND, image_token_mark, vision_sample_html
from studio.ui.uploads import ZIP_SUFFIX, store_files

MAX_ENCODED = 2000  # rows tokenized for the histogram
MAX_VISION_ENCODED = 100  # rows a vision-language model's processor encodes for it (a few processor calls per row)
PROMPT_ROWS = 4  # prompt rows shown from the sample row on, with their columns and reference scores
CELL_CHARS = 200  # a column value longer than this is cut in the table
UPLOAD_TYPES = [*FILE_SUFFIXES, ZIP_SUFFIX]  # every file type the readers take, and a zip of a dataset's images


@lru_cache(maxsize=4)
def _tokenizer(model_name: str, revision: str | None, chat_template: str | None, trust: bool):
    from studio.config.schema import Recipe
    from studio.modeling.loading import load_tokenizer
    from studio.modeling.source import resolve_model
    from studio.modeling.vision import is_vision_model, load_processor

    recipe = Recipe.model_validate({"model": {"name": model_name, "revision": revision, "trust_remote_code": trust}, "data": {"chat_template": chat_template}})
    model_dir = resolve_model(model_name, revision)
    return load_processor(model_dir, recipe) if is_vision_model(model_dir) else load_tokenizer(model_dir, recipe)


def tokenizer_for(recipe):
    """The recipe's tokenizer with its chat template, or a vision-language model's processor, as training loads it
    (cached; converts the bundled model once if needed)."""
    return _tokenizer(recipe.model.name, recipe.model.revision, recipe.data.chat_template, recipe.model.trust_remote_code)


def row_warnings(rows) -> list[str]:
    """Empty rows and exact duplicate rows, with where they are."""
    out, seen = [], {}
    for row in rows:
        if all(v in (None, "", [], {}) for v in row.data.values()):
            out.append(f"empty row at {row.where}")
        key = json.dumps(row.data, sort_keys=True, default=str)
        if key in seen:
            out.append(f"duplicate of {seen[key]} at {row.where}")
        seen.setdefault(key, row.where)
    return out


def token_html(tokenizer, encoded, image_ids: frozenset[int] | set[int] = frozenset()) -> str:
    """A sample's tokens as HTML: trained (loss) tokens highlighted, EOS tokens marked; a run of one of `image_ids`
    (a vision-language model's image tokens, never trained) shown once with its count, e.g. `<image ×64>`."""
    pieces, ids, at = [], encoded.input_ids, 0
    while at < len(ids):
        tid, label = ids[at], encoded.labels[at]
        text = tokenizer.decode([tid], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if tid in image_ids:
            run = next((n for n in range(at, len(ids)) if ids[n] != tid), len(ids)) - at
            pieces.append(image_token_mark(text, run))
            at += run
            continue
        cls = "eos" if tid == tokenizer.eos_token_id else ("trained" if label != IGNORE else "")
        shown = html.escape(text) if text else "·"
        pieces.append(f"<span class='{cls}'>{shown}</span>" if cls else shown)
        at += 1
    legend = ("<div style='margin-bottom:6px;font-size:0.85em'><span class='trained'>trained (loss) tokens</span> · <span class='eos'>EOS</span>"
              + (IMAGE_LEGEND if image_ids else "") + " · plain = context only</div>")
    return f"<div class='token-view'>{legend}{''.join(pieces)}</div>"


def pair_html(pair: dict, counts: dict) -> str:
    """A preference pair as HTML: the templated prompt once, then chosen (left) and rejected (right), each
    with its token count. Everything shown is escaped: it is the user's data."""

    def block(text: str) -> str:
        return f"<div class='token-view' style='border:1px solid #d0d5dd;border-radius:6px;padding:6px 8px'>{html.escape(text)}</div>"

    def column(key: str, title: str, color: str) -> str:
        head = f"<div style='font-weight:600;color:{color};margin-bottom:4px'>{title} · {counts[key]} tokens</div>"
        return f"<div class='pair-{key}' style='flex:1 1 0;min-width:0'>{head}{block(pair[key])}</div>"

    prompt = f"<div class='pair-prompt' style='margin-bottom:8px'><div style='font-weight:600;margin-bottom:4px'>prompt (chat template) · {counts['prompt']} tokens</div>{block(pair['prompt'])}</div>"
    columns = f"<div style='display:flex;gap:10px'>{column('chosen', 'chosen', '#067647')}{column('rejected', 'rejected', '#b42318')}</div>"
    return f"<div class='pair-view'>{prompt}{columns}</div>"


def pair_counts(tokenizer, pair: dict) -> dict:
    """Tokens of the prompt and of each answer as it continues the prompt (how the pair is tokenized for training)."""
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    prompt = count(pair["prompt"])
    return {"prompt": prompt, **{key: count(pair["prompt"] + pair[key]) - prompt for key in ("chosen", "rejected")}}


def histogram_svg(lengths: list[int], max_length: int, bins: int = 30) -> str:
    """An SVG histogram of token lengths with a dashed line at max_length (bars past it in red)."""
    if not lengths:
        return ""
    top = max(max(lengths), max_length) + 1
    width = max(1, -(-top // bins))
    counts = [0] * (-(-top // width))
    for n in lengths:
        counts[min(n // width, len(counts) - 1)] += 1
    w, h, pad = 640, 180, 24
    bar_w = (w - 2 * pad) / len(counts)
    peak = max(counts)
    bars = []
    for i, c in enumerate(counts):
        bh = (h - 2 * pad) * c / peak
        color = "#d92d20" if i * width >= max_length else "#2e90fa"
        bars.append(f"<rect x='{pad + i * bar_w:.1f}' y='{h - pad - bh:.1f}' width='{max(bar_w - 1, 1):.1f}' height='{bh:.1f}' fill='{color}'><title>{i * width}-{(i + 1) * width - 1}: {c}</title></rect>")
    x = pad + (w - 2 * pad) * max_length / (len(counts) * width)
    over = sum(n > max_length for n in lengths)
    return (
        f"<svg viewBox='0 0 {w} {h}' width='100%' style='max-width:{w}px' role='img' aria-label='token length histogram'>"
        + "".join(bars)
        + f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{pad - 8}' y2='{h - pad}' stroke='#d92d20' stroke-dasharray='4 3'/>"
        + (f"<text x='{x - 4:.1f}' y='{pad}' font-size='11' fill='#d92d20' text-anchor='end'>max_length {max_length}</text>" if x > w * 0.6
           else f"<text x='{x + 4:.1f}' y='{pad}' font-size='11' fill='#d92d20'>max_length {max_length}</text>")
        + f"<text x='{pad}' y='{h - 6}' font-size='11' fill='currentColor'>0</text><text x='{w - pad}' y='{h - 6}' font-size='11' text-anchor='end' fill='currentColor'>{len(counts) * width} tokens</text>"
        + f"<text x='{pad}' y='{pad - 10}' font-size='11' fill='currentColor'>{len(lengths)} rows, longest {max(lengths)}, {over} over the limit</text></svg>"
    )


def inspect(path: str, fmt: str, columns_text: str, raw: dict | None, sample: int) -> tuple[str, str, str, str]:
    """Summary markdown, warnings markdown, sample HTML and histogram SVG for a dataset under the form's recipe."""
    if raw is None:
        raise StudioError("the recipe has errors", where="Recipe tab", fix="fix the recipe first: the sample is rendered with its model and template")
    try:
        columns = yaml.safe_load(columns_text) if columns_text and columns_text.strip() else {}
    except yaml.YAMLError as exc:
        raise StudioError(f"data.columns is not a YAML mapping: {str(exc).splitlines()[0]}", where="data.columns", fix="write it as {instruction: question, output: answer}") from None
    data = {**raw["data"], "path": path, "format": fmt, "columns": columns or {}}
    recipe = validate_recipe({**raw, "data": data}, where="Data tab")
    rows = read_rows(path)
    columns_found = sorted({k for row in rows[:50] for k in row.data})
    warnings = row_warnings(rows)
    detected, examples = normalize(rows, recipe.data.format, recipe.data.columns, recipe.data.system_prompt)
    tokenizer = tokenizer_for(recipe)
    vision = is_processor(tokenizer)
    if has_images(examples) and not vision:
        raise StudioError("the data holds images but model.name is a text-only model", where=path,
                          fix="use a vision-language model (one whose folder has a processor, e.g. SmolVLM or Gemma 3), or data without images")
    examples = resolve_images(examples, path, recipe.data.image_max_pixels)  # absolute paths, every image checked as training checks it
    index = min(max(int(sample or 0), 0), len(examples) - 1)
    view = {"preference": _pair_view, "prompt": _prompt_view}.get(detected, _vision_view if vision else _sft_view)
    text_side = tokenizer.tokenizer if vision and view is not _vision_view else tokenizer  # text views take a processor's tokenizer
    lengths, sample_line, sample_html = view(text_side, recipe, examples, index, warnings)
    auto = detect_format(rows[0].data)
    summary = (
        f"**{len(rows)} rows** · format **{detected}**" + (f" (detected: {auto or 'none'})" if fmt == "auto" else f" (chosen; detected: {auto or 'none'})")
        + f" · columns: {', '.join(f'`{c}`' for c in columns_found)}  \n"
        + f"sample row {index} ({examples[index].where}): {sample_line}"
        + (f"  \nlengths computed on the first {MAX_ENCODED} rows" if len(examples) > MAX_ENCODED else "")
    )
    warn = "\n".join(f"- ⚠ {w}" for w in warnings[:20]) + (f"\n- … and {len(warnings) - 20} more" if len(warnings) > 20 else "")
    return summary, warn or "No warnings: no empty rows, no duplicates, nothing over the limit.", sample_html, histogram_svg(lengths, recipe.data.max_length)


def _over_limit(examples, lengths: list[int], max_length: int, warnings: list[str], outcome: str = "will be truncated") -> None:
    """Warn about the rows whose full length the limit will cut (or, for prompts, leave out)."""
    over = [ex.where for ex, n in zip(examples, lengths) if n > max_length]
    warnings += [f"{len(over)} row(s) longer than max_length {max_length} {outcome}, e.g. {', '.join(over[:3])}"] if over else []


def _sft_view(tokenizer, recipe, examples, index: int, warnings: list[str]) -> tuple[list[int], str, str]:
    """Supervised data: full token lengths, and the sample with its trained tokens highlighted."""
    spec = recipe.data
    # Full lengths (before truncation) so the histogram shows what the limit cuts.
    full = Renderer(tokenizer, 10**9, spec.train_on)
    lengths = [len(full.encode(ex).input_ids) for ex in examples[:MAX_ENCODED]]
    _over_limit(examples, lengths, spec.max_length, warnings)
    encoded = Renderer(tokenizer, spec.max_length, spec.train_on).encode(examples[index])
    if encoded.trained_tokens == 0:
        warnings.append(f"row {index} has no trained token left after truncation and would be dropped")
    line = f"{len(encoded.input_ids)} tokens, {encoded.trained_tokens} trained" + (" — **truncated**" if encoded.truncated else "")
    return lengths, line, token_html(tokenizer, encoded)


def _vision_view(processor, recipe, examples, index: int, warnings: list[str]) -> tuple[list[int], str, str]:
    """Supervised data for a vision-language model, encoded by its processor as training encodes it: full token
    lengths (images expanded), and the sample's images beside its tokens, image tokens marked as never trained."""
    spec = recipe.data
    full = VisionRenderer(processor, 10**9, spec.train_on, spec.image_max_pixels)
    lengths = [len(full.encode(ex).input_ids) for ex in examples[:MAX_VISION_ENCODED]]
    _over_limit(examples, lengths, spec.max_length, warnings)
    renderer = VisionRenderer(processor, spec.max_length, spec.train_on, spec.image_max_pixels)
    encoded = renderer.encode(examples[index])
    if encoded.trained_tokens == 0:
        warnings.append(f"row {index} has no trained token left after truncation and would be dropped")
    images = sum(t in renderer.image_ids for t in encoded.input_ids)
    line = (f"{len(encoded.input_ids)} tokens" + (f" ({images} for {len(encoded.images)} image(s))" if encoded.images else "") + f", {encoded.trained_tokens} trained"
            + (" — **truncated**" if encoded.truncated else "")
            + (f"  \nlengths computed on the first {MAX_VISION_ENCODED} rows" if len(examples) > MAX_VISION_ENCODED else ""))
    tokens = token_html(processor.tokenizer, encoded, renderer.image_ids)
    return lengths, line, vision_sample_html(encoded, tokens, Path(recipe.data.path).resolve().parent)


def _pair_view(tokenizer, recipe, examples, index: int, warnings: list[str]) -> tuple[list[int], str, str]:
    """Preference data: lengths of prompt plus the longer answer, and the sample pair side by side, rendered
    by the same code preference training uses."""
    spec = recipe.data
    renderer = Renderer(tokenizer, spec.max_length)
    counts = [pair_counts(tokenizer, pair) for pair in render_pairs(renderer, examples[:MAX_ENCODED])]
    lengths = [c["prompt"] + max(c["chosen"], c["rejected"]) for c in counts]
    _over_limit(examples, lengths, spec.max_length, warnings)
    pair = render_pairs(renderer, [examples[index]])[0]
    sample = counts[index] if index < len(counts) else pair_counts(tokenizer, pair)
    longest = sample["prompt"] + max(sample["chosen"], sample["rejected"])
    line = f"prompt {sample['prompt']} tokens, chosen {sample['chosen']}, rejected {sample['rejected']}" + (" — **truncated**" if longest > spec.max_length else "")
    return lengths, line, pair_html(pair, sample)


def _prompt_view(tokenizer, recipe, examples, index: int, warnings: list[str]) -> tuple[list[int], str, str]:
    """Prompt data (GRPO): templated prompt lengths (longer ones are left out of training), and from the sample row
    on, the prompts as the model is given them, the columns the rewards see and their scores of the reference."""
    renderer = Renderer(tokenizer, recipe.data.max_length)

    def tokens(example) -> int:
        return len(tokenizer(renderer.prompt_text(example.messages), add_special_tokens=False)["input_ids"])

    lengths = [tokens(ex) for ex in examples[:MAX_ENCODED]]
    _over_limit(examples, lengths, recipe.data.max_length, warnings, "once templated will be left out")
    if recipe.method != "grpo":
        warnings.append(f"prompt rows train with method grpo, but the recipe's method is {recipe.method}: set method: grpo in the Recipe tab")
    resolved = _prompt_rewards(recipe, examples, warnings)
    shown = examples[index : index + PROMPT_ROWS]
    rows = [(ex, renderer.prompt_text(ex.messages), tokens(ex), reference_scores(resolved, ex.columns or {})) for ex in shown]
    _, _, count, scores = rows[0]
    reference = reference_of(shown[0])
    line = (f"prompt {count} tokens (templated)" + (" — **over max_length: left out**" if count > recipe.data.max_length else "")
            + (f", reference `{reference}`" if reference is not None else ", no reference answer")
            + (" · rewards on the reference: " + ", ".join(f"{k} {_score(v)}" for k, v in scores.items()) if scores else ""))
    return lengths, line, prompt_html(rows, resolved)


def _prompt_rewards(recipe, examples, warnings: list[str]) -> list:
    """The recipe's rewards resolved as training resolves them, and every column they need checked row by row;
    what fails becomes a warning (training would stop on it), so the prompts are still shown."""
    try:
        resolved = resolved_rewards(recipe.grpo.rewards, recipe.grpo.reward_file)
    except StudioError as exc:
        warnings.append(f"grpo.rewards: {exc.what}" + (f" ({exc.where})" if exc.where else "") + (f"; {exc.fix}" if exc.fix else ""))
        return []
    try:
        check_columns(resolved, [ex.columns or {} for ex in examples], [ex.where for ex in examples])
    except StudioError as exc:
        warnings.append(f"{exc.what} at {exc.where}; {exc.fix}")
    return resolved


def _row_name(where: str) -> str:
    """A row's `file:line` without the file's folders (the summary above names the file)."""
    return Path(where).name


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _cell(value) -> str:
    """A column value as the table shows it: text as is, anything else as JSON, cut at CELL_CHARS."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "…"


def prompt_html(rows: list[tuple], resolved: list) -> str:
    """Prompt rows as HTML: each prompt rendered with the chat template (with its token count), then a table of the
    columns the rewards see (each headed by the rewards that read it) and each reward's score of the reference
    answer. `rows` holds (example, prompt text, tokens, reference scores). Everything is escaped: it is the user's data."""
    readers: dict[str, list[str]] = {}
    for reward, _, _ in resolved:
        for column in (*reward.columns, *reward.optional_columns):
            readers.setdefault(column, []).append(reward.name)
    columns = list(dict.fromkeys([key for ex, *_ in rows for key in (ex.columns or {})] + list(readers)))
    names = list(rows[0][3]) if rows else []
    prompts = "".join(
        f"<div class='prompt-row' style='margin-bottom:8px'><div style='font-weight:600;margin-bottom:4px'>{html.escape(_row_name(ex.where))} · prompt (chat template) · {count} tokens</div>"
        f"<div class='token-view' style='border:1px solid #d0d5dd;border-radius:6px;padding:6px 8px'>{html.escape(text)}</div></div>"
        for ex, text, count, _ in rows
    )
    head = "".join(f"<th>{html.escape(c)}" + (f"<br><small>read by {html.escape(', '.join(readers[c]))}</small>" if c in readers else "") + "</th>" for c in columns)
    head += "".join(f"<th>{html.escape(n)}<br><small>on the reference</small></th>" for n in names)
    body = "".join(
        "<tr><td>" + html.escape(_row_name(ex.where)) + "</td>"
        + "".join(f"<td>{html.escape(_cell((ex.columns or {})[c])) if c in (ex.columns or {}) else '<em>missing</em>'}</td>" for c in columns)
        + "".join(f"<td class='reference-score'>{_score(scores[n])}</td>" for n in names) + "</tr>"
        for ex, _, _, scores in rows
    )
    table = f"<table class='reward-columns'><thead><tr><th>row</th>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<div class='prompt-view'>{prompts}<div style='font-weight:600;margin:8px 0 4px'>columns the rewards see, and what each reward gives the reference answer</div>{table}</div>"


def store_upload(ctx: Context, request, files) -> str:
    """Store an upload (one path, or the paths uploaded together: a dataset with a .zip of its images) in the user's
    uploads folder, size-limited, safe names, zips extracted safely (studio.ui.uploads); return the dataset's path."""
    paths = [files] if isinstance(files, (str, Path)) else list(files or [])
    return str(store_files(ctx.workspace(request) / "uploads", [Path(p) for p in paths]))


def check_pick(ctx: Context, request, path: str) -> str:
    """A picked path; on a shared server it must lie in the user's workspace or the project's examples."""
    if not path:
        raise StudioError("no dataset chosen", where="Data tab", fix="upload a file or type a path")
    if ctx.shared:
        check_data_path(ctx.workspace(request), path, "data.path")
    return path


def build(ctx: Context, recipe: dict) -> None:
    """Lay out the Data tab."""
    widgets = recipe["widgets"]
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="Upload a dataset (+ a .zip of its images)", file_types=UPLOAD_TYPES, file_count="multiple", type="filepath",
                             height=110, elem_id="data-upload")
            path = gr.Textbox(label="data.path", value=widgets["data.path"].value, max_lines=1, elem_id="data-path", info="a file on this machine (an upload lands in your workspace)")
            with gr.Row():
                fmt = gr.Dropdown(choices=["auto", *FORMATS], value=widgets["data.format"].value, label="data.format", elem_id="data-format")
                sample = gr.Number(value=0, precision=0, label="Sample row", minimum=0)
            columns = gr.Textbox(label="data.columns", value=widgets["data.columns"].value, max_lines=1, info="map your columns to the format's names, e.g. {instruction: question, output: answer}")
            with gr.Row():
                show = gr.Button("Inspect", variant="primary", elem_id="inspect-data")
                apply = gr.Button("Use in recipe", elem_id="data-use")
            summary = gr.Markdown(elem_id="data-summary")
            warnings = gr.Markdown()
        with gr.Column(scale=2):
            sample_view = gr.HTML(label="Sample as training sees it", elem_id="sample-view")
            histogram = gr.HTML(label="Token lengths")

    @shows_errors
    def on_upload(files, request: gr.Request):
        return store_upload(ctx, request, files)

    @shows_errors
    def on_inspect(p, f, c, raw, s, request: gr.Request):
        return inspect(check_pick(ctx, request, p), f, c, ctx.with_reward_file(raw), s)

    def on_apply(p, f, c):
        return p, f, c

    for key, target in (("data.path", path), ("data.format", fmt), ("data.columns", columns)):
        widgets[key].change(lambda v: v, [widgets[key]], [target], api_visibility="undocumented", show_progress="hidden")
    upload.upload(on_upload, [upload], [path], api_visibility="undocumented")
    show.click(on_inspect, [path, fmt, columns, recipe["recipe_state"], sample], [summary, warnings, sample_view, histogram], api_visibility="undocumented")

    @shows_errors
    def api_inspect_data(path: str, recipe_yaml: str = "", data_format: str = "auto", columns: str = "", sample: int = 0, request: gr.Request = None) -> dict:
        """Inspect a dataset under a recipe given as YAML text: summary, warnings, the sample's HTML and the histogram SVG."""
        raw = ctx.with_reward_file(recipe_data(recipe_yaml, where="inspect_data"))
        summary, warns, sample_html, svg = inspect(check_pick(ctx, request, path), data_format, columns, raw, sample)
        return {"summary": summary, "warnings": warns, "sample_html": sample_html, "histogram_svg": svg}

    gr.api(api_inspect_data, api_name="inspect_data")
    apply.click(on_apply, [path, fmt, columns], [widgets["data.path"], widgets["data.format"], widgets["data.columns"]], api_visibility="undocumented")


__all__ = ["build", "histogram_svg", "inspect", "pair_counts", "pair_html", "prompt_html", "row_warnings", "store_upload", "token_html"]
