"""What the Export tab shows, as HTML: the round-trip figures and serving-consistency checks of an export, the
files written, the export history of a run, errors and status lines, and the report page in a sandboxed frame.

Every value comes from a run directory or a user and is escaped here."""

from __future__ import annotations

import html
from pathlib import Path

from studio.errors import StudioError
from studio.training.rundir import EXPORT, read_json_or_empty


def human_size(n: int) -> str:
    """Bytes as B / KiB / MiB / GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def recorded_exports(run_dir: str) -> dict:
    """The run's export.json (format-quant -> figures of its latest export), or {} when there is none or it is unreadable."""
    return read_json_or_empty(Path(run_dir) / EXPORT)


def _esc(value) -> str:
    return html.escape(str(value))


BAD_STYLE = "color: #b42318; font-weight: 600"  # the red of the studio's error text (app.CSS .studio-error)


def _mark(ok: bool) -> str:
    return "<span class='studio-ok'>✓</span>" if ok else f"<span class='export-bad' style='{BAD_STYLE}'>✗</span>"


def figures_html(record: dict) -> str:
    """The round-trip figures of one export (ExportResult.to_dict() or an export.json entry) as a small table."""
    top1, kl, tok = record["top1_agreement"], record["mean_kl"], record["tokenizer_match"]
    rows = [
        ("Top-1 agreement", f"{top1:.4f}", f"≥ {record['min_top1']}", top1 >= record["min_top1"]),
        ("Mean KL (nats)", f"{kl:.3g}", f"≤ {record['max_kl']}", kl <= record["max_kl"]),
        ("Tokenizer", "identical" if tok else "differs", "identical", tok),
        ("Prompts (positions)", f"{record['prompts']} ({record['positions']})", "", None),
        ("Largest KL at one position", f"{record['max_kl_position']:.3g}", "", None),
    ]
    body = "".join(f"<tr><td>{a}</td><td>{_esc(b)}</td><td>{_esc(c)}</td><td>{'' if d is None else _mark(d)}</td></tr>" for a, b, c, d in rows)
    verdict = "<span class='studio-ok'>passed</span>" if record["passed"] else f"<span class='export-bad' style='{BAD_STYLE}'>FAILED</span>"
    notes = "".join(f"<br><small>note: {_esc(n)}</small>" for n in record.get("notes") or [])
    return (
        f"<div class='export-figures'><b>Round trip {_esc(record['format'])} {_esc(record['quant'])}: {verdict}</b> "
        f"— {_esc(record['prompts'])} prompts, {_esc(record['positions'])} positions, {_esc(record['seconds'])} s{notes}"
        f"<table><thead><tr><th>Figure</th><th>Value</th><th>Threshold</th><th></th></tr></thead><tbody>{body}</tbody></table>"
        f"{consistency_html(record.get('consistency'))}</div>"
    )


def consistency_html(gate: dict | None) -> str:
    """The serving-consistency gate of a merge or export (studio.export.consistency) as a table: each check, and
    for a failed one the file, the fix and the diff."""
    if not isinstance(gate, dict) or not isinstance(gate.get("checks"), list):
        return ""
    rows = []
    for check in gate["checks"]:
        detail = _esc(check.get("detail", ""))
        if not check.get("passed"):
            detail += "".join(f"<br><small>{label}: {_esc(check[key])}</small>" for label, key in (("file", "file"), ("fix", "fix")) if check.get(key))
            if check.get("diff"):
                detail += f"<pre style='white-space: pre-wrap'>{_esc(check['diff'])}</pre>"
        rows.append(f"<tr><td>{_esc(check.get('name', '?'))}</td><td>{_mark(bool(check.get('passed')))}</td><td>{detail}</td></tr>")
    failed = sum(not c.get("passed") for c in gate["checks"])
    verdict = "<span class='studio-ok'>passed</span>" if not failed else f"<span class='export-bad' style='{BAD_STYLE}'>{failed} FAILED</span>"
    notes = "".join(f"<br><small>note: {_esc(n)}</small>" for n in gate.get("notes") or [])
    return (f"<div class='serving-consistency'><b>Serving consistency: {verdict}</b> — the same conversations through training, "
            f"the merged model, the GGUF and the Modelfile{notes}<table><thead><tr><th>Check</th><th></th><th>Detail</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def files_html(result, folder_hint: bool) -> str:
    """The written files with their sizes (and, for Ollama, how to create the model) as HTML."""
    items = "".join(f"<li><code>{_esc(p.name)}</code> — {human_size(p.stat().st_size)}</li>" for p in result.paths)
    text = f"<div class='export-files'><span class='studio-ok'>✓ exported</span> to <code>{_esc(result.path.parent)}</code><ul>{items}</ul>"
    if folder_hint:
        text += ("Put <code>model.gguf</code> and <code>Modelfile</code> in one folder and run the command below there "
                 f"(on this machine they already are, in <code>{_esc(result.path.parent)}</code>).")
    return text + "</div>"


def history_html(run_dir: str) -> str:
    """The exports recorded in the run's export.json (latest per format and precision) as a table."""
    data = recorded_exports(run_dir)
    if not data:
        return "<p><i>No exports recorded for this run yet.</i></p>"
    rows = []
    for key, rec in sorted(data.items()):
        if not isinstance(rec, dict):
            continue
        try:
            path = Path(rec["path"]) if rec.get("path") else None
            where = "— (not written)" if path is None else f"<code>{_esc(path)}</code>" + (f" ({human_size(path.stat().st_size)})" if path.is_file() else " (no longer there)")
            rows.append(f"<tr><td>{_esc(key)}</td><td>{_mark(bool(rec['passed']))}</td><td>{rec['top1_agreement']:.4f}</td>"
                        f"<td>{rec['mean_kl']:.3g}</td><td>{_esc(rec['prompts'])}</td><td>{where}</td></tr>")
        except (KeyError, TypeError, ValueError):  # an entry some other version wrote: skip it rather than fail the tab
            continue
    head = "<tr><th>Export</th><th>Passed</th><th>Top-1</th><th>Mean KL</th><th>Prompts</th><th>File</th></tr>"
    return f"<div class='export-history'><b>Exports recorded in {EXPORT}</b><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"


def error_html(exc: StudioError) -> str:
    """A StudioError in the tab, red like the studio's other errors."""
    # padding-top: Gradio's "Error" badge sits at the top of the status box; keep it off the first line
    return f"<div class='studio-error' style='padding-top: 1.8em'><pre style='{BAD_STYLE}; white-space: pre-wrap'>{_esc(exc.format())}</pre></div>"


def status_html(text: str) -> str:
    """A one-line progress or status message."""
    return f"<p class='export-status'>{_esc(text)}</p>"


# Braces and dollars of the page (a chat template in the recipe, a prompt) as entities in the srcdoc attribute: the
# browser decodes them back, and Gradio's gr.HTML, which treats its value as a template, never sees one.
_SRCDOC_ENTITIES = str.maketrans({"{": "&#123;", "}": "&#125;", "$": "&#36;"})


def report_frame(page: str) -> str:
    """The report page shown inside the tab: an iframe whose srcdoc is the whole page, sandboxed (no script, no
    navigation out, an origin of its own), so the page's CSS stays its own and the run's text can do nothing."""
    srcdoc = html.escape(page, quote=True).translate(_SRCDOC_ENTITIES)
    return (f"<iframe id='report-frame' title='Run report' sandbox srcdoc=\"{srcdoc}\" "
            "style='width: 100%; height: 80vh; border: 1px solid #d0d7de; border-radius: 6px; background: #fff'></iframe>")
