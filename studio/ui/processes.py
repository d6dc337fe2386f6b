"""Is this process the job the studio started? Recognised by the record the queue wrote, never by its command line.

When the queue launches a job it records the process id, the process's start time as the OS reports it, and a
random token it hands the process in its environment (TOKEN_ENV). After a restart of the UI, a process counts as
that job only if all of them still agree: a reused process id has another start time, and an unrelated process
(even one whose command line says "studio") has neither the start time nor the token.
"""

from __future__ import annotations

import psutil

TOKEN_ENV = "STUDIO_JOB_TOKEN"
START_TOLERANCE_S = 0.05  # the OS reports start times in clock ticks (10 ms on Linux); psutil rounds them


def started_at(pid: int) -> float | None:
    """The process's start time (seconds since the epoch) as the OS reports it; None when it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def owns_process(pid: int | None, started: float | None, token: str | None) -> bool:
    """Whether `pid` is alive and is the job recorded with this start time and token.

    The token is checked where the OS lets this user read the process's environment (Linux, macOS); the start
    time alone already tells a reused id apart.
    """
    if not pid or started is None or not token:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or abs(proc.create_time() - started) > START_TOLERANCE_S:
            return False
        try:
            return proc.environ().get(TOKEN_ENV) == token
        except psutil.AccessDenied:
            return True
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # another user's process cannot be a job this user's studio started
        return False


def resident_bytes(pid: int) -> float:
    """Resident memory of a process and its children (a distributed job's workers), 0 when it is gone."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    total = 0.0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total
