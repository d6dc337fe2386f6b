"""The Export tab: merge the adapter into the base (with the parity check), download the adapter, read the model card."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import gradio as gr

from ..errors import StudioError
from .compare_tab import adapter_runs
from .context import Context
from .workspace import check_name, safe_path

LARGE_BYTES = 2 * 2**30  # above this the page says the zip will take a while and shows where the folder is
STORED_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")  # already dense: zip them without compression


def human_size(n: int) -> str:
    """Bytes as B / KiB / MiB / GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def folder_size(folder: Path) -> tuple[int, int, float]:
    """Total bytes, file count and newest modification time of the files in a folder."""
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files), max((p.stat().st_mtime for p in files), default=0.0)


def merged_dir_of(run_dir: str) -> Path:
    """The merged model folder of a run (from merge.json, else run_dir/merged), or a StudioError."""
    run = Path(run_dir)
    merged = run / "merged"
    if (run / "merge.json").exists():
        merged = Path(json.loads((run / "merge.json").read_text())["merged_dir"])
    if not (merged / "config.json").exists():
        raise StudioError("this run has no merged model yet", where=str(run), fix="press 'Merge into base' first")
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


def served(path: Path) -> str:
    """A path Gradio may serve for a workspace file: a hard link (else a copy) in a fresh temp folder, so the
    workspace itself never has to be opened to Gradio's file route."""
    folder = Path(tempfile.mkdtemp(prefix="studio-ui-"))
    link = folder / path.name
    try:
        os.link(path, link)
    except OSError:
        shutil.copyfile(path, link)
    return str(link)


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
    if (run / "merge.json").exists():
        result = json.loads((run / "merge.json").read_text())
        parity, merged = parity_text(result), result["merged_dir"]
    card = card_markdown((run / "README.md").read_text(encoding="utf-8")) if (run / "README.md").exists() else "_No model card yet (training writes README.md when it finishes)._"
    return parity, merged, card


def card_markdown(text: str) -> str:
    """A model card for display: its YAML front matter (hub metadata) as a code block, then the body."""
    if text.startswith("---\n") and "\n---" in text[4:]:
        head, body = text[4:].split("\n---", 1)
        return f"```yaml\n{head.strip()}\n```\n{body.lstrip('-').lstrip()}"
    return text


def adapter_zip(run_dir: str) -> str:
    """Zip the run's adapter/ folder into a temp file Gradio can serve; return its path."""
    folder = Path(tempfile.mkdtemp(prefix="studio-ui-"))
    name = Path(run_dir).name + "-adapter"
    return shutil.make_archive(str(folder / name), "zip", root_dir=Path(run_dir) / "adapter")


def do_merge(run_dir: str) -> tuple[str, str]:
    """Merge and verify (studio.merge.merge); parity markdown and merged path."""
    from ..merge import merge

    result = merge(run_dir)
    return parity_text(result.to_dict()), str(result.merged_dir)


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
    with gr.Accordion("Model card (README.md)", open=True):
        card = gr.Markdown(elem_id="model-card")

    def refresh(request: gr.Request):
        runs = adapter_runs(ctx, request)
        return gr.update(choices=runs, value=runs[0] if runs else None)

    def guard(request, run_dir):
        if not run_dir or not ctx.may_open(request, run_dir):
            raise gr.Error("pick one of your runs")

    def on_run(run_dir, request: gr.Request):
        if not run_dir or not ctx.may_open(request, run_dir):
            return "", "", "", ""
        return (*run_info(run_dir), merged_info(run_dir))

    def on_merge(run_dir, request: gr.Request):
        guard(request, run_dir)
        try:
            return (*do_merge(run_dir), merged_info(run_dir))
        except StudioError as exc:
            raise gr.Error(exc.format()) from None

    def on_zip(run_dir, request: gr.Request):
        guard(request, run_dir)
        return gr.update(value=adapter_zip(run_dir), visible=True)

    def on_merged_zip(run_dir, request: gr.Request):
        guard(request, run_dir)
        try:
            return gr.update(value=served(merged_zip(ctx.workspace(request), run_dir)), visible=True)
        except StudioError as exc:
            raise gr.Error(exc.format()) from None

    run.change(on_run, [run], [parity, merged, card, size], api_visibility="undocumented")
    merge_btn.click(on_merge, [run], [parity, merged, size], api_name="merge")
    zip_btn.click(on_zip, [run], [download], api_name="adapter_zip")
    merged_btn.click(on_merged_zip, [run], [merged_download], api_name="merged_zip")
    return {"refresh": refresh, "outputs": [run]}
