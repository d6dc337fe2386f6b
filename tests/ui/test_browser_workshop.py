"""A workshop in two real browsers side by side: a teacher and a student logged in to one shared studio.

The teacher makes the form's recipe (12 steps) the class recipe with the model and the step count locked; the
student's form opens on it with those fields read-only; the student queues a job and sees its position; the student
sees neither the Teacher tab nor the teacher's job; the teacher sees the student's job, moves it up and cancels it,
and the student sees why it stopped; the student's API call with a changed locked value is refused. A screenshot
of the Teacher tab goes to $STUDIO_TEST_ARTIFACTS (else the test's tmp folder).

The queue is not started, so nothing trains: the memory plot is given a few samples as the queue's worker records them.
Uses Debian's /usr/bin/chromium with Playwright's Python package (never `playwright install`).
"""

import os
import time
from pathlib import Path

import helpers
import pytest
import yaml
from ui_pages import choose, field, open_tab, points, set_field

from studio.config.load import load_recipe
from studio.config.shipped import DEMO_RECIPE, shipped_recipe
from studio.ui.accounts import Account, account_line, hash_password

pytestmark = helpers.requires_chromium

PASSWORDS = {"ann": "ann-pw-1234", "teach": "teach-pw-1234"}
SLOW = 60_000  # ms: a page of two hundred widgets on two shared CPU cores


@pytest.fixture(scope="module")
def workshop(tmp_path_factory):
    """A launched shared studio with student `ann` and teacher `teach`; the queue is not started. Its URL and app."""
    from studio.ui.app import launch

    folder = tmp_path_factory.mktemp("workshop")
    users = folder / "users"
    users.write_text(account_line(Account("ann", hash_password(PASSWORDS["ann"]))) + "\n"
                     + account_line(Account("teach", hash_password(PASSWORDS["teach"]), teacher=True)) + "\n")
    port = helpers.free_port()
    app = launch(port=port, auth_file=users, home=folder / "home", block=False, start_queue=False)
    yield f"http://127.0.0.1:{port}/", app
    app.close()
    app.studio_context.queue.close()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium, in which each user gets a browser context of their own (their own cookies)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(helpers.CHROMIUM), args=helpers.CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


