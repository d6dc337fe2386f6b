"""`studio report`: every section of a checked run, "not checked yet" for a bare one, hostile text shown as text,
a page that loads nothing from anywhere, damaged files that do not break it, and the CLI (writes it, refuses bad input)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from report_runs import HOSTILE, SECTIONS, bare_run, checked_run

from studio.cli import main
from studio.errors import StudioError
from studio.report import write_report
from studio.training.rundir import REPORT


@pytest.fixture(scope="module")
def checked(tiny_llama_dir, tiny_data, tmp_path_factory):
    return checked_run(tiny_llama_dir, tiny_data, tmp_path_factory.mktemp("checked") / "run")


@pytest.fixture(scope="module")
def bare(tiny_llama_dir, tiny_data, tmp_path_factory):
    return bare_run(tiny_llama_dir, tiny_data, tmp_path_factory.mktemp("bare") / "run")


@pytest.fixture(scope="module")
def checked_page(checked):
    report = write_report(checked)
    assert report.path == checked / REPORT
    return report, report.path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def bare_page(bare):
    report = write_report(bare)
    return report, report.path.read_text(encoding="utf-8")


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, and the text of its <style> blocks."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.style, self._in_style = "", False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.style += data


def section(page: str, name: str) -> str:
    """The HTML of one <section id=name>."""
    return re.search(rf'<section id="{name}">(.*?)</section>', page, re.S).group(1)


def test_every_section_is_shown_for_a_checked_run(checked, checked_page):
    report, page = checked_page
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert report.sections == {"curves": ["learning rate", "loss"], "scores": "evaluated", "forgetting": "drifted", "samples": 2,
                               "consistency": "failed", "provenance": "recorded"}
    assert section(page, "curves").count('<img src="data:image/png;base64,') == 2  # loss (train + validation), learning rate
    scores = section(page, "scores")
    assert "exact_match (0-100)" in scores and ">25<" in scores and ">75<" in scores and "+50" in scores and "held-out loss" in scores
    assert "held-out perplexity" in scores and ">7.389<" in scores  # the base's, exp(2.0), beside the adapter's
    assert "lm-eval arc_easy: acc,none" in scores and ">0.3<" in scores  # `studio eval --tasks`
    forgetting = section(page, "forgetting")
    assert ">drifted<" in forgetting and "mean KL 0.2 nats/token" in forgetting and "×1.100" in forgetting and "70%" in forgetting
    assert "Capital of France?" in forgetting and "not checked yet" not in forgetting
    samples = section(page, "samples")
    assert "five-ish" in samples and "add 1 and 1" in samples and "not generated" in samples  # a sample evaluated without the base
    serving = section(page, "consistency")
    assert "merge (merge.json)" in serving and "export ollama-f16 (export.json)" in serving
    assert "7 conversations render to the same text" in serving and "stop tokens: Ollama Modelfile" in serving
    assert "+&lt;b&gt;nothing&lt;/b&gt;" in serving and "fix: export again" in serving and "logit parity" in serving and ">failed<" in serving
    provenance = section(page, "provenance")
    assert "f" * 64 in provenance and "train.examples" in provenance and "0123abcd" in provenance and "2.13.0" in provenance
    assert "lora:" in provenance and "rank: 8" in provenance and "steps" in provenance  # the recipe, the summary


def test_a_bare_run_says_not_checked_yet(bare, bare_page):
    report, page = bare_page
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert report.sections == {"curves": "no metrics logged yet", "scores": "not evaluated yet", "forgetting": "not checked yet", "samples": 0,
                               "consistency": "not checked yet", "provenance": "recipe only"}
    assert "<img" not in page and "No metrics logged yet" in section(page, "curves")
    assert f"Not evaluated yet: run <code>studio eval {bare}</code>" in section(page, "scores")
    assert f"Not checked yet: run <code>studio eval {bare} --forgetting</code>" in section(page, "forgetting")
    assert "Not checked yet" in section(page, "consistency") and f"studio merge {bare}" in section(page, "consistency")
    assert f"studio train --resume {bare}" in section(page, "provenance")  # no summary.json: training has not finished


def test_hostile_text_is_shown_as_text(checked_page):
    _, page = checked_page
    assert "<script" not in page.lower() and "onerror" not in [a for _, attrs in Tags(page).tags for a in attrs]
    escaped = HOSTILE.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
    assert page.count(escaped) == 3  # the sample's prompt, a forgetting answer, a serving check's detail
    assert "system_prompt: &lt;script&gt;window.__pwned = 1&lt;/script&gt;" in section(page, "provenance")  # the recipe (YAML folds it)
    assert [t for t, _ in Tags(page).tags if t in ("script", "iframe", "object", "embed", "link", "base", "form")] == []


@pytest.mark.parametrize("which", ["checked_page", "bare_page"])
def test_the_page_loads_nothing(which, request):
    report, page = request.getfixturevalue(which)
    tags = Tags(page)
    for tag, attrs in tags.tags:
        for name in ("src", "href", "srcset", "action", "poster", "data", "background"):
            value = (attrs.get(name) or "").strip()
            assert not value or value.startswith(("data:image/png;base64,", "#")), (tag, name, value[:80])
    assert "url(" not in tags.style and "@import" not in tags.style and "@font-face" not in tags.style
    policy = next(a["content"] for t, a in tags.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in policy and "img-src data:" in policy
    if which == "bare_page":  # no untrusted text of its own: not even a web address as text
        assert "http://" not in page and "https://" not in page


def test_a_grpo_run_shows_its_rewards_and_completions(tiny_llama_dir, tiny_data, tmp_path):
    run = checked_run(tiny_llama_dir, tiny_data, tmp_path / "grpo", grpo=True)
    report = write_report(run)
    page = report.path.read_text(encoding="utf-8")
    assert report.sections["curves"] == ["kl", "learning rate", "loss", "reward"] and report.sections["samples"] == 2 + 8
    assert section(page, "curves").count("<img") == 4 and 'id="chart-reward"' in page
    scores = section(page, "scores")
    assert "mean reward, weighted total" in scores and "mean reward: numeric_answer" in scores and "+0.5" in scores
    samples = section(page, "samples")
    assert "Newest completions sampled during training (GRPO)" in samples and "add 10 and 1" in samples and "add 2 and 1" not in samples
    assert "<script" not in page.lower()


def test_damaged_or_foreign_files_do_not_break_the_page(tiny_llama_dir, tiny_data, tmp_path):
    run = bare_run(tiny_llama_dir, tiny_data, tmp_path / "run")
    (run / "metrics.jsonl").write_text('{"step": 1, "train_loss": "high"}\n{"step": "two", "train_loss": 1.0}\n{"step": 3, "lr": NaN}\n[1, 2]\n')
    (run / "eval.json").write_text(json.dumps({"metric": 7, "base_score": "good", "adapter_score": None, "samples": "none",
                                               "forgetting": {"verdict": "kept", "kl_mean": "tiny", "answers": [1, {"question": None}]}}))
    (run / "merge.json").write_text(json.dumps({"merged_dir": "/m", "passed": True}))  # before the gate existed
    (run / "export.json").write_text("{not json")
    (run / "env.json").write_text("[1, 2]")
    report = write_report(run)
    page = report.path.read_text(encoding="utf-8")
    assert report.sections["forgetting"] == "kept" and report.sections["consistency"] == "not checked yet"
    assert report.sections["curves"] == "no metrics logged yet" and "<img" not in page
    assert "The serving-consistency gate is not checked yet for this merge" in page and "kl_mean" not in page
    assert '<td class="num">?</td>' in section(page, "scores")  # a score that is not a number: "?", and no change computed


def test_the_cli_writes_it_and_refuses_bad_input(checked, bare, tmp_path, capsys):
    assert main(["report", str(checked), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["path"] == str(checked / REPORT) and printed["sections"]["forgetting"] == "drifted"
    out = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(bare), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"report: {out}" in text and "forgetting   not checked yet" in text and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["report", str(bare), "--out", str(tmp_path)]) == 0 and (tmp_path / REPORT).exists()  # a folder: report.html in it
    capsys.readouterr()

    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "error: no run directory at" in err and "Traceback" not in err
    assert main(["report", str(tmp_path)]) == 2  # a folder without recipe.yaml
    assert "is not a run directory (no recipe.yaml)" in capsys.readouterr().err
    assert main(["report", str(bare), "--out", str(checked / "recipe.yaml" / "page.html")]) == 2
    assert "cannot write the report" in capsys.readouterr().err
    with pytest.raises(StudioError, match="no run directory"):
        write_report(tmp_path / "missing")


def test_help_imports_neither_matplotlib_nor_jinja2(tmp_path):
    """The charts' library loads when a report is drawn, not when the command line is parsed."""
    probe = ("import contextlib, io, sys\nfrom studio.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
             "    try:\n        main(['report', '--help'])\n    except SystemExit:\n        pass\n"
             "print(sorted(m for m in ('matplotlib', 'jinja2', 'torch') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
