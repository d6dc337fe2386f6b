"""The Train tab's GPU picker: shown only with more than one visible GPU, its count validated on the server,
kept with the job in the queue (also in a database made before the column existed) and reused on resume.

The visible GPU count is faked by patching `train_tab.visible_gpus`; no job here runs."""

import sqlite3
import sys
from pathlib import Path

import gradio as gr
import pytest

from studio.config.load import load_recipe
from studio.config.yaml_text import dump_recipe
from studio.errors import StudioError
from studio.ui.app import build_app
from studio.ui.context import Context
from studio.ui.jobs import JobQueue, train_command
from studio.ui.tabs import train as train_tab


def fake_gpus(monkeypatch, n: int) -> None:
    monkeypatch.setattr(train_tab, "visible_gpus", lambda: n)


def picker(app: gr.Blocks):
    (found,) = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "train-gpus"]
    return found


def handler(app: gr.Blocks, name: str):
    (found,) = [f.fn for f in app.fns.values() if getattr(f.fn, "__name__", "") == name]
    return found


@pytest.fixture
def own_ctx(tmp_path):
    """A queue of its own, so that no other test's `wait()` launches the jobs queued here."""
    return Context(home=tmp_path / "home", queue=JobQueue(tmp_path / "home"))


@pytest.mark.parametrize("n", [0, 1])
def test_picker_hidden_without_several_gpus(monkeypatch, tmp_path, n):
    fake_gpus(monkeypatch, n)
    control = picker(build_app(tmp_path / "home"))
    assert control.visible is False and control.choices == []


def test_picker_offers_one_to_all_visible_gpus(monkeypatch, tmp_path):
    fake_gpus(monkeypatch, 4)
    control = picker(build_app(tmp_path / "home"))
    assert control.visible is True
    assert [value for _label, value in control.choices] == [1, 2, 3, 4]
    assert control.value == 1  # one GPU unless the user picks more: the run behaves as before


def test_command_gets_gpus_only_above_one(tmp_path):
    q = JobQueue(tmp_path / "home")
    recipe = str(tmp_path / "r.yaml")
    two = q.enqueue("ann", recipe, tmp_path / "runs" / "two", gpus=2)
    one = q.enqueue("ann", recipe, tmp_path / "runs" / "one", gpus=1)
    unset = q.enqueue("ann", recipe, tmp_path / "runs" / "unset")
    assert q.get(two.id).gpus == 2 and q.get(unset.id).gpus is None
    assert train_command(q.get(two.id))[1:] == ["-m", "studio.cli", "train", recipe, "--gpus", "2"]
    assert "--gpus" not in train_command(one) and "--gpus" not in train_command(unset)
    with pytest.raises(StudioError, match="at least 1"):
        q.enqueue("ann", recipe, tmp_path / "runs" / "zero", gpus=0)


OLD_SCHEMA = """CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, kind TEXT NOT NULL, recipe_path TEXT,
run_dir TEXT NOT NULL, status TEXT NOT NULL, exit_code INTEGER, pid INTEGER, log_path TEXT, created REAL NOT NULL, started REAL,
finished REAL, stop_requested REAL)"""


