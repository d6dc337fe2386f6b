"""The Export tab: merge the adapter into the base (with the parity check), download the adapter or the merged
model, export GGUF / Ollama (with the library's round-trip check and its figures), build and show the run's report
page (studio.report), read the model card."""

from __future__ import annotations

import os
import re
import shutil
import threading
import zipfile
from pathlib import Path

import gradio as gr

from studio.errors import StudioError
from studio.export.exporter import export as library_export
from studio.export.formats import DEFAULT_QUANT, FORMATS, QUANTS, THRESHOLDS
from studio.report import write_report
from studio.training.rundir import ADAPTER, CARD, EXPORT, MERGE, merged_dir, read_json_or_empty
from studio.ui.access import check_name, safe_path
from studio.ui.context import Context, serve_folder, served
from studio.ui.errors import page_error, shows_errors
from studio.ui.tabs.compare import adapter_runs
from studio.ui.tabs.export_views import error_html, figures_html, files_html, history_html, human_size, recorded_exports, report_frame, status_html

RUN_PICKER = "Export tab: Run"
LARGE_BYTES = 2 * 2**30  # above this the page says the zip will take a while and shows where the folder is
STORED_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")  # already dense: zip them without compression


def folder_size(folder: Path) -> tuple[int, int, float]:
    """Total bytes, file count and newest modification time of the files in a folder."""
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files), max((p.stat().st_mtime for p in files), default=0.0)


def merged_dir_of(run_dir: str) -> Path:
    """The merged model folder of a run (wherever merge.json says it went), or a StudioError."""
    merged = merged_dir(run_dir)
    if merged is None:
        raise StudioError("this run has no merged model yet", where=str(run_dir), fix="press 'Merge into base' first")
    return merged


def merged_info(run_dir: str) -> str:
    """Where the merged model is and how big, as markdown (with a note when it is large)."""
    try:
        merged = merged_dir_of(run_dir)
    except StudioError:
        return ""
    size, count, _ = folder_size(merged)
    text = f"Merged model size: **{human_size(size)}** in {count} files."
    if size > LARGE_BYTES:
        text += (f"  \nThis is a large model: zipping and downloading {human_size(size)} takes a while (the zip is built once, in your workspace). "
                 f"You can also copy the folder `{merged}` directly, or load it with `from_pretrained`.")
    return text


def merged_zip(space: Path, run_dir: str) -> Path:
    """Zip the run's merged model into the user's workspace (exports/<run>-merged.zip), rebuilt only when the
    merged folder changed; written to a temp name and renamed, so a half-written zip is never served."""
    merged = merged_dir_of(run_dir)
    _, _, newest = folder_size(merged)
    target = safe_path(space / "exports", check_name(f"{Path(run_dir).name}-merged.zip"))
    if target.exists() and target.stat().st_mtime >= newest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for path in sorted(p for p in merged.rglob("*") if p.is_file()):
            kind = zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            archive.write(path, Path(merged.name) / path.relative_to(merged), compress_type=kind)
    os.replace(tmp, target)
    return target


def parity_text(result: dict) -> str:
    """The merge parity check as markdown."""
    verdict = "✓ passed" if result.get("passed") else "✗ failed"
    return (
        f"**Parity check {verdict}**: max |merged − adapter| logit difference {result['max_abs_diff']:.2e} "
        f"(relative {result['rel_diff']:.1e}, tolerance {result['tolerance']:.0e}) on {result['prompts']} prompts"
    )


def run_info(run_dir: str) -> tuple[str, str, str]:
    """Parity markdown (from merge.json, if merged), merged path, and the model card of a run."""
    run = Path(run_dir)
    parity, merged = "Not merged yet.", ""
    if (run / MERGE).exists():
        result = read_json_or_empty(run / MERGE)
        parity, merged = parity_text(result), result.get("merged_dir", "")
    card = card_markdown((run / CARD).read_text(encoding="utf-8")) if (run / CARD).exists() else "_No model card yet (training writes README.md when it finishes)._"
    return parity, merged, card


