"""Driving the served studio page in the real-browser tests: form fields by their dotted key, dropdown options,
tabs and downloads. Element ids come from the app itself (`field_id`), so no test spells them out again."""

from __future__ import annotations

from pathlib import Path

from studio.ui.tabs.recipe import field_id, section_id


def field(page, key: str):
    """The input of a recipe form field."""
    return page.locator(f"#{field_id(key)}").locator("input, textarea").first


def open_section(page, section: str) -> None:
    """Open a closed section of the recipe form (its accordion)."""
    page.locator(f"#{section_id(section)}").get_by_text(section, exact=True).first.click()


def set_field(page, key: str, value) -> None:
    """Type a value into a form field and leave it, so the form validates it."""
    box = field(page, key)
    box.fill(str(value))
    box.press("Tab")


def choose(page, dropdown, option: str) -> None:
    """Choose an option of a dropdown (a locator of its input)."""
    dropdown.click()
    page.get_by_role("option", name=option, exact=True).click()


def pick(page, key: str, option: str) -> None:
    """Choose an option of a dropdown form field."""
    choose(page, field(page, key), option)


def open_tab(page, name: str) -> None:
    from playwright.sync_api import expect

    tab = page.get_by_role("tab", name=name, exact=True)
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")


def use_model_dir(page, model_dir: Path) -> None:
    """Point model.name at a local model folder through the model picker, as a person does."""
    from playwright.sync_api import expect

    page.locator("#model-source").get_by_text("local directory", exact=True).click()
    page.locator("#model-source-text input, #model-source-text textarea").first.fill(str(model_dir))
    page.locator("#model-source-use").click()
    expect(field(page, "model.name")).to_have_value(str(Path(model_dir).resolve()))


def upload_data(page, path: Path, timeout: float) -> None:
    """Upload a dataset in the Data tab and use it in the recipe."""
    from playwright.sync_api import expect

    page.locator("#data-upload input[type=file]").set_input_files(str(path))
    page.wait_for_function("() => (document.querySelector('#data-path textarea, #data-path input') || {}).value.includes('/uploads/')", timeout=timeout)
    page.locator("#data-use").click()
    expect(field(page, "data.path")).to_have_value(page.locator("#data-path input, #data-path textarea").first.input_value())


def download(page, link_selector: str, target: Path) -> Path:
    """Click a file link and save what the browser downloads."""
    with page.expect_download(timeout=60_000) as info:
        page.locator(link_selector).first.click()
    info.value.save_as(target)
    return target


def points(plot_id: str) -> str:
    """JavaScript counting the points a plot draws: Gradio's native (Vega) plot puts one hover symbol on every point."""
    return f"() => document.querySelectorAll('#{plot_id} g.mark-symbol path').length"


def wait_for_run(page, dropdown_id: str, run_name: str, timeout: float) -> None:
    """Wait until a tab's run dropdown (`compare-run`, `export-run`) has selected the run named `run_name`."""
    page.wait_for_function(f"() => (document.querySelector('#{dropdown_id} input') || {{}}).value.endsWith('/runs/{run_name}')", timeout=timeout)


def compare_answers(page, timeout: float) -> None:
    """Press Compare and wait until both the base model's and the adapter's answers are shown."""
    from playwright.sync_api import expect

    page.locator("#compare-go").click()
    for side in ("#compare-base textarea", "#compare-adapter textarea"):
        expect(page.locator(side)).not_to_have_value("", timeout=timeout)


def merge_passes(page, timeout: float) -> None:
    """Press Merge in the Export tab and wait for the parity check to pass."""
    from playwright.sync_api import expect

    page.locator("#merge").click()
    expect(page.locator("#parity")).to_contain_text("Parity check ✓ passed", timeout=timeout)
