"""A workshop on one GPU: the class recipe's locks and the class's step cap hold for students (through the Train tab's
start_job and through the launched API, whatever the request says), teachers are exempt, the Teacher tab's handlers
refuse students, and its queue controls (move up, pause, cancel) act on the queue; students see their position and
when their job should start.

Jobs never train here: the queue runs a stand-in command that writes a finished run's metrics in a blink, so the
queue has a measured pace to time the waiting jobs with.
"""

import json
import sys
from types import SimpleNamespace

import gradio as gr
import helpers
import pytest
import yaml

from studio.config.load import load_recipe
from studio.config.shipped import DEMO_RECIPE, shipped_recipe
from studio.config.yaml_text import dump_recipe
from studio.errors import StudioError
from studio.training.eta import format_duration
from studio.ui import classroom
from studio.ui.accounts import Account, account_line, hash_password
from studio.ui.context import Context
from studio.ui.jobs import JobQueue
from studio.ui.tabs import recipe as recipe_tab
from studio.ui.tabs import teacher as teacher_tab
from studio.ui.tabs import train as train_tab

PASSWORDS = {"ann": "ann-pw-1234", "bob": "bob-pw-1234", "teach": "teach-pw-1234"}
ANN, BOB, TEACH = (SimpleNamespace(username=u) for u in ("ann", "bob", "teach"))
OTHER_MODEL = "HuggingFaceTB/SmolLM2-360M-Instruct"
# A finished run as training leaves it, as far as the queue's timing reads it: 10 steps in 20 s (2 s a step).
FAKE_RUN = ("import json, pathlib, sys; run = pathlib.Path(sys.argv[1]); run.mkdir(parents=True, exist_ok=True); "
            "(run / 'metrics.jsonl').write_text(json.dumps({'step': 10, 'train_loss': 1.0, 'time_s': 20.0}) + '\\n')")


def fake_train(job) -> list[str]:
    """The stand-in for `studio train`: writes the metrics of a finished 10-step run and exits."""
    return [sys.executable, "-c", FAKE_RUN, job.run_dir]


@pytest.fixture(scope="module")
def accounts() -> list[Account]:
    return [Account("ann", hash_password(PASSWORDS["ann"])), Account("bob", hash_password(PASSWORDS["bob"])),
            Account("teach", hash_password(PASSWORDS["teach"]), teacher=True)]


@pytest.fixture
def ctx(tmp_path, accounts) -> Context:
    """A shared studio (two students, one teacher) whose queue runs the stand-in command, one at a time."""
    queue = JobQueue(tmp_path, concurrency=1, command=fake_train, poll_s=0.05, estimate=lambda recipe_file: None)
    return Context(home=tmp_path, queue=queue, accounts=accounts)


@pytest.fixture(scope="module")
def demo() -> dict:
    """The demo recipe as the form's recipe state: bundled model, shipped data, 24 steps, max_length 256."""
    return load_recipe(shipped_recipe(DEMO_RECIPE)).to_yaml_dict()


def changed(raw: dict, key: str, value) -> dict:
    section, name = key.split(".")
    return {**raw, section: {**raw[section], name: value}}


def nothing_written(ctx: Context, user: str, run: str) -> bool:
    space = ctx.workspace(SimpleNamespace(username=user))
    return not (space / "recipes" / f"{run}.yaml").exists() and not (space / "runs" / run).exists() and ctx.queue.jobs(user) == []


# --- the class recipe ---------------------------------------------------------------------------------------