def card_markdown(text: str) -> str:
    """A model card for display: its YAML front matter (hub metadata) as a code block, then the body."""
    if text.startswith("---\n") and "\n---" in text[4:]:
        head, body = text[4:].split("\n---", 1)
        return f"```yaml\n{head.strip()}\n```\n{body.lstrip('-').lstrip()}"
    return text


def adapter_zip(run_dir: str) -> str:
    """Zip the run's adapter/ folder into a temp file Gradio can serve; return its path."""
    name = Path(run_dir).name + "-adapter"
    return shutil.make_archive(str(serve_folder() / name), "zip", root_dir=Path(run_dir) / ADAPTER)


def do_merge(run_dir: str) -> tuple[str, str]:
    """Merge and verify (studio.export.merge.merge); parity markdown and merged path."""
    from studio.export.merge import merge

    result = merge(run_dir)
    return parity_text(result.to_dict()), str(result.merged_dir)


# --- GGUF / Ollama export ---------------------------------------------------------------------------------
# The formats, precisions, default precision and thresholds all come from studio.export, so a precision the
# library learns shows up here without an edit.
FORMAT_LABELS = {"gguf": "GGUF (llama.cpp)", "ollama": "Ollama (GGUF + Modelfile)"}

# One export per run at a time: the library writes its temp file under a name made from the process id, which
# every thread of this server shares, and rewrites RUN_DIR/export.json; two exports of one run in parallel
# would clobber both. Exports of different runs (other users' runs) do not wait for each other.
_run_locks: dict[str, threading.Lock] = {}
_run_locks_guard = threading.Lock()


def _run_lock(run_dir: str) -> threading.Lock:
    with _run_locks_guard:
        return _run_locks.setdefault(str(Path(run_dir).resolve()), threading.Lock())


def format_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for the library's export formats, in its order."""
    return [(FORMAT_LABELS.get(f, f), f) for f in FORMATS]


def quant_info() -> str:
    """The round-trip thresholds per precision, as the quant dropdown's help text (from the library's table)."""
    parts = [f"{q}: top-1 ≥ {THRESHOLDS[q][0]}, mean KL ≤ {THRESHOLDS[q][1]}" for q in QUANTS if q in THRESHOLDS]
    return "Precision of the weight matrices (norms stay f32). The round trip must reach " + "; ".join(parts)


