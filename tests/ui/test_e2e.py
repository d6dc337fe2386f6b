"""End to end in headless Chromium, on a tiny model: pick the model, fill the recipe, upload a dataset and see
the sample, start training and watch the loss plot gain points, reload and find the same job, compare base and
adapter, merge (parity check passed) and download the adapter and the merged model as zips.

One screenshot per tab (1280x800) goes to $STUDIO_TEST_ARTIFACTS/ui-e2e (else the test's tmp folder) for a
person to look at. Uses Debian's /usr/bin/chromium with Playwright's Python package (never `playwright install`),
through the `chromium` fixture of tests/ui/conftest.py.
"""

import os
import zipfile
from pathlib import Path

import helpers
import pytest
from ui_pages import compare_answers, download, field, merge_passes, open_tab, pick, points, set_field, upload_data, use_model_dir, wait_for_run

SLOW = 150_000  # ms: a training subprocess on two shared CPU cores

pytestmark = helpers.requires_chromium

POINTS_JS = points("loss-plot")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("STUDIO_TEST_ARTIFACTS") or tmp_path_factory.mktemp("screenshots")) / "ui-e2e"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_tiny_model_from_recipe_to_merged_download(served_ui, chromium, shots, tiny_llama_dir, tiny_data, tiny_test_data, tmp_path):
    from playwright.sync_api import expect

    page = chromium.new_page()
    page.set_default_timeout(30_000)
    page.goto(served_ui, wait_until="domcontentloaded")
    expect(field(page, "model.name")).to_have_value("bundled:smollm2-135m-instruct")

    # Recipe: the model picker fills model.name with the tiny local model; then a short CPU LoRA run.
    use_model_dir(page, tiny_llama_dir)
    expect(page.locator("#model-source-help")).to_contain_text("model.name set to")
    pick(page, "method", "lora")
    for key, value in {"lora.rank": 8, "data.max_length": 64, "data.test_path": tiny_test_data, "train.max_steps": 6, "train.save_steps": 2, "train.batch_size": 4}.items():
        set_field(page, key, value)
    status = page.locator("#recipe-status")
    expect(status).to_contain_text("✓ valid — lora on", timeout=SLOW)
    expect(status).to_contain_text("rank 8, batch 4 × 64 tokens")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots / "1-recipe.png"))

    # Data: upload through the page, use it in the recipe, see the sample exactly as training sees it.
    open_tab(page, "Data")
    upload_data(page, tiny_data, SLOW)
    page.locator("#inspect-data").click()
    sample = page.locator("#sample-view")
    expect(sample).to_contain_text("<|im_end|>", timeout=SLOW)
    expect(sample.locator(".trained").first).to_be_visible()
    expect(page.locator("#data-summary")).to_contain_text("24 rows")
    page.screenshot(path=str(shots / "2-data.png"))

    # Train: start, and watch the loss plot gain points between two polls.
    open_tab(page, "Train")
    page.locator("#run-name input, #run-name textarea").first.fill("e2e")
    page.locator("#start-training").click()
    expect(page.locator("#train-message")).to_contain_text("Queued job #")
    stats = page.locator("#train-stats")
    expect(stats).to_contain_text("running", timeout=SLOW)
    before = page.evaluate(POINTS_JS)
    assert before < 6
    page.wait_for_function(f"() => ({POINTS_JS})() > {before}", timeout=SLOW, polling=500)
    assert page.evaluate(POINTS_JS) > before
    expect(stats).to_contain_text("done", timeout=SLOW)

    # Reload: the same job is selected, its status and its whole curve are redrawn from the run directory.
    page.reload(wait_until="domcontentloaded")
    open_tab(page, "Train")
    expect(stats).to_contain_text("done · step 6/6 (100%)", timeout=SLOW)
    expect(stats).to_contain_text("/runs/e2e")
    page.wait_for_function(f"() => ({POINTS_JS})() >= 6", timeout=SLOW, polling=500)
    page.wait_for_timeout(500)  # let the plot finish drawing before the screenshot (a mid-run one catches it redrawing)
    page.screenshot(path=str(shots / "3-train.png"))

    # Compare: the held-out prompt is pre-filled; both answers appear.
    open_tab(page, "Compare")
    wait_for_run(page, "compare-run", "e2e", SLOW)
    prompt = page.locator("#compare-prompt textarea")
    expect(prompt).to_have_value("add 1 and 1", timeout=SLOW)
    number = page.locator("#compare-max-new input[type=number]")
    number.fill("8")
    number.press("Enter")
    compare_answers(page, SLOW)
    page.screenshot(path=str(shots / "4-compare.png"))

    # Export: merge with the parity check, then download the adapter and the merged model.
    open_tab(page, "Export")
    wait_for_run(page, "export-run", "e2e", SLOW)
    merge_passes(page, SLOW)
    expect(page.locator("#merged-size")).to_contain_text("Merged model size")
    page.locator("#adapter-zip").click()
    with zipfile.ZipFile(download(page, "#adapter-file a", tmp_path / "adapter.zip")) as archive:
        assert "adapter_config.json" in archive.namelist() and "adapter_model.safetensors" in archive.namelist()
    page.locator("#merged-zip").click()
    with zipfile.ZipFile(download(page, "#merged-file a", tmp_path / "merged.zip")) as archive:
        names = archive.namelist()
        assert "merged/config.json" in names and "merged/model.safetensors" in names and archive.testzip() is None
    page.screenshot(path=str(shots / "5-export.png"))
    for name in ("1-recipe", "2-data", "3-train", "4-compare", "5-export"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
    page.close()
