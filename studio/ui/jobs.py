"""A persistent job queue: training runs wait in order and run as subprocesses, a few (default one) at a time.

It serves the UI only (the library and the CLI never queue), hence its place in studio.ui.

The queue lives in SQLite (WAL mode, one transaction per change) under the studio home, so a browser
refresh or a restart of `studio ui` loses no job. A worker thread in the UI process starts each job as
`python -m studio.cli train RECIPE [--gpus N]` (or `train --resume RUN_DIR`) in its own session, with stdout
and stderr going to the job's log file, and records how it ended.

Statuses: queued -> running -> done | failed | stopped; a job that was running when the UI died and whose
process is gone becomes `interrupted` (resume it: its checkpoints are in the run directory). A job whose
process outlived the UI is adopted: it stays `running` and is watched by its process id.

Pure Python and testable without Gradio: `tick()` does one round of the worker's work.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from studio.errors import StudioError
from studio.training.rundir import SUMMARY

KINDS = ("train", "resume")
FINAL = ("done", "failed", "stopped", "interrupted")
STOP_GRACE_S = 60.0  # after SIGINT, a job gets this long to save its checkpoint before SIGTERM

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    kind TEXT NOT NULL,
    recipe_path TEXT,
    run_dir TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    pid INTEGER,
    log_path TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    stop_requested REAL,
    gpus INTEGER
)
"""


@dataclass(frozen=True)
class Job:
    """One row of the queue."""

    id: int
    user: str
    kind: str
    recipe_path: str | None
    run_dir: str
    status: str
    exit_code: int | None
    pid: int | None
    log_path: str | None
    created: float
    started: float | None
    finished: float | None
    stop_requested: float | None
    gpus: int | None = None  # GPUs picked for the run; None (or 1) trains as the recipe says, in one process unless it asks for more


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


class JobQueue:
    """Jobs persisted in `home/jobs.sqlite3`; `start()` runs a worker thread that launches them in order."""

    def __init__(self, home: str | Path, concurrency: int = 1, command: Callable[[Job], list[str]] = train_command, poll_s: float = 1.0):
        if concurrency < 1:
            raise StudioError(f"job concurrency must be at least 1, got {concurrency}", where="jobs", fix="run one job at a time per GPU")
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.db_path = self.home / "jobs.sqlite3"
        self.concurrency = concurrency
        self.command = command
        self.poll_s = poll_s
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with self._tx() as db:
            db.execute(_SCHEMA)
            _check_columns(db, self.db_path)
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
        """After a restart: adopt running jobs whose process is still alive, mark the others interrupted."""
        now = time.time()
        with self._tx() as db:
            for row in db.execute("SELECT * FROM jobs WHERE status='running'").fetchall():
                if not _process_alive(row["pid"], row["run_dir"]):
                    db.execute("UPDATE jobs SET status='interrupted', finished=? WHERE id=?", (now, row["id"]))

    # -- public API ---------------------------------------------------------------------------
    def enqueue(self, user: str, recipe_path: str | Path | None, run_dir: str | Path, kind: str = "train", gpus: int | None = None) -> Job:
        """Add a job at the back of the queue and return it; `gpus` is the GPU count it was started with."""
        if kind not in KINDS:
            raise StudioError(f"unknown job kind '{kind}'", where="jobs", fix=f"use one of {KINDS}")
        if kind == "train" and not recipe_path:
            raise StudioError("a training job needs a recipe file", where="jobs", fix="save the recipe first")
        if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
            raise StudioError(f"a job's GPU count must be a whole number of at least 1, got {gpus!r}", where="jobs", fix="pick the number of GPUs to train on")
        with self._tx() as db:
            busy = db.execute("SELECT id FROM jobs WHERE run_dir=? AND status IN ('queued','running')", (str(run_dir),)).fetchone()
            if busy:
                raise StudioError(f"run directory {run_dir} already has job {busy['id']} queued or running", where="jobs", fix="wait for it, stop it, or pick another run name")
            cur = db.execute(
                "INSERT INTO jobs (user, kind, recipe_path, run_dir, status, created, gpus) VALUES (?,?,?,?, 'queued', ?, ?)",
                (user, kind, str(recipe_path) if recipe_path else None, str(run_dir), time.time(), gpus),
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

    def position(self, job_id: int) -> int:
        """1 for the next queued job to start, 2 for the one after, ...; 0 when the job is not queued."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id=?", (int(job_id),)).fetchone()
            if row is None or row["status"] != "queued":
                return 0
            return db.execute("SELECT COUNT(*) FROM jobs WHERE status='queued' AND id<=?", (int(job_id),)).fetchone()[0]

    def stop(self, job_id: int) -> Job:
        """Cancel a queued job, or interrupt a running one (SIGINT: it saves a checkpoint and exits)."""
        with self._lock:
            job = self.get(job_id)
            if job.status == "queued":
                with self._tx() as db:
                    db.execute("UPDATE jobs SET status='stopped', finished=? WHERE id=? AND status='queued'", (time.time(), job.id))
            elif job.status == "running":
                with self._tx() as db:
                    db.execute("UPDATE jobs SET stop_requested=? WHERE id=?", (time.time(), job.id))
                _signal(job.pid, signal.SIGINT)
            return self.get(job_id)

    def tick(self) -> None:
        """One round of the worker: record jobs that ended, escalate slow stops, start queued jobs while there is room."""
        with self._lock:
            self._reap()
            running = [j for j in self.jobs() if j.status == "running"]
            free = self.concurrency - len(running)
            if free <= 0:
                return
            with self._tx() as db:
                queued = db.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY id LIMIT ?", (free,)).fetchall()
            for row in queued:
                self._launch(Job(**dict(row)))

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

    def _launch(self, job: Job) -> None:
        log = open(job.log_path, "ab")
        try:
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
            proc = subprocess.Popen(self.command(job), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError as exc:
            log.write(f"could not start: {exc}\n".encode())
            with self._tx() as db:
                db.execute("UPDATE jobs SET status='failed', finished=? WHERE id=?", (time.time(), job.id))
            return
        finally:
            log.close()
        self._procs[job.id] = proc
        with self._tx() as db:
            db.execute("UPDATE jobs SET status='running', pid=?, started=? WHERE id=?", (proc.pid, time.time(), job.id))

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
                if _process_alive(job.pid, job.run_dir):
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


def _check_columns(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a database whose jobs table is not the one this studio writes (another version made it)."""
    have = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
    want = set(Job.__dataclass_fields__)
    if have != want:
        raise StudioError(
            f"the job database was made by another version of the studio (columns differ: {sorted(have ^ want)})",
            where=str(path),
            fix="move that file aside and start `studio ui` again: the job list starts empty, the run directories are untouched",
        )


def _signal(pid: int | None, sig: int) -> None:
    if not pid:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _process_alive(pid: int | None, run_dir: str) -> bool:
    """Whether pid is alive and (on Linux) still one of our jobs, not an unrelated process that reused the id."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        if stat.split(")")[-1].split()[0] == "Z":  # a zombie has exited
            return False
        return "studio" in text or run_dir in text
    return True