def export_target(space: Path, run_dir: str, fmt: str, quant: str) -> Path:
    """Where an export of the run goes inside the user's workspace: exports/<run>-<quant>.gguf for GGUF, the
    folder exports/<run>-ollama-<quant>/ (model.gguf + Modelfile) for Ollama. Names are checked like any file
    name the user gives, so the result never leaves the workspace."""
    if fmt not in FORMATS:
        raise StudioError(f"unknown export format {fmt!r}", where="Export tab: Format", fix=f"use one of {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise StudioError(f"unknown GGUF precision {quant!r}", where="Export tab: Precision", fix=f"use one of {', '.join(QUANTS)}")
    name = Path(run_dir).name
    leaf = f"{name}-{quant}.gguf" if fmt == "gguf" else f"{name}-ollama-{quant}"
    return safe_path(space / "exports", check_name(leaf))


def ollama_name(run_dir: str) -> str:
    """A model name `ollama create` accepts, from the run's folder name (lower case; other characters -> '-')."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", Path(run_dir).name.lower()).strip("-.")
    return name or "studio-model"


def run_export(ctx: Context, request, run_dir: str, fmt: str, quant: str, progress=None):
    """Export one of the user's runs with the library (merging first when needed) into the user's workspace.

    Refuses a run the user may not open. Returns the library's ExportResult; a failed round trip raises the
    library's StudioError (the file is then not written). `progress(fraction, desc)` is told each stage.
    """
    ctx.run_for(request, run_dir, RUN_PICKER)
    target = export_target(ctx.workspace(request), run_dir, fmt, quant)
    step = progress or (lambda *a, **k: None)
    with _run_lock(run_dir):
        if merged_dir(run_dir) is None:  # the library merges too; done here to say so
            step(0.05, desc="merging the adapter into the base (with its parity check)")
            do_merge(run_dir)
        step(0.3, desc=f"writing {quant} GGUF and comparing it with the merged model")
        return library_export(run_dir, fmt=fmt, quant=quant, out=target)


def report_view(ctx: Context, request, run_dir: str) -> tuple[str, str]:
    """Write the report of one of the user's runs (RUN_DIR/report.html); (the page in an iframe, a served copy to
    download). Refuses a run the user may not open."""
    ctx.run_for(request, run_dir, RUN_PICKER)
    report = write_report(run_dir)
    return report_frame(report.path.read_text(encoding="utf-8")), served(report.path)


def build(ctx: Context) -> dict:
    """Lay out the Export tab; return what the app refreshes on page load."""
    # allow_custom_value so API clients can name a run; every handler checks that the user may open it.
    run = gr.Dropdown(label="Run", choices=[], allow_custom_value=True, elem_id="export-run")
    with gr.Row():
        merge_btn = gr.Button("Merge into base", variant="primary", elem_id="merge")
        zip_btn = gr.Button("Download adapter (.zip)", elem_id="adapter-zip")
        merged_btn = gr.Button("Download merged model (.zip)", elem_id="merged-zip")
    parity = gr.Markdown(elem_id="parity")
    merged = gr.Textbox(label="Merged model folder", interactive=False, elem_id="merged-dir")
    size = gr.Markdown(elem_id="merged-size")
    with gr.Row():
        download = gr.File(label="Adapter", interactive=False, visible=False, elem_id="adapter-file")
        merged_download = gr.File(label="Merged model", interactive=False, visible=False, elem_id="merged-file")
    with gr.Accordion("GGUF / Ollama export (checked by a round trip)", open=True):
        with gr.Row():
            fmt = gr.Radio(format_choices(), value=FORMATS[0], label="Format", elem_id="export-format")
            quant = gr.Dropdown(list(QUANTS), value=DEFAULT_QUANT, label="Precision", info=quant_info(), elem_id="export-quant")
            export_btn = gr.Button("Export", variant="primary", elem_id="export-gguf")
        export_status = gr.HTML(elem_id="export-status")
        figures = gr.HTML(elem_id="export-figures")
        export_files = gr.File(label="Exported files", file_count="multiple", interactive=False, visible=False, elem_id="export-files")
        command = gr.Textbox(label="Create the Ollama model", interactive=False, visible=False, buttons=["copy"], elem_id="ollama-command")
        modelfile = gr.Code(label="Modelfile", language=None, interactive=False, visible=False, elem_id="export-modelfile")
        history = gr.HTML(elem_id="export-history")
    with gr.Accordion("Report: curves, base vs adapter, forgetting, samples, serving checks, provenance", open=True):
        report_btn = gr.Button("Report", elem_id="report")
        report_file = gr.File(label="Report page (report.html, self-contained)", interactive=False, visible=False, elem_id="report-file")
        report_page = gr.HTML(elem_id="report-page")
    with gr.Accordion("Model card (README.md)", open=True):
        card = gr.Markdown(elem_id="model-card")

    def refresh(request: gr.Request):
        runs = adapter_runs(ctx, request)
        return gr.update(choices=runs, value=runs[0] if runs else None)

    def on_run(run_dir, request: gr.Request):
        if not run_dir or not ctx.may_open(request, run_dir):
            return "", "", "", ""
        return (*run_info(run_dir), merged_info(run_dir))

    @shows_errors
    def on_merge(run_dir, request: gr.Request):
        ctx.run_for(request, run_dir, RUN_PICKER)
        return (*do_merge(run_dir), merged_info(run_dir))

    @shows_errors
    def on_zip(run_dir, request: gr.Request):
        ctx.run_for(request, run_dir, RUN_PICKER)
        return gr.update(value=adapter_zip(run_dir), visible=True)

    @shows_errors
    def on_merged_zip(run_dir, request: gr.Request):
        ctx.run_for(request, run_dir, RUN_PICKER)
        return gr.update(value=served(merged_zip(ctx.workspace(request), run_dir)), visible=True)

    @shows_errors
    def on_report(run_dir, request: gr.Request):
        frame, copy = report_view(ctx, request, run_dir)
        return frame, gr.update(value=copy, visible=True)

    def hidden():  # a fresh update each time: Gradio consumes the dicts it is given
        return gr.update(value=None, visible=False)

    def on_export_run(run_dir, request: gr.Request):
        """A newly picked run: its export history, and nothing of the previous run's exports or report."""
        shown = history_html(run_dir) if run_dir and ctx.may_open(request, run_dir) else ""
        return "", "", hidden(), hidden(), hidden(), shown, "", hidden()

    def on_export(run_dir, fmt_value, quant_value, request: gr.Request, progress=gr.Progress()):
        """Status, figures, files, `ollama create` command, Modelfile and history; a generator so the status
        line shows at once. It runs in Gradio's worker threads like the merge button, so only exports of the
        same run wait for each other (see _run_lock)."""
        mine = bool(run_dir) and ctx.may_open(request, run_dir)
        record_file = Path(run_dir) / EXPORT if mine else None
        before = record_file.stat().st_mtime_ns if record_file is not None and record_file.exists() else None
        if mine:  # a run that is not the user's is refused by run_export below, without a "working" flash first
            yield (status_html(f"Exporting {Path(run_dir).name} as {fmt_value} {quant_value}: writing the file and "
                               "comparing it with the merged model on held-out prompts (this can take a while)…"),
                   "", hidden(), hidden(), hidden(), gr.update())
        try:
            result = run_export(ctx, request, run_dir, fmt_value, quant_value, progress)
        except StudioError as exc:
            figures_shown = ""
            if record_file is not None and record_file.exists() and record_file.stat().st_mtime_ns != before:
                entry = recorded_exports(run_dir).get(f"{fmt_value}-{quant_value}")  # this attempt's figures
                figures_shown = figures_html(entry) if isinstance(entry, dict) else ""
            yield error_html(exc), figures_shown, hidden(), hidden(), hidden(), history_html(run_dir) if mine else ""
            raise page_error(exc) from None
        is_ollama = result.modelfile is not None
        yield (
            files_html(result, folder_hint=is_ollama),
            figures_html(result.to_dict()),
            gr.update(value=[served(p) for p in result.paths], visible=True),
            gr.update(value=f"ollama create {ollama_name(run_dir)} -f Modelfile", visible=True) if is_ollama else hidden(),
            gr.update(value=result.modelfile.read_text(encoding="utf-8"), visible=True) if is_ollama else hidden(),
            history_html(run_dir),
        )

    run.change(on_run, [run], [parity, merged, card, size], api_visibility="undocumented")
    run.change(on_export_run, [run], [export_status, figures, export_files, command, modelfile, history, report_page, report_file],
               api_visibility="undocumented")
    merge_btn.click(on_merge, [run], [parity, merged, size], api_name="merge")
    zip_btn.click(on_zip, [run], [download], api_name="adapter_zip")
    merged_btn.click(on_merged_zip, [run], [merged_download], api_name="merged_zip")
    export_btn.click(on_export, [run, fmt, quant], [export_status, figures, export_files, command, modelfile, history],
                     api_name="export", show_progress_on=[export_status])  # one progress/error badge, not one per output
    report_btn.click(on_report, [run], [report_page, report_file], api_name="report")
    return {"refresh": refresh, "outputs": [run]}
