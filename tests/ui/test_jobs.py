"""The job queue: order, one at a time, stop, persistence across a re-open, running -> interrupted on restart."""

import os
import sys
import time

import pytest

from studio.errors import StudioError
from studio.ui.jobs import JobQueue, train_command

SLEEPER = "import sys, time; time.sleep(float(sys.argv[1])); sys.exit(int(sys.argv[2]))"


def fake_command(job):
    """A stand-in for `studio train`: recipe_path holds 'seconds:exit_code'; run_dir is on the command line."""
    seconds, code = str(job.recipe_path).split(":")
    return [sys.executable, "-c", SLEEPER, seconds, code, "studio-test", job.run_dir]


def make_queue(tmp_path, **kwargs):
    return JobQueue(tmp_path / "home", command=fake_command, poll_s=0.05, **kwargs)


def test_train_command_shapes(tmp_path):
    q = JobQueue(tmp_path / "home")
    train = q.enqueue("ann", tmp_path / "r.yaml", tmp_path / "runs" / "a")
    resume = q.enqueue("ann", None, tmp_path / "runs" / "b", kind="resume")
    assert train_command(train)[1:] == ["-m", "studio.cli", "train", str(tmp_path / "r.yaml")]
    assert train_command(resume)[-2:] == ["--resume", str(tmp_path / "runs" / "b")]
    assert train_command(train)[0] == sys.executable


def test_queue_order_and_one_at_a_time(tmp_path):
    q = make_queue(tmp_path)
    jobs = [q.enqueue("ann", "0.3:0", tmp_path / f"run{i}") for i in range(3)]
    assert [q.position(j.id) for j in jobs] == [1, 2, 3]
    q.tick()
    statuses = [q.get(j.id).status for j in jobs]
    assert statuses == ["running", "queued", "queued"]
    assert [q.position(j.id) for j in jobs] == [0, 1, 2]
    for j in jobs:
        assert q.wait(j.id, timeout=30).status == "done"
    done = [q.get(j.id) for j in jobs]
    assert all(d.exit_code == 0 for d in done)
    # Strictly one after another, in the order they were queued.
    for before, after in zip(done, done[1:]):
        assert before.started < after.started
        assert before.finished <= after.started


def test_concurrency_two_runs_two(tmp_path):
    q = make_queue(tmp_path, concurrency=2)
    jobs = [q.enqueue("ann", "1:0", tmp_path / f"run{i}") for i in range(3)]
    q.tick()
    assert [q.get(j.id).status for j in jobs] == ["running", "running", "queued"]
    for j in jobs:
        q.wait(j.id, timeout=30)


def test_failed_exit_code_recorded(tmp_path):
    q = make_queue(tmp_path)
    job = q.enqueue("ann", "0:3", tmp_path / "run")
    done = q.wait(job.id, timeout=30)
    assert (done.status, done.exit_code) == ("failed", 3)
    assert q.get(job.id).log_path.endswith(f"job-{job.id}.log")


def test_stop_running_and_queued(tmp_path):
    q = make_queue(tmp_path)
    running = q.enqueue("ann", "30:0", tmp_path / "a")
    waiting = q.enqueue("ann", "30:0", tmp_path / "b")
    q.tick()
    assert q.get(running.id).status == "running"
    assert q.stop(waiting.id).status == "stopped"
    q.stop(running.id)
    assert q.wait(running.id, timeout=20).status == "stopped"
    q.tick()
    assert q.get(waiting.id).status == "stopped"  # a stopped job never starts


def test_same_run_dir_twice_is_refused(tmp_path):
    q = make_queue(tmp_path)
    q.enqueue("ann", "1:0", tmp_path / "a")
    with pytest.raises(StudioError, match="already has job"):
        q.enqueue("bob", "1:0", tmp_path / "a")
    with pytest.raises(StudioError, match="unknown job kind"):
        q.enqueue("ann", "1:0", tmp_path / "c", kind="eval")


