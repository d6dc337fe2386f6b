"""A persistent job queue: training runs wait, then run as subprocesses, shared fairly among a class's users.

It serves the UI only (the library and the CLI never queue), hence its place in studio.ui.

The queue lives in SQLite (WAL mode, one transaction per change) under the studio home, so a browser
refresh or a restart of `studio ui` loses no job. A worker thread in the UI process starts each job as
`python -m studio.cli train RECIPE [--gpus N]` (or `train --resume RUN_DIR`) in its own session, with stdout
and stderr going to the job's log file, and records how it ended.

Which job starts next is fair across users (studio.ui.schedule: a teacher's promotions, then users in turn, the
one who started a job least recently first), within the class rules (Rules: a paused queue, per-user limits on
waiting and running jobs, a time cap per job). How many run at once is the packer's call (studio.ui.packing:
by GPU memory, by CPU cores, or a fixed number).

Statuses: queued -> running -> done | failed | stopped; a job that was running when the UI died and whose
process is gone becomes `interrupted` (resume it: its checkpoints are in the run directory). A job whose
process outlived the UI is adopted: it stays `running`, recognised by the record written when it started
(studio.ui.processes: process id, start time and token), never by its command line.

Pure Python and testable without Gradio: `tick()` does one round of the worker's work.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Callable

from studio.errors import StudioError
from studio.training.rundir import RECIPE, SUMMARY
from studio.ui.eta import start_times
from studio.ui.job_table import SCHEMA, Job, migrate
from studio.ui.packing import Packer, recipe_peak_bytes
from studio.ui.processes import TOKEN_ENV, owns_process, resident_bytes, started_at
from studio.ui.rules import Rules, checked_rules
from studio.ui.schedule import fair_order, startable

KINDS = ("train", "resume")
FINAL = ("done", "failed", "stopped", "interrupted")
STOP_GRACE_S = 60.0  # after SIGINT, a job gets this long to save its checkpoint before SIGTERM
SAMPLE_S = 5.0  # how often the worker records each running job's memory (the teacher's plot)
SAMPLES_KEPT_S = 12 * 3600.0  # a day of a workshop; older samples are dropped

def train_command(job: Job) -> list[str]:
    """The command line a job runs: `studio train RECIPE [--gpus N]`, or `studio train --resume RUN_DIR`.

    A resume gets no --gpus: the CLI refuses it there, because the run directory's recipe already holds the
    distributed section the run started with, so the resumed run uses the same number of GPUs.
    """
    base = [sys.executable, "-m", "studio.cli", "train"]
    if job.kind == "resume":
        return base + ["--resume", job.run_dir]
    # One GPU is how a plain `studio train RECIPE` runs already; --gpus 1 would only override the recipe.
    gpus = ["--gpus", str(job.gpus)] if job.gpus and job.gpus > 1 else []
    return base + [str(job.recipe_path), *gpus]


def job_recipe_file(job: Job) -> str | None:
    """The recipe a job trains: a resume's run directory holds it, a new run's was written when it was queued."""
    return str(Path(job.run_dir) / RECIPE) if job.kind == "resume" else job.recipe_path


class JobQueue:
    """Jobs persisted in `home/jobs.sqlite3`; `start()` runs a worker thread that launches them.

    `concurrency` is "auto" (packed by GPU memory, else by CPU cores) or a fixed number; `packer` replaces that
    rule outright (tests give one with a faked memory probe). `estimate(recipe_file)` gives a job's peak GPU
    bytes when it is queued. `rules` are class rules to set at start (`studio ui --max-queued`; the ones not given
    keep their saved value); `default_rules` are set only where no value was ever saved (a teacher's change outlives
    a restart).
    """

    def __init__(self, home: str | Path, concurrency: int | str = "auto", command: Callable[[Job], list[str]] = train_command, poll_s: float = 1.0,
                 packer: Packer | None = None, estimate: Callable[[str | None], float | None] = recipe_peak_bytes, rules: dict | None = None,
                 default_rules: dict | None = None):
        if concurrency != "auto" and (isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1):
            raise StudioError(f"job concurrency must be auto or at least 1, got {concurrency!r}", where="--concurrency", fix="use auto, or a whole number such as 1")
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.db_path = self.home / "jobs.sqlite3"
        self.packer = packer or Packer(concurrency)
        self.command = command
        self.poll_s = poll_s
        self.estimate = estimate
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0.0
        with self._tx() as db:
            migrate(db, self.db_path)
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
        with self._tx() as db:
            saved = {row["key"] for row in db.execute("SELECT key FROM rules")}
        unset = {k: v for k, v in (default_rules or {}).items() if k not in saved}
        given = {k: v for k, v in (rules or {}).items() if v is not None}
        if unset or given:
            self.set_rules(**{**unset, **given})
        self._recover()

    # -- database -------------------------------------------------------------------------------
    @contextmanager
    def _tx(self):
        """One transaction on a fresh connection (safe across threads); WAL lets readers run alongside."""
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.row_factory = sqlite3.Row
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def _recover(self) -> None:
        """After a restart: adopt running jobs whose recorded process is still alive, mark the others interrupted."""
        now = time.time()
        with self._tx() as db:
            for row in db.execute("SELECT * FROM jobs WHERE status='running'").fetchall():
                if not owns_process(row["pid"], row["pid_started"], row["token"]):
                    db.execute("UPDATE jobs SET status='interrupted', finished=? WHERE id=?", (now, row["id"]))

    # -- class rules ----------------------------------------------------------------------------
    def rules(self) -> Rules:
        """The class rules now in force (saved in the database, so a restart keeps them)."""
        with self._tx() as db:
            saved = {row["key"]: json.loads(row["value"]) for row in db.execute("SELECT key, value FROM rules")}
        return Rules(**{f.name: saved[f.name] for f in fields(Rules) if f.name in saved})

    def set_rules(self, **changes) -> Rules:
        """Change some class rules (a limit set to None or 0 is lifted); returns the rules now in force."""
        with self._tx() as db:
            for key, value in checked_rules(changes).items():
                db.execute("INSERT INTO rules (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, json.dumps(value)))
        return self.rules()

    # -- public API ---------------------------------------------------------------------------
    def enqueue(self, user: str, recipe_path: str | Path | None, run_dir: str | Path, kind: str = "train", gpus: int | None = None, exempt: bool = False) -> Job:
        """Add a job to the queue and return it; `gpus` is the GPU count it was started with. The class's limit on
        waiting jobs applies to `user` unless `exempt` (a teacher)."""
        if kind not in KINDS:
            raise StudioError(f"unknown job kind '{kind}'", where="jobs", fix=f"use one of {KINDS}")
        if kind == "train" and not recipe_path:
            raise StudioError("a training job needs a recipe file", where="jobs", fix="save the recipe first")
        if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
            raise StudioError(f"a job's GPU count must be a whole number of at least 1, got {gpus!r}", where="jobs", fix="pick the number of GPUs to train on")
        limit = None if exempt else self.rules().max_queued
        recipe_file = str(Path(run_dir) / RECIPE) if kind == "resume" else (str(recipe_path) if recipe_path else None)
        peak = self._estimate(recipe_file)
        with self._tx() as db:
            busy = db.execute("SELECT id FROM jobs WHERE run_dir=? AND status IN ('queued','running')", (str(run_dir),)).fetchone()
            if busy:
                raise StudioError(f"run directory {run_dir} already has job {busy['id']} queued or running", where="jobs", fix="wait for it, stop it, or pick another run name")
            if limit:
                waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE user=? AND status='queued'", (user,)).fetchone()[0]
                if waiting >= limit:
                    raise StudioError(f"you already have {waiting} jobs waiting, the most this class allows", where="jobs",
                                      fix="wait for one of them to start, or stop one you no longer need")
            cur = db.execute(
                "INSERT INTO jobs (user, kind, recipe_path, run_dir, status, created, gpus, peak_bytes) VALUES (?,?,?,?, 'queued', ?, ?, ?)",
                (user, kind, str(recipe_path) if recipe_path else None, str(run_dir), time.time(), gpus, peak),
            )
            job_id = cur.lastrowid
            db.execute("UPDATE jobs SET log_path=? WHERE id=?", (str(self.home / "logs" / f"job-{job_id}.log"), job_id))
        return self.get(job_id)

    def get(self, job_id: int) -> Job:
        """The job with this id (StudioError when there is none)."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (int(job_id),)).fetchone()
        if row is None:
            raise StudioError(f"no job {job_id}", where="jobs", fix="pick a job from the list")
        return Job(**dict(row))

    def jobs(self, user: str | None = None) -> list[Job]:
        """All jobs, newest first; only `user`'s when given."""
        with self._tx() as db:
            if user is None:
                rows = db.execute("SELECT * FROM jobs ORDER BY id DESC").fetchall()
            else:
                rows = db.execute("SELECT * FROM jobs WHERE user=? ORDER BY id DESC", (user,)).fetchall()
        return [Job(**dict(r)) for r in rows]

    def order(self) -> list[Job]:
        """The queued jobs in the order they will start (fair share across users; a teacher's promotions first)."""
        jobs = self.jobs()
        last_start: dict[str, float] = {}
        for job in jobs:
            if job.started:
                last_start[job.user] = max(last_start.get(job.user, 0.0), job.started)
        return fair_order([j for j in jobs if j.status == "queued"], last_start)

    def position(self, job_id: int) -> int:
        """1 for the next queued job to start, 2 for the one after, ...; 0 when the job is not queued."""
        ids = [j.id for j in self.order()]
        return ids.index(int(job_id)) + 1 if int(job_id) in ids else 0

    def promote(self, job_id: int) -> Job:
        """Move a queued job to the front of the queue (a teacher's call); StudioError for a job that is not waiting."""
        with self._tx() as db:
            moved = db.execute("UPDATE jobs SET promoted=? WHERE id=? AND status='queued'", (time.time(), int(job_id))).rowcount
        if not moved:
            raise StudioError(f"job #{job_id} is not waiting in the queue", where=f"job {job_id}", fix="move up a queued job")
        return self.get(job_id)

    def stop(self, job_id: int, note: str | None = None) -> Job:
        """Cancel a queued job, or interrupt a running one (SIGINT: it saves a checkpoint and exits); `note` says why,
        when someone other than its owner stopped it."""
        with self._lock:
            job = self.get(job_id)
            if job.status == "queued":
                with self._tx() as db:
                    db.execute("UPDATE jobs SET status='stopped', finished=?, note=? WHERE id=? AND status='queued'", (time.time(), note, job.id))
            elif job.status == "running":
                with self._tx() as db:
                    db.execute("UPDATE jobs SET stop_requested=?, note=? WHERE id=?", (time.time(), note, job.id))
                _signal(job.pid, signal.SIGINT)
            return self.get(job_id)

    def etas(self, now: float | None = None) -> dict[int, float | None]:
        """Seconds until each queued job starts, from the step times finished jobs measured (studio.ui.eta)."""
        return start_times(self, now)

    def usage(self, since: float = 0.0) -> list[dict]:
        """Memory samples of running jobs since `since`: {t, job_id, user, bytes, kind} with kind "gpu" or "cpu" (resident)."""
        with self._tx() as db:
            rows = db.execute("SELECT usage.t, usage.job_id, jobs.user, usage.bytes, usage.kind FROM usage JOIN jobs ON jobs.id = usage.job_id "
                              "WHERE usage.t >= ? ORDER BY usage.t", (since,)).fetchall()
        return [dict(r) for r in rows]

    def tick(self) -> None:
        """One round of the worker: record jobs that ended, enforce the time cap, escalate slow stops, sample memory,
        and start queued jobs in fair order while the packer admits them (none while the queue is paused)."""
        with self._lock:
            self._reap()
            rules = self.rules()
            running = [j for j in self.jobs() if j.status == "running"]
            self._enforce_time_cap(running, rules)
            self._sample(running)
            if rules.paused:
                return
            by_user: dict[str, int] = {}
            for job in running:
                by_user[job.user] = by_user.get(job.user, 0) + 1
            for job in startable(self.order(), by_user, rules.max_running):
                if not self.packer.admit(job, running):
                    break  # the next job waits for room; none behind it jumps ahead, so a large job is never starved
                launched = self._launch(job)
                if launched is not None:
                    running.append(launched)

    def start(self) -> "JobQueue":
        """Run `tick()` in a daemon thread every poll_s seconds until `close()`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="studio-jobs", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the worker thread. Running jobs keep running (they are adopted on the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wait(self, job_id: int, timeout: float = 60.0) -> Job:
        """Tick until the job reaches a final status (for tests and scripts); return it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._thread is None:
                self.tick()
            job = self.get(job_id)
            if job.status in FINAL:
                return job
            time.sleep(min(self.poll_s, 0.05))
        raise TimeoutError(f"job {job_id} still {self.get(job_id).status} after {timeout}s")

    # -- worker internals ---------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the worker must survive a transient DB or OS error
                print(f"studio jobs: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._stop.wait(self.poll_s)

    def _estimate(self, recipe_file: str | None) -> float | None:
        # The estimate only decides packing: a recipe the estimator cannot read runs alone, it is never refused here.
        try:
            return self.estimate(recipe_file)
        except Exception:  # noqa: BLE001
            return None

    def _launch(self, job: Job) -> Job | None:
        token = secrets.token_hex(16)
        log = open(job.log_path, "ab")
        try:
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", TOKEN_ENV: token}
            threads = self.packer.threads_per_job()
            if threads:
                env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            proc = subprocess.Popen(self.command(job), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError as exc:
            log.write(f"could not start: {exc}\n".encode())
            with self._tx() as db:
                db.execute("UPDATE jobs SET status='failed', finished=? WHERE id=?", (time.time(), job.id))
            return None
        finally:
            log.close()
        self._procs[job.id] = proc
        with self._tx() as db:
            db.execute("UPDATE jobs SET status='running', pid=?, started=?, pid_started=?, token=? WHERE id=?",
                       (proc.pid, time.time(), started_at(proc.pid), token, job.id))
        return self.get(job.id)

    def _reap(self) -> None:
        now = time.time()
        for job in [j for j in self.jobs() if j.status == "running"]:
            proc = self._procs.get(job.id)
            if proc is not None:
                code = proc.poll()
                if code is None:
                    self._escalate(job, now)
                    continue
                del self._procs[job.id]
                status = "stopped" if job.stop_requested else ("done" if code == 0 else "failed")
            else:  # adopted after a restart: no exit code, judge by the process and the run directory
                if owns_process(job.pid, job.pid_started, job.token):
                    self._escalate(job, now)
                    continue
                code = None
                summary = Path(job.run_dir) / SUMMARY
                finished = summary.exists() and summary.stat().st_mtime >= (job.started or 0)
                status = "stopped" if job.stop_requested else ("done" if finished else "interrupted")
            with self._tx() as db:
                db.execute("UPDATE jobs SET status=?, exit_code=?, finished=? WHERE id=?", (status, code, now, job.id))

    def _escalate(self, job: Job, now: float) -> None:
        if job.stop_requested and now - job.stop_requested > STOP_GRACE_S:
            _signal(job.pid, signal.SIGTERM)

    def _enforce_time_cap(self, running: list[Job], rules: Rules) -> None:
        if not rules.max_minutes:
            return
        for job in running:
            if not job.stop_requested and job.started and time.time() - job.started >= rules.max_minutes * 60:
                self.stop(job.id, note=f"stopped at the class's time limit of {rules.max_minutes:g} min (resume it to go on)")

    def _sample(self, running: list[Job]) -> None:
        now = time.time()
        if not running or now - self._sampled < SAMPLE_S:
            return
        self._sampled = now
        memory = self.packer.probe() if self.packer.mode == "gpu" else None
        if memory is not None:
            rows = [(now, j.id, memory.used_by_pid.get(j.pid, 0.0), "gpu") for j in running]
        else:
            rows = [(now, j.id, resident_bytes(j.pid), "cpu") for j in running if j.pid]
        with self._tx() as db:
            db.executemany("INSERT INTO usage (t, job_id, bytes, kind) VALUES (?, ?, ?, ?)", rows)
            db.execute("DELETE FROM usage WHERE t < ?", (now - SAMPLES_KEPT_S,))

def _signal(pid: int | None, sig: int) -> None:
    if not pid:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
