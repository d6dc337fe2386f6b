"""The Export tab's GGUF / Ollama export on the tiny trained run: the figures shown are the library's round trip
(as recorded in export.json), the files land in the user's workspace and are served from outside it, the Modelfile
carries the stop tokens, other users' runs and bogus names are refused, and a divergent export offers nothing."""

import html
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import helpers
import pytest

from studio.export import exporter as library
from studio.export.gguf import QUANTS
from studio.ui.accounts import Account
from studio.ui.app import build_app, launch
from studio.ui.tabs import export as export_tab

LOCAL = SimpleNamespace(username=None)  # what Gradio's request looks like to Context for the single local user


def handler(app, api_name: str):
    """The Python function behind one named endpoint of a built app."""
    return next(f.fn for f in app.fns.values() if f.api_name == api_name)


def run_export(app, run_dir, fmt, quant, request=LOCAL):
    """Drive the Export button's handler to its end; every yield, and the error it raised (or None)."""
    yields, error = [], None
    try:
        for out in handler(app, "export")(run_dir, fmt, quant, request, progress=lambda *a, **k: None):
            yields.append(out)
    except Exception as exc:  # gr.Error carries the StudioError text
        error = exc
    return yields, error


def shown_files(update) -> list[Path]:
    """The paths a gr.File update offers for download ([] when hidden)."""
    return [Path(p) for p in (update.get("value") or [])] if update.get("visible") else []


def cell(table_html: str, label: str) -> str:
    """The value cell of a row of the figures table."""
    return re.search(rf"<td>{re.escape(label)}</td><td>([^<]*)</td>", table_html).group(1)


@pytest.fixture(scope="module")
def app(ctx):
    """The studio over the session's home and queue (where `finished_job` trained), not served."""
    return build_app(home=ctx.home, queue=ctx.queue)


def test_choices_come_from_the_library():
    assert [value for _, value in export_tab.format_choices()] == list(library.FORMATS)
    assert export_tab.DEFAULT_QUANT in QUANTS and export_tab.DEFAULT_QUANT == "f16"
    assert all(q in export_tab.quant_info() for q in library.THRESHOLDS)


def test_gguf_export_shows_the_round_trip_figures_and_serves_the_file(app, ctx, finished_job):
    run_dir = finished_job.run_dir
    yields, error = run_export(app, run_dir, "gguf", "f16")
    assert error is None, error
    assert "Exporting tiny-run as gguf f16" in yields[0][0]  # the status line comes before the work
    status, figures, files, command, modelfile, history = yields[-1]
    recorded = json.loads((Path(run_dir) / "export.json").read_text())["gguf-f16"]
    target = ctx.workspace(None).resolve() / "exports" / "tiny-run-f16.gguf"
    assert recorded["passed"] is True and recorded["path"] == str(target) and target.is_file()
    # The table shows the library's own figures, not made-up ones.
    assert cell(figures, "Top-1 agreement") == f"{recorded['top1_agreement']:.4f}"
    assert cell(figures, "Mean KL (nats)") == f"{recorded['mean_kl']:.3g}"
    assert cell(figures, "Prompts (positions)") == f"{recorded['prompts']} ({recorded['positions']})" and recorded["prompts"] > 0
    assert cell(figures, "Largest KL at one position") == f"{recorded['max_kl_position']:.3g}"
    assert f"≥ {library.THRESHOLDS['f16'][0]}" in figures and "passed" in figures and "FAILED" not in figures
    # The serving-consistency gate's own checks, each with its verdict.
    gate = recorded["consistency"]
    assert gate["checks"] and "Serving consistency: <span class='studio-ok'>passed" in figures
    assert all(html.escape(c["name"]) in figures for c in gate["checks"])
    assert "tiny-run-f16.gguf" in status and export_tab.human_size(target.stat().st_size) in status
    [served] = shown_files(files)
    assert served.read_bytes() == target.read_bytes() and not served.is_relative_to(ctx.home)
    assert not command["visible"] and not modelfile["visible"]
    assert "gguf-f16" in history and str(target) in history
    assert export_tab.history_html(run_dir) == history  # the same table shows when the run is picked again
    assert handler(app, "on_export_run")(run_dir, LOCAL)[5] == history  # status, figures, files, command, modelfile, history, report


def test_ollama_export_shows_the_modelfile_with_its_stop_tokens(app, ctx, finished_job):
    yields, error = run_export(app, finished_job.run_dir, "ollama", "f16")
    assert error is None, error
    status, figures, files, command, modelfile, history = yields[-1]
    folder = ctx.workspace(None).resolve() / "exports" / "tiny-run-ollama-f16"
    text = (folder / "Modelfile").read_text()
    assert modelfile["visible"] and modelfile["value"] == text
    assert "FROM ./model.gguf" in text and f'PARAMETER stop "{helpers.IM_END}"' in text
    assert command["visible"] and command["value"] == "ollama create tiny-run -f Modelfile"
    assert sorted(p.name for p in shown_files(files)) == ["Modelfile", "model.gguf"]
    assert "Top-1 agreement" in figures and "ollama-f16" in history and "Modelfile" in status