def test_class_recipe_saves_loads_and_refuses_bad_input(tmp_path, demo):
    assert classroom.load(tmp_path) is None and classroom.locked_values(tmp_path) == {}
    saved = classroom.save(tmp_path, demo, ["model.name", "train.max_steps"])
    assert saved.locked == {"model.name": "bundled:smollm2-135m-instruct", "train.max_steps": 24}
    again = classroom.load(tmp_path)
    assert again.recipe == saved.recipe and again.locked == saved.locked
    assert (tmp_path / "class" / "recipe.yaml").is_file() and json.loads((tmp_path / "class" / "locks.json").read_text())["locked"] == saved.locked
    assert classroom.save(tmp_path, dump_recipe(saved.recipe), ["data.max_length"]).locked == {"data.max_length": 256}  # YAML text too

    with pytest.raises(StudioError, match=r"\['lora.rank'\] cannot be locked") as error:
        classroom.save(tmp_path, demo, ["lora.rank"])
    assert error.value.fix and "model.name" in error.value.fix
    with pytest.raises(StudioError, match="lora.rank") as error:
        classroom.save(tmp_path, changed(demo, "lora.rank", 0), [])
    assert error.value.where.startswith("class recipe")
    with pytest.raises(StudioError, match="nothing to lock"):  # an epoch-based recipe has no step count to hold anyone to
        classroom.save(tmp_path, changed(demo, "train.max_steps", None), ["train.max_steps"])
    assert classroom.locked_values(tmp_path) == {"data.max_length": 256}, "a refused save must leave the saved locks alone"

    (tmp_path / "class" / "locks.json").write_text("{not json")
    with pytest.raises(StudioError, match="class locks cannot be read"):  # a damaged file refuses jobs rather than lifting the locks
        classroom.check_job(tmp_path, None, load_recipe(demo))
    classroom.clear(tmp_path)
    assert classroom.load(tmp_path) is None and classroom.locked_values(tmp_path) == {}


# --- start_job: the server-side check ----------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("model.name", OTHER_MODEL), ("train.max_steps", 500), ("data.max_length", 4096)])
def test_a_student_cannot_change_a_locked_value(ctx, demo, key, value):
    classroom.save(ctx.home, demo, list(classroom.LOCKABLE))
    with pytest.raises(StudioError, match=f"{key} is locked by your teacher") as error:
        train_tab.start_job(ctx, ANN, "sneaky", changed(demo, key, value))
    assert f"(key {key})" in error.value.where and error.value.fix
    assert nothing_written(ctx, "ann", "sneaky"), "a refused job must leave no recipe, run folder or job behind"
    assert ctx.queue.get(train_tab.start_job(ctx, ANN, "as-told", demo)).user == "ann"  # the class recipe itself is fine
    # The teacher is not held to the class's locks, and neither is the single local user of a studio without accounts.
    assert ctx.queue.get(train_tab.start_job(ctx, TEACH, "teacher-run", changed(demo, key, value))).user == "teach"
    local = Context(home=ctx.home / "local", queue=ctx.queue)
    classroom.save(local.home, demo, list(classroom.LOCKABLE))
    assert ctx.queue.get(train_tab.start_job(local, None, "local-run", changed(demo, key, value))).user == "local"


def test_the_class_step_cap(ctx, demo):
    ctx.queue.set_rules(max_steps=10)
    with pytest.raises(StudioError, match="above this class's limit of 10 steps") as error:
        train_tab.start_job(ctx, ANN, "long", demo)  # 24 steps
    assert "(key train.max_steps)" in error.value.where and "10 or fewer" in error.value.fix
    with pytest.raises(StudioError, match="trains by epochs"):  # no max_steps: it could run for ever
        train_tab.start_job(ctx, ANN, "epochs", changed(demo, "train.max_steps", None))
    assert nothing_written(ctx, "ann", "long") and nothing_written(ctx, "ann", "epochs")
    assert train_tab.start_job(ctx, ANN, "short", changed(demo, "train.max_steps", 10))
    assert train_tab.start_job(ctx, TEACH, "teacher-long", demo)  # teachers are exempt
    ctx.queue.set_rules(max_steps=None)
    assert train_tab.start_job(ctx, ANN, "long", demo), "a lifted cap no longer refuses"


def test_teachers_are_exempt_from_the_waiting_limit(ctx, demo):
    ctx.queue.set_rules(max_queued=1)
    train_tab.start_job(ctx, ANN, "one", demo)
    with pytest.raises(StudioError, match="jobs waiting, the most this class allows"):
        train_tab.start_job(ctx, ANN, "two", demo)
    for n in range(3):
        train_tab.start_job(ctx, TEACH, f"teacher-{n}", demo)
    assert len(ctx.queue.jobs("teach")) == 3


