"""The Export tab: merge the adapter into the base (with the parity check), download the adapter, read the model card."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from ..errors import StudioError
from .compare_tab import adapter_runs
from .context import Context


def parity_text(result: dict) -> str:
    """The merge parity check as markdown."""
    verdict = "✓ passed" if result.get("passed") else "✗ failed"
    return (
        f"**Parity check {verdict}**: max |merged − adapter| logit difference {result['max_abs_diff']:.2e} "
        f"(relative {result['rel_diff']:.1e}, tolerance {result['tolerance']:.0e}) on {result['prompts']} prompts  \n"
        f"merged model: `{result['merged_dir']}`"
    )


def run_info(run_dir: str) -> tuple[str, str, str]:
    """Parity markdown (from merge.json, if merged), merged path, and the model card of a run."""
    run = Path(run_dir)
    parity, merged = "Not merged yet.", ""
    if (run / "merge.json").exists():
        result = json.loads((run / "merge.json").read_text())
        parity, merged = parity_text(result), result["merged_dir"]
    card = (run / "README.md").read_text(encoding="utf-8") if (run / "README.md").exists() else "_No model card yet (training writes README.md when it finishes)._"
    return parity, merged, card


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
    run = gr.Dropdown(label="Run", choices=[])
    with gr.Row():
        merge_btn = gr.Button("Merge into base", variant="primary")
        zip_btn = gr.Button("Download adapter (.zip)")
    parity = gr.Markdown()
    merged = gr.Textbox(label="Merged model folder", interactive=False)
    download = gr.File(label="Adapter", interactive=False, visible=False)
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
            return "", "", ""
        return run_info(run_dir)

    def on_merge(run_dir, request: gr.Request):
        guard(request, run_dir)
        try:
            return do_merge(run_dir)
        except StudioError as exc:
            raise gr.Error(exc.format()) from None

    def on_zip(run_dir, request: gr.Request):
        guard(request, run_dir)
        return gr.update(value=adapter_zip(run_dir), visible=True)

    run.change(on_run, [run], [parity, merged, card], api_visibility="undocumented")
    merge_btn.click(on_merge, [run], [parity, merged], api_name="merge")
    zip_btn.click(on_zip, [run], [download], api_name="adapter_zip")
    return {"refresh": refresh, "outputs": [run]}
