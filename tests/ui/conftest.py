"""Fixtures the UI tests share: one real tiny training job through the queue (and one GRPO job), trained once per
session; and, for the tests that drive the real page, the served UI and a headless Chromium (one of each per module).
"""

from pathlib import Path

import helpers
import pytest

from studio.config.load import load_recipe
from studio.ui.context import Context
from studio.ui.jobs import JobQueue
from studio.ui.tabs import train as train_tab


@pytest.fixture(scope="session")
def ui_home(tmp_path_factory):
    return tmp_path_factory.mktemp("ui-home")


@pytest.fixture(scope="session")
def ctx(ui_home):
    return Context(home=ui_home, queue=JobQueue(ui_home, poll_s=0.2))


@pytest.fixture(scope="session")
def tiny_raw(tiny_llama_dir, tiny_data, tiny_test_data, tmp_path_factory):
    """The form's recipe data for a 2-step LoRA run on the tiny Llama, with validation and test data."""
    raw = helpers.recipe_dict(tiny_llama_dir, tiny_data, tmp_path_factory.mktemp("unused"), train={"max_steps": 2, "save_steps": 1, "eval_steps": 1})
    raw["data"].update({"val_split": 0.25, "test_path": str(tiny_test_data)})
    return load_recipe(raw).to_yaml_dict()


def _run_to_the_end(ctx, name: str, raw: dict):
    """Start a job the way the Train tab does and wait until it has finished (it must succeed)."""
    job_id = train_tab.start_job(ctx, None, name, raw)
    job = ctx.queue.wait(job_id, timeout=240)
    assert job.status == "done", Path(job.log_path).read_text()[-3000:]
    return job


@pytest.fixture(scope="session")
def finished_job(ctx, tiny_raw):
    """A real `python -m studio.cli train` subprocess started the way the Train tab starts it."""
    return _run_to_the_end(ctx, "tiny-run", tiny_raw)


@pytest.fixture(scope="session")
def grpo_prompts(tmp_path_factory) -> Path:
    """8 prompt rows for GRPO: `add 1 and 2` with its `answer` 3, the column numeric_answer reads."""
    rows = [{"prompt": f"add {a} and {b}", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (0, 7), (6, 2), (4, 4), (3, 3)]]
    return helpers.write_jsonl(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", rows)


@pytest.fixture(scope="session")
def grpo_raw(tiny_llama_dir, grpo_prompts, tmp_path_factory):
    """The form's recipe data for a 2-step GRPO run on the tiny Llama: numeric_answer, and length_target at weight
    0.5; a KL term (beta > 0), so that KL is logged; a sample of completions every step."""
    grpo = {"adapter": "lora", "num_generations": 2, "max_completion_length": 8, "log_completions_steps": 1, "log_completions_count": 4, "beta": 0.04,
            "rewards": [{"name": "numeric_answer"}, {"name": "length_target", "weight": 0.5, "args": {"target": 6}}]}
    raw = helpers.recipe_dict(tiny_llama_dir, grpo_prompts, tmp_path_factory.mktemp("unused"), method="grpo", grpo=grpo, train={"max_steps": 2, "save_steps": 2})
    raw["eval"] = {"metric": "numeric_answer", "max_new_tokens": 8}
    return load_recipe(raw).to_yaml_dict()


@pytest.fixture(scope="session")
def grpo_ctx(tmp_path_factory):
    """A home and queue of their own for the GRPO job, so the other tests' job lists stay as they expect."""
    home = tmp_path_factory.mktemp("grpo-ui-home")
    return Context(home=home, queue=JobQueue(home, poll_s=0.2))


@pytest.fixture(scope="session")
def finished_grpo_job(grpo_ctx, grpo_raw):
    """A real GRPO `studio train` subprocess started the way the Train tab starts it."""
    return _run_to_the_end(grpo_ctx, "tiny-grpo", grpo_raw)


@pytest.fixture(scope="module")
def served_ui(tmp_path_factory):
    """The studio UI served on a free 127.0.0.1 port with a fresh home folder, for one test module; its URL."""
    from studio.ui.app import launch

    port = helpers.free_port()
    app = launch(port=port, home=tmp_path_factory.mktemp("served-ui-home"), block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()
    app.studio_context.queue.close()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A headless Chromium BrowserContext for one test module: 1280x800, downloads accepted, a fresh profile.

    Skips when /usr/bin/chromium is absent; mark the module `pytestmark = helpers.requires_chromium` as well so
    that it skips before starting anything else. Open pages with `chromium.new_page()`.
    """
    if not helpers.CHROMIUM.exists():
        pytest.skip(helpers.NO_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = helpers.launch_chromium(pw, tmp_path_factory.mktemp("chromium-profile"),
                                          viewport={"width": 1280, "height": 800}, accept_downloads=True)
        yield context
        context.close()