def test_the_students_form_starts_from_the_class_recipe_with_locked_fields(ctx, demo):
    with gr.Blocks():
        form = recipe_tab.build(ctx)
    specs = form["specs"]
    start = [component.value for component in form["inputs"]]
    keys = [s.key for s in specs]
    class_raw = changed(changed(demo, "model.name", OTHER_MODEL), "lora.rank", 4)
    classroom.save(ctx.home, class_raw, ["model.name", "train.max_steps"])

    status, _, _, _, raw, *fields = form["refresh"](ANN, *start)  # what app.load runs as a student's page opens
    assert "✓ valid" in status and raw["model"]["name"] == OTHER_MODEL and raw["lora"]["rank"] == 4
    by_key = dict(zip(keys, fields))
    assert by_key["model.name"]["value"] == OTHER_MODEL and by_key["model.name"]["interactive"] is False
    assert by_key["model.name"]["info"] == recipe_tab.LOCKED_INFO and by_key["train.max_steps"]["interactive"] is False
    assert by_key["lora.rank"]["value"] == 4 and "interactive" not in by_key["lora.rank"], "an unlocked field stays editable"
    assert "interactive" not in by_key["data.max_length"]

    _, _, _, _, raw, *fields = form["refresh"](TEACH, *start)  # the teacher's form is the normal one
    assert raw["model"]["name"] == "bundled:smollm2-135m-instruct" and "interactive" not in dict(zip(keys, fields))["model.name"]

    ctx.queue.set_rules(max_steps=10)  # the form says what the server would refuse, under the field
    status, *_ = form["refresh"](ANN, *start)
    assert "above this class's limit of 10 steps" in status


# --- the Teacher tab's functions ------------------------------------------------------------------------------

def test_teacher_handlers_refuse_a_student(ctx, demo):
    job = train_tab.start_job(ctx, BOB, "bobs", demo)
    calls = {
        "jobs_table": lambda r: teacher_tab.jobs_table(ctx, r), "job_choices": lambda r: teacher_tab.job_choices(ctx, r),
        "memory_frame": lambda r: teacher_tab.memory_frame(ctx, r), "queue_text": lambda r: teacher_tab.queue_text(ctx, r),
        "pause": lambda r: teacher_tab.pause(ctx, r, True), "promote": lambda r: teacher_tab.promote(ctx, r, job),
        "cancel": lambda r: teacher_tab.cancel(ctx, r, job), "save_rules": lambda r: teacher_tab.save_rules(ctx, r, 1, 1, 1, 1),
        "set_class_recipe": lambda r: teacher_tab.set_class_recipe(ctx, r, demo, ["model.name"]),
        "clear_class_recipe": lambda r: teacher_tab.clear_class_recipe(ctx, r), "class_recipe_view": lambda r: teacher_tab.class_recipe_view(ctx, r),
    }
    for call in calls.values():
        with pytest.raises(StudioError, match="teachers only"):
            call(ANN)
    # Nothing the refused calls asked for happened.
    assert ctx.queue.rules() == type(ctx.queue.rules())() and ctx.queue.get(job).status == "queued" and classroom.load(ctx.home) is None
    assert ctx.queue.get(job).promoted is None
    assert len(teacher_tab.jobs_table(ctx, TEACH)) == 1  # the same calls answer a teacher


