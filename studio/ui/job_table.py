"""The job queue's database: its tables, the `Job` row, and bringing an earlier version's database up to date.

One SQLite file under the studio home holds the jobs, the class rules (key -> JSON value) and the memory samples
of running jobs. A database written by an earlier studio gains the columns it lacks and keeps every job; one
written by a newer studio (columns this one does not know) is refused, untouched.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from pathlib import Path

from studio.errors import StudioError

SCHEMA = """
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
    gpus INTEGER,
    promoted REAL,
    peak_bytes REAL,
    pid_started REAL,
    token TEXT,
    note TEXT
);
CREATE TABLE IF NOT EXISTS rules (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS usage (t REAL NOT NULL, job_id INTEGER NOT NULL, bytes REAL NOT NULL, kind TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS usage_t ON usage (t);
"""
ADDED = {"gpus": "INTEGER", "promoted": "REAL", "peak_bytes": "REAL", "pid_started": "REAL", "token": "TEXT", "note": "TEXT"}  # columns later versions added


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
    promoted: float | None = None  # when a teacher moved it to the front of the queue
    peak_bytes: float | None = None  # the estimator's peak GPU memory for its recipe (None: unknown, it runs alone on a GPU)
    pid_started: float | None = None  # the process's start time as the OS reported it: with pid and token, the job's identity
    token: str | None = None  # handed to the process in $STUDIO_JOB_TOKEN
    note: str | None = None  # why it ended when that is not its own doing (a stop by a teacher, the class's time limit)


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring a job database of an earlier version up to date (adding the columns it lacks, keeping every job);
    refuse one with columns this version does not know (a newer studio made it)."""
    have = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
    if not have:
        return
    want = {f.name for f in fields(Job)}
    unknown = have - want
    missing = want - have
    if unknown or not missing <= set(ADDED):
        raise StudioError(
            f"the job database was made by another version of the studio (columns differ: {sorted(unknown | (missing - set(ADDED)))})",
            where=str(path),
            fix="move that file aside and start `studio ui` again: the job list starts empty, the run directories are untouched",
        )
    for name in sorted(missing):
        db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {ADDED[name]}")
