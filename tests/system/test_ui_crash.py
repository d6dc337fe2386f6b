"""The UI's job queue survives SIGKILL of `studio ui` (issue 6, "Crashes and interruptions").

One scenario, two crashes, on one studio home (so a single long training serves both):

(a) SIGKILL of the UI alone. Its training subprocess runs in its own session and outlives it; the restarted
    UI adopts that job (still `running`, watched by its pid, its metrics still growing), and the two queued
    jobs are still queued, in the order they were submitted.
(b) SIGKILL of the UI and of the training (its process group, found by the pid recorded in the database).
    The restarted UI marks the job `interrupted`; the queued jobs run in order; one call of the `/resume_job`
    endpoint queues a resume, which continues from the last checkpoint and ends `done` with an adapter.

After each crash, `PRAGMA integrity_check` on the job database says `ok`.
Everything runs as real processes: `python -m studio.cli ui` and the `studio train` subprocesses it starts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import helpers
import httpx
import pytest
import yaml

LONG_STEPS = 80  # job 1 (~0.3 s a step): long enough to outlast a UI restart and be killed twice mid-run; a checkpoint every 2 steps
UI_START_S = 120.0
JOB_TIMEOUT_S = 150.0


def start_ui(home: Path, cwd: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`python -m studio.cli ui --home HOME --port P` in its own session; returns it once the page answers."""
    port = helpers.free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "ui", "--home", str(home), "--port", str(port)], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + UI_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"studio ui exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "config", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"studio ui did not answer within {UI_START_S}s:\n{log.read_text()[-3000:]}")


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def db_rows(home: Path) -> dict[int, dict]:
    with sqlite3.connect(home / "jobs.sqlite3", timeout=30) as db:
        db.row_factory = sqlite3.Row
        return {r["id"]: dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY id")}


def integrity(home: Path) -> str:
    db = sqlite3.connect(home / "jobs.sqlite3", timeout=30)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def gone(pid: int) -> bool:
    """Whether pid has exited (a zombie counts: it waits only for its new parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state == "Z"


def wait_for(predicate, timeout: float, what: str, poll: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def logged_steps(status: dict) -> list[int]:
    return [r["step"] for r in status["metrics"] if "train_loss" in r]


@pytest.mark.slow
def test_queue_survives_sigkill_of_the_ui_and_of_its_training(tiny_llama_dir, tiny_data, tmp_path):
    from gradio_client import Client

    home, cwd, log = tmp_path / "home", tmp_path / "cwd", tmp_path / "ui.log"
    cwd.mkdir()
    started = time.monotonic()

    def recipe(steps: int) -> str:
        return yaml.safe_dump(helpers.recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "unused", train={"max_steps": steps, "save_steps": 2}))

    procs: list[subprocess.Popen] = []
    try:
        ui, url = start_ui(home, cwd, log)
        procs.append(ui)
        client = Client(url, verbose=False)
        ids = [client.predict(recipe(LONG_STEPS), "long", api_name="/start_training"),
               client.predict(recipe(1), "second", api_name="/start_training"),
               client.predict(recipe(1), "third", api_name="/start_training")]
        assert ids == sorted(ids) and len(set(ids)) == 3
        first, second, third = ids

        # Job 1 is running and has logged a few steps (so a checkpoint exists); jobs 2 and 3 wait behind it.
        wait_for(lambda: len(logged_steps(client.predict(first, api_name="/job_status"))) >= 3, 90, "job 1 to log 3 steps")
        assert [client.predict(j, api_name="/job_status")["position"] for j in (second, third)] == [1, 2]
        pid = db_rows(home)[first]["pid"]
        assert pid and not gone(pid)

        t_running = time.monotonic() - started
        # (a) SIGKILL the UI only: the training lives on in its own session.
        sigkill(ui)
        assert not gone(pid), "the training subprocess died with the UI"
        assert integrity(home) == "ok"
        rows = db_rows(home)
        assert [rows[j]["status"] for j in ids] == ["running", "queued", "queued"]

        ui, url = start_ui(home, cwd, log)
        procs.append(ui)
        client = Client(url, verbose=False)
        status = client.predict(first, api_name="/job_status")
        assert status["status"] == "running", f"a live orphan must be adopted, got {status['status']}"
        assert db_rows(home)[first]["pid"] == pid
        assert [client.predict(j, api_name="/job_status")["position"] for j in (second, third)] == [1, 2], "queued jobs must keep their order"
        seen = max(logged_steps(status))

        def progressed():
            now = client.predict(first, api_name="/job_status")
            assert now["status"] == "running", f"job 1 ended ({now['status']}) before the second kill: raise LONG_STEPS"
            return max(logged_steps(now)) >= seen + 2

        wait_for(progressed, 60, "the adopted job to keep training")

        t_adopted = time.monotonic() - started
        # (b) SIGKILL the UI and the training's process group (the queue starts each job in its own session).
        assert os.getpgid(pid) == pid
        sigkill(ui)
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: gone(pid), 20, "the killed training to exit", poll=0.05)
        assert integrity(home) == "ok"
        killed_at = max(logged_steps({"metrics": _metrics(Path(db_rows(home)[first]["run_dir"]))}))
        assert killed_at < LONG_STEPS, "job 1 finished before it could be killed: raise LONG_STEPS"

        ui, url = start_ui(home, cwd, log)
        procs.append(ui)
        client = Client(url, verbose=False)
        assert client.predict(first, api_name="/job_status")["status"] == "interrupted"
        # The worker may already have started job 2 (it is next); job 3 still waits behind it.
        assert client.predict(second, api_name="/job_status")["status"] in ("queued", "running")
        assert client.predict(third, api_name="/job_status")["status"] == "queued"

        # One call resumes the interrupted job; it queues behind job 3.
        resumed = client.predict(first, api_name="/resume_job")
        assert resumed > third
        listed = {j["id"]: j for j in client.predict(api_name="/list_jobs")}
        assert set(listed) == {*ids, resumed} and listed[resumed]["kind"] == "resume" and listed[resumed]["run"] == "long"
        with pytest.raises(Exception, match="still"):  # a job that is queued cannot be resumed twice
            client.predict(resumed, api_name="/resume_job")
        with pytest.raises(Exception, match="no job 99999"):  # an unknown id is a clear error, not a server error
            client.predict(99999, api_name="/resume_job")

        final = wait_for(lambda: (s := client.predict(resumed, api_name="/job_status"))["status"] not in ("queued", "running") and s, JOB_TIMEOUT_S, "the resumed job to end")
        rows = db_rows(home)
        assert final["status"] == "done", Path(rows[resumed]["log_path"]).read_text()[-3000:]
        assert [rows[j]["status"] for j in (second, third)] == ["done", "done"]
        assert rows[second]["started"] < rows[third]["started"] < rows[resumed]["started"], "jobs must start in queue order"
        assert rows[first]["status"] == "interrupted" and rows[first]["pid"] == pid

        run_dir = Path(final["run_dir"])
        assert (run_dir / "adapter" / "adapter_model.safetensors").is_file() and (run_dir / "adapter" / "adapter_config.json").is_file()
        steps = [r["step"] for r in _metrics(run_dir) if "train_loss" in r]
        assert steps == list(range(1, LONG_STEPS + 1)), f"each step logged exactly once across the crashes, got {steps}"
        first_resumed = int(re.search(r"step (\d+)/", Path(rows[resumed]["log_path"]).read_text()).group(1))
        assert 2 < first_resumed <= killed_at + 1, f"the resume must continue from the last checkpoint before step {killed_at}, it began at step {first_resumed}"
        assert json.loads((run_dir / "summary.json").read_text())["steps"] == LONG_STEPS
        assert integrity(home) == "ok"
        sigkill(ui)
        assert integrity(home) == "ok"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for row in db_rows(home).values() if (home / "jobs.sqlite3").exists() else ():
            if row["status"] == "running" and row["pid"] and not gone(row["pid"]):
                try:
                    os.killpg(row["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
    print(f"\nui crash test: job 1 running at {t_running:.0f} s, adopted after kill (a) until {t_adopted:.0f} s, killed (b) at step {killed_at}/{LONG_STEPS}, "
          f"resumed from step {first_resumed} to done; {time.monotonic() - started:.0f} s in all")


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