def test_move_up_pause_and_cancel_from_the_teacher_tab(ctx, demo):
    first = train_tab.start_job(ctx, ANN, "ann-1", demo)
    second = train_tab.start_job(ctx, ANN, "ann-2", demo)
    bobs = train_tab.start_job(ctx, BOB, "bob-1", demo)
    assert [j.id for j in ctx.queue.order()] == [first, bobs, second]  # users take turns
    assert teacher_tab.promote(ctx, TEACH, second) == 1
    assert [c[1] for c in teacher_tab.job_choices(ctx, TEACH)] == [second, first, bobs]
    with pytest.raises(StudioError, match="invalid job id"):
        teacher_tab.promote(ctx, TEACH, "2; DROP TABLE jobs")

    teacher_tab.pause(ctx, TEACH, True)
    assert "paused" in teacher_tab.queue_text(ctx, TEACH) and "at most 1 at a time" in teacher_tab.queue_text(ctx, TEACH)
    ctx.queue.tick()
    assert [j.status for j in ctx.queue.jobs()] == ["queued"] * 3, "a paused queue starts nothing"
    teacher_tab.pause(ctx, TEACH, False)
    ctx.queue.tick()
    assert ctx.queue.get(second).status == "running", "the promoted job starts first"
    ctx.queue.wait(second, timeout=30)
    assert ctx.queue.get(bobs).status == "running", "then Bob's turn: Ann started last"

    assert teacher_tab.cancel(ctx, TEACH, first) == "stopped"  # a queued job is cancelled at once
    assert teacher_tab.cancel(ctx, TEACH, bobs) == "running"  # a running one is asked to stop (SIGINT: it saves a checkpoint)
    assert ctx.queue.wait(bobs, timeout=30).status == "stopped"
    table = teacher_tab.jobs_table(ctx, TEACH)
    for job in (first, bobs):
        row = table[table["job"] == job].iloc[0]
        assert row["status"] == "stopped" and row["note"] == "stopped by teacher teach"
    # Bob sees why his job stopped, in his own job table.
    assert train_tab.job_rows(ctx, BOB)[0][train_tab.JOB_COLUMNS.index("note")] == "stopped by teacher teach"
    with pytest.raises(StudioError, match="already ended"):
        teacher_tab.cancel(ctx, TEACH, bobs)


def test_class_rules_form_values(ctx):
    rules = teacher_tab.save_rules(ctx, TEACH, 2, 1.0, 50, 7.5)
    assert (rules.max_queued, rules.max_running, rules.max_steps, rules.max_minutes) == (2, 1, 50, 7.5)
    assert teacher_tab.rule_fields(rules) == [2, 1, 50, 7.5]
    assert teacher_tab.save_rules(ctx, TEACH, 0, None, "", 0).max_steps is None  # 0 and empty lift a limit
    for bad in (float("nan"), float("inf"), "ten", True, -1, 2.5):
        with pytest.raises(StudioError) as error:
            teacher_tab.save_rules(ctx, TEACH, None, None, bad, None)
        assert error.value.where and error.value.fix
    assert ctx.queue.rules().max_steps is None


def test_students_see_their_position_and_when_their_job_starts(ctx, demo):
    done = train_tab.start_job(ctx, TEACH, "measured", demo)
    assert train_tab.job_rows(ctx, TEACH)[0][train_tab.JOB_COLUMNS.index("starts in")] == "0s"
    assert ctx.queue.wait(done, timeout=30).status == "done"  # now the queue knows the pace: 2 s a step
    first = train_tab.start_job(ctx, ANN, "mine-1", demo)
    second = train_tab.start_job(ctx, ANN, "mine-2", demo)
    rows = {row[0]: row for row in train_tab.job_rows(ctx, ANN)}
    assert set(rows) == {first, second}, "a student sees only their own jobs"
    queue_col, eta_col = train_tab.JOB_COLUMNS.index("queue"), train_tab.JOB_COLUMNS.index("starts in")
    assert (rows[first][queue_col], rows[second][queue_col]) == (1, 2)
    wait_s = ctx.queue.etas()[second]
    assert wait_s >= 48  # the first job's 24 steps at 2 s a step, plus its loading
    assert rows[first][eta_col] == "0s" and rows[second][eta_col] == format_duration(wait_s)
    assert f"position 2 in the queue, starts in {format_duration(wait_s)}" in train_tab.job_view(ctx, ANN, second)[0]
    ctx.queue.set_rules(paused=True)
    assert train_tab.job_rows(ctx, ANN)[0][eta_col] == "unknown"  # a paused queue cannot say
    assert "position 2 in the queue, start time not known yet" in train_tab.job_view(ctx, ANN, second)[0]


