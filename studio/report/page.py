"""The report page: contents and charts through the jinja2 template, written atomically into the run directory.

Autoescaping is on for the whole template: prompts, answers, reward names, diffs and recipe values are the run's
own text, so a `<script>` in a prompt is shown as text. The page carries a Content-Security-Policy that lets it
load nothing but its own data-URI images, in case anything ever slipped through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

from studio.errors import StudioError
from studio.report.contents import NOT_CHECKED, figure, gather, statuses
from studio.report.plots import DPI, SIZE_IN, chart_images
from studio.training.rundir import CARD, DATA, ENV, METRICS, RECIPE, REPORT, SUMMARY, write_atomic

TEMPLATE = "page.html.jinja"


@dataclass
class Report:
    """Where the page went and what each section found (a word or a count per section)."""

    path: Path
    run_dir: Path
    sections: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form (what `studio report --json` prints)."""
        return {"path": str(self.path), "run_dir": str(self.run_dir), "sections": self.sections}


def render_page(contents: dict, images: list[dict]) -> str:
    """The HTML page of gathered `contents` with its chart `images`, every value escaped."""
    from jinja2 import Environment

    from studio import __version__

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fig"] = figure
    template = env.from_string((files("studio.report") / TEMPLATE).read_text(encoding="utf-8"))
    return template.render(
        **contents, images=images, image_width=round(SIZE_IN[0] * DPI), image_height=round(SIZE_IN[1] * DPI),
        not_checked=NOT_CHECKED, version=__version__, written=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        files={"metrics": METRICS, "data": DATA, "env": ENV, "summary": SUMMARY, "recipe": RECIPE, "card": CARD},
    )


def _target(run_dir: Path, out: str | Path | None) -> Path:
    if out is None:
        return run_dir / REPORT
    out = Path(out)
    return out / REPORT if out.is_dir() else out


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Report:
    """Build the run's report page and write it (RUN_DIR/report.html, or `out`: a file, or a folder to put it in).

    Works on any run directory, finished or not: each section shows what its file holds, or what to run to fill it.
    """
    contents = gather(run_dir)
    run_dir = Path(contents["run_dir"])
    page = render_page(contents, chart_images(contents["curves"]))
    path = _target(run_dir, out)
    try:
        write_atomic(path, page)
    except OSError as exc:
        raise StudioError(f"cannot write the report: {exc.strerror or exc}", where=str(path), fix="pass a writable file path with --out") from None
    return Report(path, run_dir, statuses(contents))
