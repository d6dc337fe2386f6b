"""The real page in headless Chromium: the demo recipe is in the form, an invalid rank shows its error,
every tab renders, and a GRPO recipe composed in the form (rewards picker included) trains on the tiny model
while the reward plot gains points and the completions table fills. Screenshots go to $STUDIO_TEST_ARTIFACTS
(else the test's tmp folder) for a person to look at.

Uses Debian's /usr/bin/chromium with Playwright's Python package (never `playwright install`), through the
`chromium` fixture of tests/ui/conftest.py; skips only when that browser is absent.
"""

import os
import re
from pathlib import Path

import helpers
import pytest
from ui_pages import choose, field, open_section, open_tab, pick, points, set_field, upload_data, use_model_dir

from studio.ui.tabs.recipe import field_id

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


def test_grpo_from_the_form_to_rewarded_completions(chromium, served_ui, shots, tiny_llama_dir, grpo_prompts):
    """Compose a GRPO recipe on the tiny model (the rewards picker adds a second reward), see the prompts and what
    the rewards give the reference answers, start it, and watch the reward plot gain points and the completions fill."""
    from playwright.sync_api import expect

    slow = 150_000  # ms: a training subprocess on two shared CPU cores
    page = chromium.new_page()
    page.set_default_timeout(30_000)
    page.goto(served_ui, wait_until="domcontentloaded")
    expect(field(page, "model.name")).to_have_value("bundled:smollm2-135m-instruct")
    use_model_dir(page, tiny_llama_dir)
    status = page.locator("#recipe-status")
    pick(page, "method", "grpo")
    expect(status).to_contain_text("grpo has no validation loss")  # the demo recipe holds out a validation split
    open_section(page, "grpo")
    pick(page, "grpo.adapter", "lora")
    for key, value in {"data.val_split": 0, "lora.rank": 8, "data.max_length": 64, "train.max_steps": 4, "train.batch_size": 4, "train.save_steps": 4,
                       "grpo.num_generations": 2, "grpo.max_completion_length": 8, "grpo.log_completions_steps": 1}.items():
        set_field(page, key, value)
    # The rewards picker adds length_target at weight 0.5 next to the default numeric_answer.
    choose(page, page.locator("#reward-choice input"), "length_target")
    expect(page.locator("#reward-help")).to_contain_text("target ± tolerance")
    weight = page.locator("#reward-weight input")
    weight.fill("0.5")
    weight.press("Tab")
    page.locator("#reward-add").click()
    table = page.locator(f"#{field_id('grpo.rewards')}")
    expect(table).to_contain_text("length_target")
    expect(status).to_contain_text("✓ valid — grpo on", timeout=slow)
    expect(page.locator("#recipe-yaml")).to_contain_text("weight: 0.5")
    page.screenshot(path=str(shots / "grpo-recipe.png"))

    # Data: the prompts as the model is given them, the columns the rewards see and their scores of the reference.
    open_tab(page, "Data")
    upload_data(page, grpo_prompts, slow)
    choose(page, page.locator("#data-format input"), "auto")
    page.locator("#inspect-data").click()
    sample = page.locator("#sample-view")
    expect(sample).to_contain_text("<|im_start|>assistant", timeout=slow)  # the generation prompt the template appends
    expect(sample).to_contain_text("read by numeric_answer")
    expect(sample.locator("td.reference-score").first).to_have_text("1")  # numeric_answer gives the reference full marks
    expect(page.locator("#data-summary")).to_contain_text("format prompt")
    page.locator("#data-use").click()
    page.screenshot(path=str(shots / "grpo-data.png"))

    # Train: the reward plot gains points as steps are logged, and the completions table fills.
    open_tab(page, "Train")
    page.locator("#run-name input, #run-name textarea").first.fill("grpo-e2e")
    page.locator("#start-training").click()
    expect(page.locator("#train-message")).to_contain_text("Queued job #")
    expect(page.locator("#grpo-view")).to_be_visible(timeout=slow)
    rewards = points("reward-plot")
    before = page.evaluate(rewards)
    page.wait_for_function(f"() => ({rewards})() > {before}", timeout=slow, polling=500)
    rows = page.locator("#completions-table [role=row][data-index]")  # the table's body rows (its header has no index)
    expect(rows.first).to_contain_text("add ", timeout=slow)
    expect(page.locator("#train-stats")).to_contain_text("done · step 4/4 (100%)", timeout=slow)
    # Every step logs the total and each reward's mean: 3 series x 4 steps; the table shows the newest step first.
    page.wait_for_function(f"() => ({rewards})() >= 12", timeout=slow, polling=500)
    expect(rows.first.get_by_role("gridcell").first).to_have_text("4")
    expect(page.locator("#completions-table")).to_contain_text("length_target")
    assert rows.count() >= 4
    page.wait_for_timeout(500)  # let the plots finish drawing before the screenshot
    page.screenshot(path=str(shots / "grpo-train.png"), full_page=True)
    page.close()