# --- the launched studio: its API refuses what the form would ---------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory, accounts):
    """A launched shared studio (queue not started: the test ticks it with the stand-in command); its URL and app."""
    from studio.ui.app import launch

    folder = tmp_path_factory.mktemp("served-class")
    auth = folder / "users"
    auth.write_text("".join(account_line(a) + "\n" for a in accounts))
    port = helpers.free_port()
    app = launch(port=port, auth_file=auth, home=folder / "home", block=False, start_queue=False)
    app.studio_context.queue.command = fake_train
    yield f"http://127.0.0.1:{port}/", app
    app.close()
    app.studio_context.queue.close()


def client_for(url: str, user: str):
    from gradio_client import Client

    return Client(url, auth=(user, PASSWORDS[user]), verbose=False)


def test_the_api_enforces_the_class_and_refuses_students_teacher_endpoints(served, demo):
    url, app = served
    queue = app.studio_context.queue
    teacher, ann = client_for(url, "teach"), client_for(url, "ann")
    named = set(teacher.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/class_rules", "/set_class_rules", "/pause_queue", "/promote_job", "/cancel_job", "/class_recipe", "/set_class_recipe"} <= named

    demo_yaml = dump_recipe(load_recipe(demo))
    assert teacher.predict(demo_yaml, ["model.name", "train.max_steps"], api_name="/set_class_recipe")["locked"] == {
        "model.name": "bundled:smollm2-135m-instruct", "train.max_steps": 24}
    assert teacher.predict(0, 0, 30, 0, api_name="/set_class_rules")["max_steps"] == 30
    assert teacher.predict(api_name="/class_recipe")["locked"]["train.max_steps"] == 24

    # A student's request that changes a locked value is refused, however it is sent.
    for key, value in (("model.name", OTHER_MODEL), ("train.max_steps", 12)):
        with pytest.raises(Exception, match=f"{key} is locked by your teacher"):
            ann.predict(yaml.safe_dump(changed(demo, key, value)), "sneaky", api_name="/start_training")
    assert queue.jobs("ann") == []
    for endpoint, args in (("/class_rules", ()), ("/set_class_rules", (0, 0, 0, 0)), ("/pause_queue", (True,)), ("/promote_job", (1,)),
                           ("/cancel_job", (1,)), ("/class_recipe", ()), ("/set_class_recipe", (demo_yaml, [])), ):
        with pytest.raises(Exception, match="teachers only"):
            ann.predict(*args, api_name=endpoint)
    assert queue.rules().max_steps == 30 and not queue.rules().paused and classroom.locked_values(app.studio_context.home)

    # The teacher's own job, exempt from the locks, gives the queue its pace.
    measured = teacher.predict(yaml.safe_dump(changed(demo, "train.max_steps", 12)), "measured", api_name="/start_training")
    assert queue.wait(measured, timeout=30).status == "done"
    first = ann.predict(demo_yaml, "ann-1", api_name="/start_training")
    second = ann.predict(demo_yaml, "ann-2", api_name="/start_training")
    listed = {j["id"]: j for j in ann.predict(api_name="/list_jobs")}
    assert set(listed) == {first, second}
    assert (listed[first]["position"], listed[second]["position"]) == (1, 2)
    assert listed[first]["eta_s"] == 0 and listed[second]["eta_s"] >= 48 and listed[second]["eta"].endswith("s")
    status = ann.predict(second, api_name="/job_status")
    assert status["position"] == 2 and status["eta"] == listed[second]["eta"] and status["note"] is None

    assert teacher.predict(second, api_name="/promote_job") == 1
    assert ann.predict(second, api_name="/job_status")["position"] == 1
    assert teacher.predict(True, api_name="/pause_queue")["paused"] is True
    assert ann.predict(first, api_name="/job_status")["eta"] == "unknown"
    assert teacher.predict(first, api_name="/cancel_job") == "stopped"
    assert ann.predict(first, api_name="/job_status")["note"] == "stopped by teacher teach"
    teacher.predict(False, api_name="/pause_queue")
