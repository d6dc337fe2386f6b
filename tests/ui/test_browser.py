"""The real page in headless Chromium: the demo recipe is in the form, an invalid rank shows its error,
and every tab renders. Screenshots go to $STUDIO_TEST_ARTIFACTS (else the test's tmp folder) for a person to look at.

Uses Debian's /usr/bin/chromium with Playwright's Python package (never `playwright install`); skips only
when that browser is absent.
"""

import os
import re
import socket
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from studio.ui.app import launch

    port = free_port()
    app = launch(port=port, home=tmp_path_factory.mktemp("ui-home"), block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()
    app.studio_context.queue.close()


@pytest.fixture(scope="module")
def page(served, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), args=FLAGS, headless=True, viewport={"width": 1280, "height": 800}
        )
        page = context.new_page()
        page.goto(served, wait_until="domcontentloaded")
        yield page
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("STUDIO_TEST_ARTIFACTS") or tmp_path_factory.mktemp("screenshots")) / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_demo_recipe_is_loaded_and_valid(page, shots):
    from playwright.sync_api import expect

    expect(page.locator("#field-model-name textarea, #field-model-name input").first).to_have_value("bundled:smollm2-135m-instruct", timeout=30_000)
    expect(page.locator("#field-lora-rank input")).to_have_value("16")
    expect(page.locator("#field-train-max_steps textarea, #field-train-max_steps input").first).to_have_value("24")
    expect(page.locator("#recipe-status")).to_contain_text("✓ valid", timeout=30_000)
    expect(page.locator("#memory-panel")).to_contain_text("Peak", timeout=30_000)
    page.screenshot(path=str(shots / "recipe.png"), full_page=False)


def test_invalid_rank_shows_the_error(page, shots):
    from playwright.sync_api import expect

    rank = page.locator("#field-lora-rank input")
    rank.fill("0")
    rank.press("Tab")
    status = page.locator("#recipe-status")
    expect(status).to_contain_text("lora.rank", timeout=30_000)
    expect(status).to_contain_text("greater than or equal to 1")
    field = page.locator("#field-lora-rank")  # the message also sits under the field itself, in red
    expect(field).to_have_class(re.compile(r"\bfield-error\b"), timeout=30_000)
    expect(field.locator(".info-text")).to_contain_text("⚠ Input should be greater than or equal to 1 (got 0)")
    expect(page.locator("#field-lora-alpha")).not_to_have_class(re.compile(r"\bfield-error\b"))
    field.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "recipe-error.png"), full_page=False)
    rank.fill("8")
    rank.press("Tab")
    expect(status).to_contain_text("rank 8", timeout=30_000)
    expect(field).not_to_have_class(re.compile(r"\bfield-error\b"))
    expect(field.locator(".info-text")).to_contain_text("LoRA rank r")


def test_data_tab_renders_the_sample_as_training_sees_it(page, shots):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Data").click()
    page.locator("#inspect-data").click()
    sample = page.locator("#sample-view")
    expect(sample).to_contain_text("<|im_end|>", timeout=120_000)  # the EOS token is visible
    expect(sample.locator(".trained").first).to_be_visible()
    expect(page.get_by_text("max_length 256")).to_be_visible()
    page.screenshot(path=str(shots / "data-sample.png"), full_page=False)


@pytest.mark.parametrize("tab", ["Data", "Train", "Compare", "Export"])
def test_every_tab_renders(page, shots, tab):
    from playwright.sync_api import expect

    page.get_by_role("tab", name=tab).click()
    expect(page.get_by_role("tab", name=tab)).to_have_attribute("aria-selected", "true")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / f"{tab.lower()}.png"), full_page=False)
    assert (shots / f"{tab.lower()}.png").stat().st_size > 5_000
