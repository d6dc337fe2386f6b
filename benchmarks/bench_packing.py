"""Jobs packed onto one GPU by the UI's queue: each co-running job's measured peak memory against its estimate.

    python -m benchmarks.bench_packing                 # 4 SFT QLoRA jobs, the GPU treated as holding 8 GiB
    python -m benchmarks.bench_packing --budget-gib 0  # the whole GPU
    python -m benchmarks.bench_packing --smoke         # a tiny random model on the CPU: checks the code, measures nothing

The queue is the one `studio ui` runs (studio.ui.jobs.JobQueue with the memory packer of studio.ui.packing), and
each job is a real `python -m studio.cli train RECIPE` subprocess: QLoRA on the studio's NF4 kernels, a random-
weight model of SmolLM2-135M's shape (nothing is downloaded), each job with its own batch size and length so
their peaks differ. `--budget-gib` makes the packer see a smaller GPU (the free memory it measures, less what
lies beyond the budget), so that on a large GPU the jobs still have to share: which ones start together, and
which wait, is then decided exactly as on a GPU of that size.

While the queue drains, nvidia-smi is sampled every --sample-s seconds for each job's process: the largest
reading is the job's measured peak (what the driver reports, CUDA context included; the estimator's peak
counts a context too). Per job: the estimate, the measured peak, their ratio, when it started and ended,
and how many jobs ran beside it; overall, the most jobs that ran at once, the most memory they held
together, and whether every job ended on its own ("none was pushed out").

Writes benchmarks/results/packing-<device>-<time>.json and .md. Without CUDA (and without --smoke) it exits
with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import RESULTS, ROOT
from benchmarks._gpu_env import NO_CUDA_EXIT, Results, cuda_missing, environment, start_smoke

GIB = 2**30
DATA = ROOT / "examples" / "order_extraction" / "train.jsonl"
# (batch size, max length) of each job: peaks from a few hundred MiB to a few GiB on the 135M shape.
JOBS = [(4, 256), (8, 512), (16, 512), (4, 1024)]
SMOKE_JOBS = [(2, 128), (2, 128)]
STEPS = 20


def job_recipe(model: Path, run_dir: Path, batch: int, length: int, device: str, steps: int) -> dict:
    """One job's recipe: QLoRA r=16 on every linear layer, the given batch and length, `steps` steps, no eval."""
    dtype = "bfloat16" if device == "cuda" else "float32"
    return {
        "model": {"name": str(model), "dtype": dtype},
        "method": "qlora",
        "quant": {"backend": "studio", "compute_dtype": dtype},
        "lora": {"rank": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
        "data": {"path": str(DATA), "max_length": length},
        "train": {"max_steps": steps, "batch_size": batch, "grad_accum": 1, "learning_rate": 2e-4, "save_steps": steps,
                  "logging_steps": 1, "device": device, "seed": 42},
        "output": {"dir": str(run_dir), "name": run_dir.name},
    }


class BudgetProbe:
    """The packer's view of the GPU: nvidia-smi's reading, less the memory beyond `budget_gib` (0: the whole GPU)."""

    def __init__(self, budget_gib: float):
        self.budget = budget_gib * GIB

    def __call__(self):
        from studio.ui.packing import GpuMemory, probe_gpu_memory

        memory = probe_gpu_memory()
        if memory is None or not self.budget:
            return memory
        hidden = max(0.0, memory.total - self.budget)
        return GpuMemory(min(memory.total, self.budget), max(0.0, memory.free - hidden), memory.used_by_pid)


def sample(queue, peaks: dict, stop: threading.Event, every_s: float, concurrent: list) -> None:
    """Record each running job's largest GPU memory reading, and how many jobs (and bytes) ran at once."""
    from studio.ui.packing import probe_gpu_memory

    while not stop.is_set():
        running = [j for j in queue.jobs() if j.status == "running"]
        memory = probe_gpu_memory()
        held = 0.0
        for job in running:
            used = memory.used_by_pid.get(job.pid, 0.0) if memory else 0.0
            peaks[job.id] = max(peaks.get(job.id, 0.0), used)
            held += used
        concurrent.append((time.time(), len(running), held))
        stop.wait(every_s)


def overlap(job, jobs) -> int:
    """How many other jobs ran at some moment of this job's run."""
    return sum(1 for other in jobs if other.id != job.id and other.started < job.finished and job.started < other.finished)


def markdown(result: dict) -> str:
    """The results as a markdown report."""
    env = result["environment"]
    lines = [f"# Packed jobs on one GPU: measured peak vs estimate — {env['gpu']}", "",
             " · ".join(f"{k} {v}" for k, v in env.items() if k != "gpu"), "",
             f"Packing rule: {result['rule']}; the packer saw {result['budget']}. Each job is `studio train` (QLoRA, studio NF4 kernels, "
             f"{result['model']}), {result['steps']} steps. Peak = the largest nvidia-smi reading of the job's process.", "",
             "| job | batch x length | estimate GiB | measured GiB | measured / estimate | ran beside | status |", "|---|---|---|---|---|---|---|"]
    for r in result["jobs"]:
        ratio = f"{r['measured_gib'] / r['estimate_gib']:.2f}" if r["estimate_gib"] and r["measured_gib"] else "n/a"
        measured = f"{r['measured_gib']:.2f}" if r["measured_gib"] is not None else "n/a"
        estimate = f"{r['estimate_gib']:.2f}" if r["estimate_gib"] else "n/a"
        lines.append(f"| {r['id']} | {r['batch']} x {r['length']} | {estimate} | {measured} | {ratio} | {r['ran_beside']} | {r['status']} |")
    lines += ["", f"At most {result['most_at_once']} jobs ran at once, holding {result['most_held_gib']:.2f} GiB together; "
              f"every job ended on its own: {result['none_pushed_out']}; wall time {result['wall_s']:.0f} s."]
    if env.get("note"):
        lines += ["", f"Note: {env['note']}"]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-gib", type=float, default=8.0, help="GPU memory the packer may use, in GiB (0: the whole GPU; default 8)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"optimizer steps per job (default {STEPS})")
    parser.add_argument("--sample-s", type=float, default=0.25, help="seconds between nvidia-smi readings (default 0.25)")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="give up after this many seconds (default 300)")
    parser.add_argument("--smoke", action="store_true", help="a tiny random model on the CPU, two jobs: checks the code paths")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the jobs through the queue and write the results; 2 without CUDA (unless --smoke)."""
    args = parse_args(argv)
    if not args.smoke and cuda_missing("bench_packing", "it measures GPU memory of packed jobs"):
        return NO_CUDA_EXIT
    import yaml

    from benchmarks.bench_grpo import SMOKE_NOTE, write_random_model
    from studio.ui.jobs import FINAL, JobQueue
    from studio.ui.packing import Packer

    device = start_smoke() if args.smoke else "cuda"  # the jobs inherit TRITON_INTERPRET=1 on the CPU
    env = {**environment(device, gpu_gib=True), **({"note": SMOKE_NOTE} if args.smoke else {})}
    shape, specs, steps = ("tiny", SMOKE_JOBS, 1) if args.smoke else ("smollm2-135m", JOBS, args.steps)
    work = Path(tempfile.mkdtemp(prefix="bench-packing-"))
    model = write_random_model(work / "models" / shape, shape)
    packer = Packer(2) if args.smoke else Packer("auto", probe=BudgetProbe(args.budget_gib))
    queue = JobQueue(work / "home", packer=packer, poll_s=0.2)
    ids = {}
    for k, (batch, length) in enumerate(specs):
        run_dir = work / "runs" / f"job-{k}"
        recipe = work / f"job-{k}.yaml"
        recipe.write_text(yaml.safe_dump(job_recipe(model, run_dir, batch, length, device, steps)))
        ids[queue.enqueue(f"user{k}", recipe, run_dir).id] = (batch, length)
    peaks: dict[int, float] = {}
    concurrent: list = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(queue, peaks, stop, args.sample_s, concurrent), daemon=True)
    start = time.time()
    queue.start()
    sampler.start()
    try:
        while not all(j.status in FINAL for j in queue.jobs()) and time.time() - start < args.timeout_s:
            time.sleep(0.5)
    finally:
        stop.set()
        queue.close()
        sampler.join(timeout=5)
    jobs = queue.jobs()
    for job in jobs:  # never leave a training behind
        if job.status == "running":
            queue.stop(job.id)
    rows = []
    for job in sorted(jobs, key=lambda j: j.id):
        batch, length = ids[job.id]
        ended = job if job.finished else None
        rows.append({"id": job.id, "batch": batch, "length": length, "status": job.status,
                     "estimate_gib": job.peak_bytes / GIB if job.peak_bytes else None,
                     "measured_gib": (peaks[job.id] / GIB if peaks.get(job.id) else None) if not args.smoke else None,
                     "started": job.started, "finished": job.finished,
                     "ran_beside": overlap(job, [j for j in jobs if j.started and j.finished]) if ended and job.started else 0,
                     "log_tail": Path(job.log_path).read_text(errors="replace")[-800:] if job.status != "done" else ""})
    result = {"environment": env, "rule": packer.describe(), "budget": f"{args.budget_gib:g} GiB" if args.budget_gib and not args.smoke else "the whole device",
              "model": f"random weights, {shape} shape", "steps": steps, "jobs": rows,
              "most_at_once": max((n for _, n, _ in concurrent), default=0),
              "most_held_gib": max((h for _, _, h in concurrent), default=0.0) / GIB,
              "none_pushed_out": all(j.status == "done" for j in jobs), "wall_s": time.time() - start}
    out = Results(args.out, "packing", env)
    out.finish(result, lambda: markdown(result))
    print(json.dumps({k: result[k] for k in ("rule", "most_at_once", "none_pushed_out")}))
    return 0 if result["none_pushed_out"] else 1


if __name__ == "__main__":
    sys.exit(main())