def test_runs_that_are_not_yours_are_refused(app, ctx, finished_job, tmp_path):
    exports = ctx.workspace(None) / "exports"
    before = sorted(exports.iterdir()) if exports.exists() else []
    outside = tmp_path / "elsewhere"
    shutil.copytree(finished_job.run_dir, outside, ignore=shutil.ignore_patterns("merged", "export.json"))
    for bogus in (str(outside), "../../etc", "", str(Path(finished_job.run_dir).parent / "nope")):
        yields, error = run_export(app, bogus, "gguf", "f16")
        assert "is not one of your runs" in str(error) and "pick one of your runs" in str(error)
        status, _, files, *_ = yields[-1]
        assert "class='studio-error'" in status and "is not one of your runs" in status and not shown_files(files)
    assert not (outside / "merged").exists() and not (outside / "export.json").exists()
    assert (sorted(exports.iterdir()) if exports.exists() else []) == before


def test_another_users_run_is_refused(finished_job, tmp_path):
    shared = build_app(home=tmp_path, accounts=[Account("ann", "0" * 64), Account("bob", "0" * 64)])
    ann, bob = SimpleNamespace(username="ann"), SimpleNamespace(username="bob")
    anns_run = shared.studio_context.workspace(ann) / "runs" / "anns-run"
    shutil.copytree(finished_job.run_dir, anns_run, ignore=shutil.ignore_patterns("merged", "export.json"))
    _, error = run_export(shared, str(anns_run), "gguf", "f16", request=bob)
    assert "is not one of your runs" in str(error)
    assert handler(shared, "on_export_run")(str(anns_run), bob)[5] == ""  # not even the export history
    assert not (anns_run / "merged").exists() and not (tmp_path / "workspaces" / "bob" / "exports").exists()
    shared.studio_context.queue.close()


def test_an_unknown_precision_is_refused(app, finished_job):
    _, error = run_export(app, finished_job.run_dir, "gguf", "q2_k")
    assert "unknown GGUF precision" in str(error) and ", ".join(QUANTS) in str(error)


def test_a_divergent_export_shows_its_figures_as_a_failure_and_offers_nothing(app, ctx, finished_job, monkeypatch):
    monkeypatch.setitem(library.THRESHOLDS, "f32", (1.01, -1.0))  # no file can reach top-1 > 1 or KL < 0
    yields, error = run_export(app, finished_job.run_dir, "gguf", "f32")
    assert "export diverges from the merged model" in str(error)
    status, figures, files, command, modelfile, history = yields[-1]
    assert "class='studio-error'" in status and "export diverges" in status and "nothing was written" in status
    recorded = json.loads((Path(finished_job.run_dir) / "export.json").read_text())["gguf-f32"]
    assert recorded["passed"] is False and recorded["path"] is None
    assert "FAILED" in figures and cell(figures, "Top-1 agreement") == f"{recorded['top1_agreement']:.4f}"
    assert not shown_files(files) and not command["visible"] and not modelfile["visible"]
    assert not (ctx.workspace(None) / "exports" / "tiny-run-f32.gguf").exists()
    assert not list((ctx.workspace(None) / "exports").glob(".*tmp*"))  # no half-written file left either
    assert "gguf-f32" in history and "(not written)" in history


def test_the_export_endpoint_answers(finished_job, tmp_path):
    """gradio_client against a launched app: /export of a run in the user's workspace (merged on the way)."""
    from gradio_client import Client

    run_dir = tmp_path / "home" / "workspaces" / "local" / "runs" / "api-run"
    shutil.copytree(finished_job.run_dir, run_dir, ignore=shutil.ignore_patterns("merged", "merge.json", "export.json"))
    port = helpers.free_port()
    app = launch(port=port, home=tmp_path / "home", block=False, start_queue=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        status, figures, files, command, modelfile, history = client.predict(str(run_dir), "gguf", "f16", api_name="/export")
        target = tmp_path / "home" / "workspaces" / "local" / "exports" / "api-run-f16.gguf"
        recorded = json.loads((run_dir / "export.json").read_text())["gguf-f16"]
        assert recorded["passed"] and cell(figures, "Top-1 agreement") == f"{recorded['top1_agreement']:.4f}"
        [downloaded] = files["value"] if isinstance(files, dict) else files
        assert Path(downloaded).read_bytes() == target.read_bytes() and (run_dir / "merged" / "config.json").exists()
        with pytest.raises(Exception, match="is not one of your runs"):
            client.predict(finished_job.run_dir, "gguf", "f16", api_name="/export")
    finally:
        app.close()
        app.studio_context.queue.close()
