"""Which queued job starts next, and when each is likely to start: fair share across the users of one studio.

A workshop's queue is shared by a class. Served first-come-first-served, one student who submits twenty jobs
holds everyone else back for twenty jobs. Here the next job is chosen across users instead: a job a teacher
moved up goes first; then users take turns, the one whose last job started longest ago (or who has never run
one) first, each starting their oldest queued job. Users at their running limit wait their turn.

Pure functions over `Job` rows, so the order the queue starts jobs in and the order the UI shows are the same
computation.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol


class QueuedJob(Protocol):
    id: int
    user: str
    promoted: float | None


def fair_order(queued: Iterable[QueuedJob], last_start: dict[str, float]) -> list:
    """The queued jobs in the order they would start if each started at once: promoted jobs first (the latest
    promotion first), then round-robin over users ordered by when their last job started (never = first; ties go
    to the user whose oldest queued job is older), each user's jobs oldest first."""
    jobs = sorted(queued, key=lambda j: j.id)
    promoted = sorted((j for j in jobs if j.promoted), key=lambda j: (-j.promoted, j.id))
    by_user: dict[str, list] = {}
    for job in jobs:
        if not job.promoted:
            by_user.setdefault(job.user, []).append(job)
    # Taking a turn makes a user the one who started most recently: the next round visits users in the same order.
    users = sorted(by_user, key=lambda u: (last_start.get(u, -math.inf), by_user[u][0].id))
    rounds = max((len(v) for v in by_user.values()), default=0)
    return promoted + [by_user[u][k] for k in range(rounds) for u in users if k < len(by_user[u])]


def startable(order: list, running_by_user: dict[str, int], max_running: int | None) -> list:
    """The jobs of `order` whose users are below their running limit, counting the jobs taken before them."""
    if not max_running:
        return list(order)
    counts = dict(running_by_user)
    chosen = []
    for job in order:
        if counts.get(job.user, 0) < max_running:
            chosen.append(job)
            counts[job.user] = counts.get(job.user, 0) + 1
    return chosen


@dataclass(frozen=True)
class Pace:
    """What finished jobs measured: seconds per optimizer step, and the seconds before the first step (loading)."""

    step_s: float
    startup_s: float


def measured_pace(runs: Iterable[tuple[float, list[dict]]]) -> Pace | None:
    """The median pace of finished runs, from (wall seconds from start to end, metrics.jsonl records) pairs;
    None until a run with at least one step has finished."""
    steps, startups = [], []
    for wall_s, records in runs:
        logged = [r for r in records if "train_loss" in r and "time_s" in r and r.get("step")]
        if not logged:
            continue
        last = logged[-1]
        steps.append(last["time_s"] / last["step"])
        startups.append(max(0.0, wall_s - last["time_s"]))
    if not steps:
        return None
    return Pace(statistics.median(steps), statistics.median(startups))


def start_etas(order: list, remaining_s: list[float], slots: int, duration: Callable[[object], float | None]) -> dict[int, float | None]:
    """Seconds from now until each job of `order` starts: the jobs run `slots` at a time, the running ones ending
    after `remaining_s`, each queued one lasting `duration(job)`. None from the first job whose length is unknown
    (nothing after it can be timed)."""
    free = sorted(list(remaining_s) + [0.0] * max(0, slots - len(remaining_s)))
    etas: dict[int, float | None] = {}
    known = True
    for job in order:
        length = duration(job) if known else None
        start = free.pop(0)
        etas[job.id] = start if known else None
        if length is None:
            known = False
            free.append(math.inf)
        else:
            free.append(start + length)
        free.sort()
    return etas
