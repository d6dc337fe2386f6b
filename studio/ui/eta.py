"""When each queued job should start: the queue's order played forward with the step times finished jobs measured.

A workshop's jobs are mostly the same recipe at different settings, so the median pace of recent finished runs
(seconds per optimizer step, and seconds of loading before the first) times a queued job's train.max_steps is a
fair guess of its length; a running job's own pace so far gives its remaining time. A job trained by epochs has
no step count before its data loads: its length, and every start after it, is unknown (None).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from studio.errors import StudioError
from studio.training.rundir import read_metrics
from studio.ui.schedule import Pace, measured_pace, start_etas

PACE_JOBS = 20  # the most recent finished jobs whose step times give the queue's pace
_finished: dict[tuple[str, int], tuple[float, list[dict]]] = {}  # (database, job id) -> (wall s, metrics): a finished run does not change


def start_times(queue, now: float | None = None) -> dict[int, float | None]:
    """Seconds from now until each queued job of `queue` (a studio.ui.jobs.JobQueue) starts; None where it cannot
    be told yet (nothing has finished, a recipe without train.max_steps, a paused queue)."""
    from studio.ui.jobs import job_recipe_file

    order = queue.order()
    if queue.rules().paused:
        return {j.id: None for j in order}
    now = time.time() if now is None else now
    jobs = queue.jobs()
    pace = queue_pace(str(queue.db_path), jobs)
    running = [j for j in jobs if j.status == "running"]
    remaining = [remaining_s(j, job_recipe_file(j), pace, now) for j in running]
    if any(r is None for r in remaining):
        return {j.id: None for j in order}
    slots = queue.packer.slots or max(1, len(running))  # packed by memory: as many as run together now

    def duration(job):
        steps = max_steps(job_recipe_file(job))
        return None if pace is None or steps is None else pace.startup_s + steps * pace.step_s

    return start_etas(order, remaining, slots, duration)


def queue_pace(database: str, jobs: list) -> Pace | None:
    """The median pace of the most recent finished (done) jobs."""
    done = [j for j in jobs if j.status == "done" and j.started and j.finished][:PACE_JOBS]
    for job in done:
        if (database, job.id) not in _finished:
            _finished[(database, job.id)] = (job.finished - job.started, read_metrics(Path(job.run_dir)))
    return measured_pace(_finished[(database, j.id)] for j in done)


def remaining_s(job, recipe_file: str | None, pace: Pace | None, now: float) -> float | None:
    """Seconds a running job still needs: its own pace so far, else the queue's pace less the loading time spent."""
    steps = max_steps(recipe_file)
    if steps is None:
        return None
    records = [r for r in read_metrics(Path(job.run_dir)) if "train_loss" in r and "time_s" in r and r.get("step")]
    if records:
        last = records[-1]
        return max(0.0, (steps - last["step"]) * last["time_s"] / last["step"])
    if pace is None:
        return None
    return max(0.0, pace.startup_s - (now - (job.started or now))) + steps * pace.step_s


def max_steps(recipe_file: str | None) -> int | None:
    """train.max_steps of a recipe file (None when it trains by epochs or does not load)."""
    if not recipe_file or not Path(recipe_file).is_file():
        return None
    return _max_steps_of(recipe_file, Path(recipe_file).stat().st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _max_steps_of(recipe_file: str, mtime_ns: int) -> int | None:
    # Every page refresh asks for every queued job's length: validate each recipe file once per version of it.
    from studio.config.load import load_recipe

    try:
        return load_recipe(recipe_file).train.max_steps or None
    except StudioError:
        return None