def logged_in(browser, url: str, user: str):
    """A page of a fresh browser context logged in as `user`, on the studio."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    assert context.request.post(url + "login", form={"username": user, "password": PASSWORDS[user]}).ok
    page = context.new_page()
    page.set_default_timeout(SLOW)
    page.goto(url, wait_until="domcontentloaded")
    return page


def test_a_teacher_and_a_student_side_by_side(browser, workshop, tmp_path):
    from gradio_client import Client
    from playwright.sync_api import expect

    url, app = workshop
    queue = app.studio_context.queue
    shots = Path(os.environ.get("STUDIO_TEST_ARTIFACTS") or tmp_path) / "workshop"
    shots.mkdir(parents=True, exist_ok=True)

    # The teacher sets 12 steps in the form and makes it the class recipe, model and steps locked.
    teacher = logged_in(browser, url, "teach")
    expect(field(teacher, "model.name")).to_have_value("bundled:smollm2-135m-instruct")
    set_field(teacher, "train.max_steps", 12)
    expect(teacher.locator("#recipe-yaml")).to_contain_text("max_steps: 12")
    open_tab(teacher, "Teacher")
    expect(teacher.locator("#teacher-queue")).to_contain_text("How many run at once")
    expect(teacher.locator("#teacher-locks input[type=checkbox]:checked")).to_have_count(2)  # model.name and train.max_steps
    teacher.locator("#teacher-use-recipe").click()
    expect(teacher.locator("#teacher-class-locks")).to_contain_text("train.max_steps = 12")
    expect(teacher.locator("#teacher-class-locks")).to_contain_text("model.name = bundled:smollm2-135m-instruct")
    expect(teacher.locator("#teacher-class-yaml")).to_contain_text("name: bundled:smollm2-135m-instruct")  # the editor draws only its first lines
    open_tab(teacher, "Train")
    teacher.locator("#run-name input, #run-name textarea").first.fill("teacher-run")
    teacher.locator("#start-training").click()
    expect(teacher.locator("#train-message")).to_contain_text("position 1 in the queue")

    # The student's form opens on the class recipe, the locked fields read-only and saying why.
    student = logged_in(browser, url, "ann")
    expect(field(student, "train.max_steps")).to_have_value("12", timeout=SLOW)
    for key in ("model.name", "train.max_steps"):
        expect(field(student, key)).to_be_disabled()
        expect(student.locator(f"#field-{key.replace('.', '-')}")).to_contain_text("locked by your teacher")
    expect(field(student, "lora.rank")).to_be_enabled()  # the rest stays the student's to change
    expect(field(student, "data.max_length")).to_be_enabled()
    expect(student.locator("#recipe-status")).to_contain_text("✓ valid")
    expect(student.get_by_role("tab", name="Teacher")).to_have_count(0)
    expect(student.locator("#teacher-jobs")).not_to_be_visible()
    student.locator("#field-model-name").scroll_into_view_if_needed()
    student.screenshot(path=str(shots / "student-recipe.png"), full_page=False)

    # The student queues a job and sees where it stands; the teacher's job is not in the student's list.
    open_tab(student, "Train")
    student.locator("#run-name input, #run-name textarea").first.fill("ann-run")
    student.locator("#start-training").click()
    expect(student.locator("#train-message")).to_contain_text("position 2 in the queue, start time not known yet")  # nothing has finished yet
    jobs = student.locator("#train-jobs")
    expect(jobs).to_contain_text("ann-run")
    expect(student.locator("#train-stats")).to_contain_text("position 2 in the queue")
    expect(jobs).not_to_contain_text("teacher-run")
    ann_job = next(j for j in queue.jobs("ann"))

    # The teacher sees it, moves it up, and the student's view follows.
    open_tab(teacher, "Teacher")
    teacher_jobs = teacher.locator("#teacher-jobs")
    expect(teacher_jobs).to_contain_text("ann-run", timeout=SLOW)
    expect(teacher_jobs).to_contain_text("teacher-run")
    choose(teacher, teacher.locator("#teacher-job input"), f"#{ann_job.id} ann ann-run (queued)")
    teacher.locator("#teacher-promote").click()
    expect(teacher.locator("#teacher-message")).to_contain_text(f"Job #{ann_job.id} moved to position 1")
    expect(student.locator("#train-stats")).to_contain_text("position 1 in the queue")

    # The memory plot, as the worker's 5 s samples draw it (nothing trains here, so the samples are given).
    now = time.time()
    with queue._tx() as db:
        db.executemany("INSERT INTO usage (t, job_id, bytes, kind) VALUES (?, ?, ?, 'cpu')",
                       [(now - 5 * k, ann_job.id, (1.5 + 0.1 * k) * 2**30) for k in range(6)])
    teacher.wait_for_function(f"() => ({points('teacher-memory')})() >= 6", timeout=SLOW, polling=500)
    expect(teacher.locator("#teacher-memory")).to_contain_text("resident CPU")
    for section in ("#teacher-queue", "#teacher-jobs", "#teacher-memory", "#teacher-rules", "#teacher-class-recipe"):
        expect(teacher.locator(section).first).to_be_visible()  # a group carries its id on two nested boxes
    teacher.wait_for_timeout(500)  # let the plot finish drawing
    teacher.screenshot(path=str(shots / "teacher-tab.png"), full_page=True)
    assert (shots / "teacher-tab.png").stat().st_size > 20_000

    # The teacher cancels it; the student sees that, and why.
    teacher.locator("#teacher-cancel").click()
    expect(teacher.locator("#teacher-message")).to_contain_text(f"Job #{ann_job.id} cancelled")
    expect(jobs).to_contain_text("stopped by teacher teach")
    expect(student.locator("#train-stats")).to_contain_text("note: stopped by teacher teach")
    student.screenshot(path=str(shots / "student-train.png"), full_page=False)

    # The student's API call with a changed locked value is refused, whatever the form showed.
    client = Client(url, auth=("ann", PASSWORDS["ann"]), verbose=False)
    raw = load_recipe(shipped_recipe(DEMO_RECIPE)).to_yaml_dict()
    raw["model"]["name"], raw["train"]["max_steps"] = "HuggingFaceTB/SmolLM2-360M-Instruct", 12  # only the model differs
    with pytest.raises(Exception, match="model.name is locked by your teacher"):
        client.predict(yaml.safe_dump(raw), "sneaky", api_name="/start_training")
    assert [j.id for j in queue.jobs("ann")] == [ann_job.id]
    teacher.context.close()
    student.context.close()
