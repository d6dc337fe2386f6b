"""The report's charts, drawn by matplotlib (Agg) into PNG bytes and inlined as data URIs: the page loads nothing.

matplotlib is imported inside `chart_images` only, so the commands that never draw (`studio --help`) do not pay
for it; each chart is its own Figure object (no pyplot state), so the UI's worker threads can draw at once.
"""

from __future__ import annotations

import base64
import io

# chart of contents.curves -> (title, y axis label)
CHARTS = {
    "loss": ("Loss", "loss"),
    "learning rate": ("Learning rate", "learning rate"),
    "reward": ("Reward (GRPO)", "mean reward"),
    "kl": ("KL to the reference model (GRPO)", "KL (nats)"),
}
SIZE_IN, DPI = (10.4, 3.2), 100  # 1040 x 320 pixels: the width of the page's column, drawn without scaling


def _label(text: str) -> str:
    # A series name comes from metrics.jsonl (untrusted): '$' would start matplotlib's mathtext and a leading '_'
    # would hide it from the legend.
    return "\u200b" + str(text).replace("$", r"\$")


def png_data_uri(figure) -> str:
    """A matplotlib Figure as a `data:image/png;base64,` URI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer, metadata={"Software": None})  # no version or web address in the file
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chart_images(curves: dict[str, dict[str, list[tuple[float, float]]]]) -> list[dict]:
    """One {id, title, alt, src} per chart of `curves` (contents.curves's), in CHARTS order, each a PNG data URI."""
    from matplotlib.figure import Figure

    images = []
    for chart, (title, ylabel) in CHARTS.items():
        series = curves.get(chart)
        if not series:
            continue
        figure = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
        axes = figure.add_subplot()
        for name, points in series.items():
            steps, values = zip(*sorted(points))
            # a single logged point draws no line: show it as a marker
            axes.plot(steps, values, marker="o" if len(points) < 12 else None, markersize=4, linewidth=1.6, label=_label(name))
        axes.set_title(title, fontsize=11, loc="left")
        axes.set_xlabel("step")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        if len(series) > 1 or chart == "reward":
            axes.legend(fontsize=8, frameon=False)
        alt = f"{title}: " + "; ".join(f"{name}, {len(points)} points" for name, points in series.items())
        images.append({"id": chart.replace(" ", "-"), "title": title, "alt": alt, "src": png_data_uri(figure)})
    return images