def test_persistence_across_reopen(tmp_path):
    q = make_queue(tmp_path)
    first = q.enqueue("ann", "0:0", tmp_path / "a")
    second = q.enqueue("bob", "0:0", tmp_path / "b")
    again = make_queue(tmp_path)
    assert [j.id for j in again.jobs()] == [second.id, first.id]
    assert [again.get(j.id).status for j in (first, second)] == ["queued", "queued"]
    assert [again.position(j.id) for j in (first, second)] == [1, 2]
    assert [j.user for j in again.jobs("bob")] == ["bob"]
    again.tick()
    assert again.get(first.id).status == "running"
    again.wait(second.id, timeout=30)
    mode = again._tx  # WAL mode is on
    with mode() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_running_job_of_dead_ui_becomes_interrupted(tmp_path):
    q = make_queue(tmp_path)
    job = q.enqueue("ann", "0:0", tmp_path / "a")
    queued = q.enqueue("ann", "0:0", tmp_path / "b")
    q.tick()
    q._procs[job.id].wait()  # the process ended, but the UI "died" before recording it
    assert q.get(job.id).status == "running"
    restarted = make_queue(tmp_path)
    assert restarted.get(job.id).status == "interrupted"
    assert restarted.get(queued.id).status == "queued"  # queued jobs stay queued


def test_running_job_outliving_the_ui_is_adopted(tmp_path):
    q = make_queue(tmp_path)
    job = q.enqueue("ann", "30:0", tmp_path / "a")
    q.tick()
    proc = q._procs[job.id]
    restarted = make_queue(tmp_path)
    assert restarted.get(job.id).status == "running"  # its process is still alive
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while restarted.get(job.id).status == "running" and time.time() < deadline:
        restarted.tick()
        time.sleep(0.05)
    assert restarted.get(job.id).status == "interrupted"  # no summary.json: it did not finish


def test_worker_thread_runs_jobs(tmp_path):
    q = make_queue(tmp_path).start()
    try:
        job = q.enqueue("ann", "0:0", tmp_path / "a")
        deadline = time.time() + 20
        while q.get(job.id).status != "done" and time.time() < deadline:
            time.sleep(0.05)
        assert q.get(job.id).status == "done"
    finally:
        q.close()


def _pretend_running(q, job_id, pid, pid_started, token):
    with q._tx() as db:
        db.execute("UPDATE jobs SET status='running', pid=?, started=?, pid_started=?, token=? WHERE id=?", (pid, time.time(), pid_started, token, job_id))


def test_a_stray_studio_process_is_never_adopted(tmp_path):
    """A live process whose command line says "studio" (and names the run) is not a job unless the record says so."""
    import subprocess

    from studio.ui.processes import TOKEN_ENV, started_at

    q = make_queue(tmp_path)
    jobs = [q.enqueue("ann", "30:0", tmp_path / name) for name in ("a", "b", "c")]
    stray = subprocess.Popen([sys.executable, "-c", SLEEPER, "30", "0", "studio", "train", str(tmp_path / "a")], env={**os.environ, TOKEN_ENV: "tok-b"})
    try:
        deadline = time.time() + 10
        while started_at(stray.pid) is None and time.time() < deadline:
            time.sleep(0.01)
        real_start = started_at(stray.pid)
        _pretend_running(q, jobs[0].id, stray.pid, None, None)  # no record at all (an earlier version's row)
        _pretend_running(q, jobs[1].id, stray.pid, real_start - 5.0, "tok-b")  # the id was reused: another start time
        _pretend_running(q, jobs[2].id, stray.pid, real_start, "tok-c")  # same process, but not the token handed to job c
        restarted = make_queue(tmp_path)
        assert [restarted.get(j.id).status for j in jobs] == ["interrupted"] * 3
        assert stray.poll() is None  # and the stray process was left alone
    finally:
        stray.kill()
        stray.wait()


def test_the_record_is_what_adopts(tmp_path):
    q = make_queue(tmp_path)
    job = q.enqueue("ann", "30:0", tmp_path / "a")
    q.tick()
    proc = q._procs[job.id]
    try:
        recorded = q.get(job.id)
        assert recorded.pid == proc.pid and recorded.token and abs(recorded.pid_started - recorded.started) < 5
        assert make_queue(tmp_path).get(job.id).status == "running"
    finally:
        proc.kill()
        proc.wait()
