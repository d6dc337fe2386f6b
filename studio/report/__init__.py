"""The run report: one self-contained HTML page of what a run directory holds (`studio report RUN_DIR`).

Did it learn, did it forget, will it serve the same: the page answers from the files the other steps wrote,
and only reads them (it imports neither evaluation nor export, whose JSON it shows).

    contents.py        the run directory read into plain data, each section present or "not checked yet"
    plots.py           the curves (loss, learning rate, GRPO rewards) as PNG data URIs, drawn by matplotlib
    page.py            the page rendered with jinja2 (autoescaped: every value of the run is untrusted text), written
    page.html.jinja    the template: sections, tables, the page's own CSS; no script, no network resource
"""

from __future__ import annotations

from studio.report.page import Report, write_report

__all__ = ["Report", "write_report"]
