"""The real page in headless Chromium: the demo recipe is in the form, an invalid rank shows its error,
and every tab renders. Screenshots go to $STUDIO_TEST_ARTIFACTS (else the test's tmp folder) for a person to look at.

Uses Debian's /usr/bin/chromium with Playwright's Python package (never `playwright install`), through the
`chromium` fixture of tests/ui/conftest.py; skips only when that browser is absent.
"""

import os
import re
from pathlib import Path

import helpers
import pytest

pytestmark = helpers.requires_chromium


@pytest.fixture(scope="module")
def page(chromium, served_ui):
    """One page on the served UI, shared by the module's tests, which run on it one after another."""
    page = chromium.new_page()
    page.goto(served_ui, wait_until="domcontentloaded")
    return page


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
