"""Fair share and the class rules: who starts next, per-user limits, a teacher's pause / move up / time cap, the ETA."""

import json
import sys
import time
from types import SimpleNamespace

import helpers
import pytest

from studio.errors import StudioError
from studio.ui.jobs import JobQueue
from studio.ui.schedule import Pace, fair_order, measured_pace, start_etas, startable

SLEEP = "import sys, time; time.sleep(float(sys.argv[1]))"


def row(id, user, promoted=None):
    return SimpleNamespace(id=id, user=user, promoted=promoted)


def test_fair_order_takes_turns_least_recent_user_first():
    queued = [row(1, "flood"), row(2, "flood"), row(3, "flood"), row(4, "ann"), row(5, "bob"), row(6, "ann")]
    # flood ran a job a minute ago; ann and bob never did: they go first, ann (older job) before bob.
    order = fair_order(queued, {"flood": 100.0})
    assert [j.id for j in order] == [4, 5, 1, 6, 2, 3]
    # With nobody having run, the first submitter leads each round.
    assert [j.id for j in fair_order(queued, {})] == [1, 4, 5, 2, 6, 3]
    # bob started most recently: he goes after flood (older start) and ann (never).
    assert [j.id for j in fair_order(queued, {"flood": 100.0, "bob": 200.0})] == [4, 1, 5, 6, 2, 3]


def test_promoted_jobs_go_first_latest_promotion_first():
    queued = [row(1, "ann"), row(2, "bob", promoted=10.0), row(3, "cy", promoted=20.0), row(4, "ann")]
    assert [j.id for j in fair_order(queued, {})] == [3, 2, 1, 4]


def test_running_limit_skips_a_user_at_their_limit():
    order = [row(1, "ann"), row(2, "bob"), row(3, "ann"), row(4, "bob")]
    assert [j.id for j in startable(order, {"ann": 1}, 1)] == [2]
    assert [j.id for j in startable(order, {}, 1)] == [1, 2]
    assert [j.id for j in startable(order, {"ann": 5}, None)] == [1, 2, 3, 4]


def test_etas_simulate_slots():
    order = [row(1, "a"), row(2, "b"), row(3, "c")]
    # One slot, the running job ends in 10 s, each queued job takes 5 s.
    assert start_etas(order, [10.0], 1, lambda j: 5.0) == {1: 10.0, 2: 15.0, 3: 20.0}
    # Two slots, one free now.
    assert start_etas(order, [10.0], 2, lambda j: 5.0) == {1: 0.0, 2: 5.0, 3: 10.0}
    # A job of unknown length: it can still be timed, nothing after it can.
    assert start_etas(order, [], 1, lambda j: None if j.id == 1 else 5.0) == {1: 0.0, 2: None, 3: None}


def test_measured_pace_is_the_median_of_finished_runs():
    runs = [(12.0, [{"step": 1, "train_loss": 1.0, "time_s": 1.0}, {"step": 4, "train_loss": 0.5, "time_s": 8.0}]),
            (30.0, [{"step": 10, "train_loss": 0.5, "time_s": 20.0}]),
            (5.0, [])]  # a run that never logged a step tells nothing
    pace = measured_pace(runs)
    assert pace == Pace(step_s=pytest.approx(2.0), startup_s=pytest.approx(7.0))
    assert measured_pace([(5.0, [])]) is None


def hold_command(job):
    """Jobs named hold-* wait until the file `release` next to their run directory exists; the others sleep 0.05 s."""
    name = job.run_dir.rsplit("/", 1)[-1]
    if name.startswith("hold"):
        return helpers.hold_until(job.run_dir.rsplit("/", 1)[0] + "/release")
    return [sys.executable, "-c", SLEEP, "0.05"]


def fixed_queue(tmp_path, concurrency=1, **kwargs):
    return JobQueue(tmp_path / "home", concurrency=concurrency, command=hold_command, poll_s=0.02, estimate=lambda path: None, **kwargs)


def drain(q, timeout=60):
    deadline = time.time() + timeout
    while any(j.status in ("queued", "running") for j in q.jobs()):
        assert time.time() < deadline, [(j.id, j.status) for j in q.jobs()]
        q.tick()
        time.sleep(0.02)


def test_a_flooder_waits_their_turn(tmp_path):
    q = fixed_queue(tmp_path)
    hold = q.enqueue("teacher", "r", tmp_path / "hold-0")
    q.tick()
    assert q.get(hold.id).status == "running"
    flood = [q.enqueue("flood", "r", tmp_path / f"flood-{k}") for k in range(5)]
    others = [q.enqueue(u, "r", tmp_path / f"{u}-0") for u in ("ann", "bob", "cy")]
    # Positions follow the fair order: flood's first (oldest job, never ran), then each other user, then flood again.
    assert [q.position(j.id) for j in [flood[0], *others, flood[1]]] == [1, 2, 3, 4, 5]
    (tmp_path / "release").touch()
    drain(q)
    start = {j.id: j.started for j in q.jobs()}
    assert all(start[o.id] < start[flood[1].id] for o in others), start


