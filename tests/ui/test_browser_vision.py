"""A vision LoRA from the page alone, in headless Chromium, on a tiny random Idefics3 (SmolVLM's architecture): pick
the model, upload a JSONL with a zip of its pictures, see a sample's thumbnail beside its tokens, train, compare
base and adapter on a held-out picture, merge (parity on image prompts) and export the GGUF with its vision
projector. Screenshots go to $STUDIO_TEST_ARTIFACTS/ui-vision (else the test's tmp folder)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import helpers
import yaml
from tiny_vlms import SHAPES
from ui_pages import compare_answers, merge_passes, open_tab, pick, set_field, use_model_dir, wait_for_run

SLOW = 150_000  # ms: a training subprocess on two shared CPU cores

pytestmark = helpers.requires_chromium


def test_a_vision_lora_from_upload_to_exported_projector(served_ui, chromium, vlms, tmp_path):
    from playwright.sync_api import expect

    shots = Path(os.environ.get("STUDIO_TEST_ARTIFACTS") or tmp_path) / "ui-vision"
    shots.mkdir(parents=True, exist_ok=True)
    pictures = tmp_path / "imgs.zip"
    with zipfile.ZipFile(pictures, "w") as archive:
        for png in sorted((SHAPES.parent / "imgs").glob("*.png")):
            archive.write(png, f"imgs/{png.name}")

    page = chromium.new_page()
    page.set_default_timeout(30_000)
    page.goto(served_ui, wait_until="domcontentloaded")
    use_model_dir(page, vlms["idefics3"])
    pick(page, "method", "lora")
    for key, value in {"data.max_length": 96, "data.test_path": SHAPES.parent / "test.jsonl", "train.max_steps": 8, "train.save_steps": 4,
                       "train.batch_size": 4}.items():
        set_field(page, key, value)
    expect(page.locator("#recipe-status")).to_contain_text("✓ valid — lora on", timeout=SLOW)

    # Data: the JSONL and the zip of its pictures upload together and land in one folder of the workspace.
    open_tab(page, "Data")
    page.locator("#data-upload input[type=file]").set_input_files([str(SHAPES), str(pictures)])
    page.wait_for_function("() => (document.querySelector('#data-path textarea, #data-path input') || {}).value.endsWith('/train.jsonl')", timeout=SLOW)
    page.locator("#data-use").click()
    uploaded = page.locator("#data-path input, #data-path textarea").first.input_value()
    assert "/uploads/" in uploaded and (Path(uploaded).parent / "imgs" / "0001.png").exists()
    page.locator("#inspect-data").click()
    sample = page.locator("#sample-view")
    expect(sample.locator("img[src^='data:image/png;base64,']").first).to_be_visible(timeout=SLOW)
    expect(sample).to_contain_text("×4")  # the image's tokens, shown once
    expect(sample.locator(".trained").first).to_be_visible()
    page.screenshot(path=str(shots / "1-data.png"))

    open_tab(page, "Train")
    page.locator("#run-name input, #run-name textarea").first.fill("vision")
    page.locator("#start-training").click()
    expect(page.locator("#train-stats")).to_contain_text("done", timeout=SLOW)
    page.reload(wait_until="domcontentloaded")  # the run lists are filled when the page loads

    # Compare: the held-out picture is shown with its question; both models answer it.
    open_tab(page, "Compare")
    wait_for_run(page, "compare-run", "vision", SLOW)
    expect(page.locator("#compare-image img").first).to_be_visible(timeout=SLOW)
    expect(page.locator("#compare-prompt textarea")).not_to_have_value("", timeout=SLOW)
    compare_answers(page, SLOW)
    page.screenshot(path=str(shots / "2-compare.png"))

    # Export: merge (parity on image prompts), then the GGUF with its projector.
    open_tab(page, "Export")
    wait_for_run(page, "export-run", "vision", SLOW)
    merge_passes(page, SLOW)
    page.locator("#export-gguf").click()
    files = page.locator("#export-files")
    expect(files).to_contain_text("mmproj-", timeout=SLOW)
    page.screenshot(path=str(shots / "3-export.png"))
    run_dir = Path(page.locator("#export-run input").first.input_value())
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["data"]["path"] == uploaded  # it trained on the upload
    written = Path(json.loads((run_dir / "export.json").read_text())["gguf-f16"]["path"])
    assert written.exists() and written.with_name(f"mmproj-{written.name}").exists()
    page.close()
