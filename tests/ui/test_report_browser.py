"""The report page in headless Chromium: opened as a file, every section heading is visible, every chart image
loaded, hostile text stayed text and nothing was fetched; and the Export tab's Report button shows the same page in
its sandboxed frame. Screenshots go to $STUDIO_TEST_ARTIFACTS (else the test's tmp folder) for a person to look at.

Uses Debian's /usr/bin/chromium with Playwright's Python package (never `playwright install`), through the
`chromium` fixture of tests/ui/conftest.py; skips only when that browser is absent.
"""

import os
from pathlib import Path

import helpers
import pytest
from report_runs import HOSTILE, SECTIONS, checked_run
from ui_pages import open_tab

from studio.report import write_report

pytestmark = helpers.requires_chromium

IMAGES_LOADED = "() => [...document.images].length > 0 && [...document.images].every(i => i.complete)"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("STUDIO_TEST_ARTIFACTS") or tmp_path_factory.mktemp("screenshots")) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_report_file_shows_every_section_and_its_charts(chromium, tiny_llama_dir, tiny_data, tmp_path, shots):
    from playwright.sync_api import expect

    report = write_report(checked_run(tiny_llama_dir, tiny_data, tmp_path / "run", grpo=True))
    page = chromium.new_page()
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(report.path.as_uri(), wait_until="load")
    for title in SECTIONS:
        expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
    expect(page.locator("section#curves img")).to_have_count(4)  # loss, learning rate, reward, KL
    page.wait_for_function(IMAGES_LOADED)
    sizes = page.evaluate("[...document.images].map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes and all(w > 0 and h > 0 for w, h in sizes), sizes
    expect(page.locator("section#samples pre").first).to_have_text(HOSTILE)  # the prompt, as text
    assert page.evaluate("window.__pwned") is None  # neither its script nor its image's onerror ran
    assert [u for u in fetched if not u.startswith(("file:", "data:"))] == []
    page.screenshot(path=str(shots / "report.png"), full_page=True)
    page.close()


def test_the_export_tab_report_button_shows_the_page(chromium, tiny_llama_dir, tiny_data, tmp_path, shots):
    from playwright.sync_api import expect

    from studio.ui.app import launch

    home = tmp_path / "home"
    run = checked_run(tiny_llama_dir, tiny_data, home / "workspaces" / "local" / "runs" / "reported")
    port = helpers.free_port()
    app = launch(port=port, home=home, block=False, start_queue=False)
    try:
        page = chromium.new_page()
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        open_tab(page, "Export")
        expect(page.locator("#export-run input")).to_have_value(str(run), timeout=30_000)  # the user's one run, picked on load
        expect(page.locator("#export-history")).to_contain_text("Exports recorded", timeout=30_000)  # the pick's handlers have run
        page.locator("#report").click()
        frame = page.frame_locator("#report-frame")
        for title in SECTIONS:
            expect(frame.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=60_000)
        expect(frame.locator("section#samples pre").first).to_have_text(HOSTILE)
        sizes = frame.locator("img").evaluate_all("images => images.map(i => i.complete ? i.naturalWidth : 0)")
        assert len(sizes) == 2 and all(sizes), sizes  # loss, learning rate
        expect(page.locator("#report-file")).to_be_visible()
        assert page.evaluate("window.__pwned") is None
        page.locator("#report-frame").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "export-tab-report.png"), full_page=False)
        page.close()
    finally:
        app.close()
        app.studio_context.queue.close()