def test_per_user_limits(tmp_path):
    q = fixed_queue(tmp_path, concurrency=3, rules={"max_queued": 2, "max_running": 1})
    q.enqueue("ann", "r", tmp_path / "hold-a")
    q.enqueue("ann", "r", tmp_path / "hold-b")
    with pytest.raises(StudioError, match="2 jobs waiting") as info:
        q.enqueue("ann", "r", tmp_path / "hold-c")
    assert "stop one" in info.value.fix
    q.enqueue("ann", "r", tmp_path / "hold-c", exempt=True)  # a teacher's own job is not limited
    q.enqueue("bob", "r", tmp_path / "hold-d")
    q.tick()
    running = sorted(j.user for j in q.jobs() if j.status == "running")
    assert running == ["ann", "bob"]  # three slots, but ann may run one job at a time
    assert q.rules().max_running == 1 and q.rules().max_queued == 2
    assert JobQueue(tmp_path / "home", concurrency=3, command=hold_command, estimate=lambda p: None).rules().max_queued == 2  # saved
    (tmp_path / "release").touch()
    drain(q)


def test_bad_rules_are_refused(tmp_path):
    q = fixed_queue(tmp_path)
    for bad in ({"max_queued": -1}, {"max_running": 1.5}, {"max_steps": "ten"}, {"paused": "yes"}, {"minutes": 3},
                {"max_minutes": float("nan")}, {"max_steps": float("inf")}, {"max_queued": True}):
        with pytest.raises(StudioError):
            q.set_rules(**bad)
    assert q.set_rules(max_minutes=0.5, max_steps=0).max_minutes == 0.5 and q.rules().max_steps is None


def test_pause_holds_the_queue_and_promote_jumps_it(tmp_path):
    q = fixed_queue(tmp_path)
    q.set_rules(paused=True)
    jobs = [q.enqueue(u, "r", tmp_path / f"job-{u}") for u in ("ann", "bob", "cy")]
    q.tick()
    assert all(q.get(j.id).status == "queued" for j in jobs)
    assert q.etas() == {j.id: None for j in jobs}  # a paused queue tells no start time
    q.promote(jobs[2].id)
    assert q.position(jobs[2].id) == 1
    with pytest.raises(StudioError, match="not waiting"):
        q.promote(12345)
    q.set_rules(paused=False)
    q.tick()
    assert q.get(jobs[2].id).status == "running"
    drain(q)
    with pytest.raises(StudioError, match="not waiting"):
        q.promote(jobs[0].id)  # done: nothing to move


def test_time_cap_stops_a_job_with_a_note(tmp_path):
    q = fixed_queue(tmp_path)
    q.set_rules(max_minutes=0.01)  # 0.6 s
    job = q.enqueue("ann", "r", tmp_path / "hold-x")
    q.tick()
    ended = q.wait(job.id, timeout=30)
    assert ended.status == "stopped" and "time limit of 0.01 min" in ended.note
    assert ended.finished - ended.started < 10


def test_eta_from_measured_step_times(tmp_path, monkeypatch):
    import studio.ui.eta as eta_module

    monkeypatch.setattr(eta_module, "max_steps", {"five": 5}.get)  # each queued recipe trains 5 steps
    q = fixed_queue(tmp_path)
    done = q.enqueue("old", "five", tmp_path / "done-0")
    q.wait(done.id, timeout=30)
    # The finished run measured 2 s a step over 5 steps, and 3 s of loading before them.
    (tmp_path / "done-0").mkdir()
    (tmp_path / "done-0" / "metrics.jsonl").write_text(json.dumps({"step": 5, "train_loss": 1.0, "time_s": 10.0}) + "\n")
    with q._tx() as db:
        db.execute("UPDATE jobs SET started=100.0, finished=113.0 WHERE id=?", (done.id,))
    a, b, c = (q.enqueue(u, "five", tmp_path / u) for u in ("ann", "bob", "cy"))
    assert q.etas() == {a.id: pytest.approx(0.0), b.id: pytest.approx(13.0), c.id: pytest.approx(26.0)}
    unknown = q.enqueue("dee", "epochs", tmp_path / "dee")  # trains by epochs: its length is unknown
    q.enqueue("eve", "five", tmp_path / "eve")
    etas = q.etas()
    assert etas[unknown.id] == pytest.approx(39.0) and list(etas.values())[-1] is None