def test_database_of_an_earlier_version_is_brought_up_to_date_keeping_its_jobs(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with sqlite3.connect(home / "jobs.sqlite3") as db:
        db.execute(OLD_SCHEMA)
        db.execute("INSERT INTO jobs (user, kind, recipe_path, run_dir, status, exit_code, created) VALUES ('ann', 'train', 'r.yaml', 'runs/old', 'done', 0, 1.0)")
    queue = JobQueue(home)
    (old,) = queue.jobs()
    assert (old.user, old.status, old.gpus, old.token) == ("ann", "done", None, None)
    assert queue.enqueue("ann", "r.yaml", "runs/new", gpus=3).gpus == 3


def test_database_of_a_newer_version_is_refused_clearly_and_kept(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with sqlite3.connect(home / "jobs.sqlite3") as db:
        db.execute(OLD_SCHEMA.replace("stop_requested REAL)", "stop_requested REAL, priority_class TEXT)"))
        db.execute("INSERT INTO jobs (user, kind, recipe_path, run_dir, status, exit_code, created) VALUES ('ann', 'train', 'r.yaml', 'runs/old', 'done', 0, 1.0)")
    with pytest.raises(StudioError, match="another version of the studio") as info:
        JobQueue(home)
    assert info.value.where == str(home / "jobs.sqlite3") and "priority_class" in info.value.what and "move that file aside" in info.value.fix
    with sqlite3.connect(home / "jobs.sqlite3") as db:  # nothing was changed or lost
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
        assert "gpus" not in [row[1] for row in db.execute("PRAGMA table_info(jobs)")]


@pytest.mark.parametrize("value", [0, 5, -1, 2.5, "two", True])
def test_out_of_range_count_is_refused(monkeypatch, own_ctx, tiny_raw, value):
    fake_gpus(monkeypatch, 4)
    with pytest.raises(StudioError, match="GPU") as info:
        train_tab.start_job(own_ctx, None, "refused", tiny_raw, value)
    assert info.value.where == "Train tab: GPUs" and info.value.fix
    assert own_ctx.queue.jobs() == []


def test_hidden_picker_still_refuses_a_forged_count(monkeypatch, own_ctx, tiny_raw):
    fake_gpus(monkeypatch, 1)
    with pytest.raises(StudioError, match="2 GPUs asked for, but this machine has 1 visible"):
        train_tab.start_job(own_ctx, None, "forged", tiny_raw, 2)
    assert train_tab.start_job(own_ctx, None, "plain", tiny_raw, None)  # no count: as today
    assert own_ctx.queue.jobs()[0].gpus is None


def test_refusal_reaches_the_tab_as_an_error(monkeypatch, tmp_path, tiny_raw):
    fake_gpus(monkeypatch, 2)
    app = build_app(tmp_path / "home")
    with pytest.raises(gr.Error, match="3 GPUs asked for") as info:
        handler(app, "on_start")("ui-run", tiny_raw, 3, None)
    assert "fix: pick 1 to 2 GPUs" in str(info.value)
    with pytest.raises(gr.Error, match="3 GPUs asked for"):
        handler(app, "api_start_training")(dump_recipe(load_recipe(tiny_raw)), "api-run", 3, None)
    assert app.studio_context.queue.jobs() == []


def test_started_job_keeps_its_count_and_resume_reuses_it(monkeypatch, own_ctx, tiny_raw):
    fake_gpus(monkeypatch, 4)
    job = own_ctx.queue.get(train_tab.start_job(own_ctx, None, "wide", tiny_raw, 2))
    assert job.gpus == 2 and train_command(job)[-3:] == [job.recipe_path, "--gpus", "2"]
    assert "2 GPUs" in train_tab.job_view(own_ctx, None, job.id)[0]
    own_ctx.queue.stop(job.id)  # queued -> stopped, never run
    # What a started run leaves behind: its recipe (the real one also holds the distributed section).
    run_dir = job.run_dir
    Path(run_dir).mkdir(parents=True)
    (Path(run_dir) / "recipe.yaml").write_text(Path(job.recipe_path).read_text())
    resumed = train_tab.resume_job(own_ctx, None, job.id)
    assert (resumed.kind, resumed.gpus) == ("resume", 2)
    # The run directory's recipe carries the count, and `studio train --resume` refuses --gpus.
    assert train_command(resumed)[1:] == ["-m", "studio.cli", "train", "--resume", run_dir] and train_command(resumed)[0] == sys.executable
    own_ctx.queue.stop(resumed.id)
    fake_gpus(monkeypatch, 1)
    with pytest.raises(gr.Error, match="trained on 2 GPUs, but this machine has 1 visible"):
        train_tab.resume_job(own_ctx, None, job.id)


def test_one_gpu_picked_for_a_multi_process_recipe_is_refused(monkeypatch, own_ctx, tiny_raw):
    fake_gpus(monkeypatch, 4)
    ddp = {**tiny_raw, "distributed": {**tiny_raw.get("distributed", {}), "strategy": "ddp", "num_processes": 2}}
    with pytest.raises(StudioError, match="asks for 2 processes") as info:
        train_tab.start_job(own_ctx, None, "ddp-one", ddp, 1)
    assert "pick 2 GPUs" in info.value.fix
    job = own_ctx.queue.get(train_tab.start_job(own_ctx, None, "ddp-two", ddp, 2))
    assert train_command(job)[-2:] == ["--gpus", "2"]
