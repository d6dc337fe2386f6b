"""Memory-aware packing with a faked free-memory probe: jobs that fit start together, one that does not waits, none
is pushed out; on a CPU concurrency follows the cores."""

import sys
import time

import helpers

from studio.memory.gpus import GIB
from studio.ui.jobs import JobQueue
from studio.ui.packing import MARGIN_GIB, GpuMemory, Packer, need_bytes

ENV = "import os, sys; open(sys.argv[1], 'w').write(os.environ.get('OMP_NUM_THREADS', '-'))"
PEAKS = {"small": 4 * GIB, "big": 30 * GIB, "medium": 9 * GIB}  # estimated peaks by recipe name


class FakeGpu:
    """A 24 GiB GPU whose running jobs hold `grown` of their estimate (what nvidia-smi would report per process)."""

    def __init__(self, queue_ref, total=24 * GIB, grown=0.5):
        self.queue_ref, self.total, self.grown, self.calls = queue_ref, total, grown, 0

    def __call__(self):
        self.calls += 1
        queue = self.queue_ref()
        if queue is None:
            return GpuMemory(self.total, self.total, {})
        used = {j.pid: self.grown * j.peak_bytes for j in queue.jobs() if j.status == "running" and j.peak_bytes}
        return GpuMemory(self.total, self.total - sum(used.values()), used)


def hold_command(job):
    return helpers.hold_until(str(job.run_dir) + ".release")


def gpu_queue(tmp_path, **kwargs):
    holder = {}
    probe = FakeGpu(lambda: holder.get("q"), **kwargs)
    q = JobQueue(tmp_path / "home", command=hold_command, poll_s=0.02, packer=Packer("auto", probe=probe),
                 estimate=lambda path: PEAKS.get(path))
    holder["q"] = q
    return q, probe


def release(tmp_path, *names):
    for name in names:
        (tmp_path / f"{name}.release").touch()


def statuses(q):
    return {j.run_dir.rsplit("/", 1)[-1]: j.status for j in q.jobs()}


def test_jobs_that_fit_start_together_and_one_that_does_not_waits(tmp_path):
    q, probe = gpu_queue(tmp_path)
    assert q.packer.mode == "gpu" and "GPU memory" in q.packer.describe()
    for name, recipe in (("a", "small"), ("b", "small"), ("c", "medium"), ("d", "small")):
        q.enqueue(name, recipe, tmp_path / name)
    q.tick()
    # a: nothing ran, it starts. b: 24 - 2 held by a = 22 free, less a's remaining growth (4.9 - 2) = 19.1 >= 4.9.
    # c (medium, 10.4 needed): free 20, less a's and b's growth (2.9 each) = 14.2 -> starts.
    # d: free 15.5, less 2.9 + 2.9 + 5.9 = 11.7 left for growth -> 3.8 < 4.9: d waits.
    assert statuses(q) == {"a": "running", "b": "running", "c": "running", "d": "queued"}
    assert need_bytes(4 * GIB) == 4 * GIB * 1.1 + MARGIN_GIB * GIB
    for _ in range(5):
        q.tick()
    assert statuses(q)["d"] == "queued"  # still no room, and nobody was pushed out
    release(tmp_path, "c")
    deadline = time.time() + 30
    while statuses(q)["d"] != "running":
        assert time.time() < deadline, statuses(q)
        q.tick()
        time.sleep(0.02)
    release(tmp_path, "a", "b", "d")
    for job in q.jobs():
        assert q.wait(job.id, timeout=30).status == "done"  # every job ended on its own: none was killed
    assert probe.calls > 0


def test_a_job_bigger_than_the_room_waits_and_blocks_the_ones_behind_it(tmp_path):
    q, _ = gpu_queue(tmp_path)
    q.enqueue("a", "medium", tmp_path / "a")
    q.enqueue("b", "big", tmp_path / "b")  # 33.5 GiB needed: never fits beside a
    q.enqueue("c", "small", tmp_path / "c")  # would fit, but does not jump the waiting big job
    q.tick()
    assert statuses(q) == {"a": "running", "b": "queued", "c": "queued"}
    release(tmp_path, "a")
    q.wait(q.jobs()[-1].id, timeout=30)
    deadline = time.time() + 30
    while statuses(q)["b"] != "running":  # alone on the GPU, the big one starts (the estimate may be pessimistic)
        assert time.time() < deadline
        q.tick()
        time.sleep(0.02)
    q.tick()
    assert statuses(q)["c"] == "queued"
    release(tmp_path, "b", "c")
    for job in q.jobs():
        q.wait(job.id, timeout=30)


def test_unknown_peak_and_multi_gpu_jobs_run_alone(tmp_path):
    q, _ = gpu_queue(tmp_path)
    q.enqueue("a", "unknown-model", tmp_path / "a")
    q.enqueue("b", "small", tmp_path / "b")
    q.tick()
    assert statuses(q) == {"a": "running", "b": "queued"}
    release(tmp_path, "a")
    q.wait(q.jobs()[-1].id, timeout=30)
    q.tick()
    q.enqueue("c", "small", tmp_path / "c", gpus=2)
    q.tick()
    assert statuses(q)["b"] == "running" and statuses(q)["c"] == "queued"
    release(tmp_path, "b", "c")
    for job in q.jobs():
        q.wait(job.id, timeout=30)


def test_cpu_concurrency_follows_cores_and_caps_threads(tmp_path):
    assert Packer("auto", probe=lambda: None, cores=2).slots == 1
    packer = Packer("auto", probe=lambda: None, cores=16)
    assert (packer.mode, packer.slots, packer.threads_per_job()) == ("cpu", 4, 4)
    assert Packer(3, probe=lambda: None).describe() == "at most 3 at a time"

    def env_command(job):
        return [sys.executable, "-c", ENV, str(job.run_dir) + ".threads"]

    q = JobQueue(tmp_path / "home", command=env_command, poll_s=0.02, packer=Packer("auto", probe=lambda: None, cores=8), estimate=lambda p: None)
    jobs = [q.enqueue(u, "r", tmp_path / u) for u in ("a", "b", "c")]
    q.tick()
    assert sum(j.status == "running" for j in q.jobs()) == 2  # 8 cores, at least 4 a job
    for job in jobs:
        q.wait(job.id, timeout=30)
    assert {(tmp_path / f"{u}.threads").read_text() for u in ("a", "b", "c")} == {"4"}
