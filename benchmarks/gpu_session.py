"""Every GPU check of the project in one command, inside a fixed time budget: tests on CUDA, then the benchmarks.

    python -m benchmarks.gpu_session --out DIR [--budget-s 330] [--wheels .whl] [--stages a,b,...]
    python -m benchmarks.gpu_session --smoke --out DIR      # the same plan on the CPU, tiny shapes (CI runs this)

A GPU is often lent for a few minutes only, on a machine that cannot download anything. This script is what
such a session runs: it installs the project's pinned packages from carried wheels (benchmarks/gpu_wheels.sh
downloads them on a machine with a package index), checks that everything imports and sees the GPU, then runs
the stages in order of what the open targets need most, each under its own time limit and all of them under
one budget. The benchmarks write into DIR/results and rewrite their JSON after every measurement, and
summary.md and results.tar.gz are rewritten after every stage, so a stage, or the whole session, cut off by
its limit still leaves what it measured: session.log (everything printed), summary.md (each stage's status
and time, and every target verdict the benchmarks printed), results/ and results.tar.gz (the benchmarks'
JSON and markdown and the test reports).

Each stage runs in its own process from the repository root, the benchmarks as `python -m benchmarks.<name>`.
The project is used from this source tree, not installed: the stages find `studio` at the root and
`studio_kernels` under kernels/ through PYTHONPATH. Only the standard library is used here: the script must
start before the wheels are installed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import ROOT

# What a stage prints that the summary repeats: the benchmarks' target verdicts and pytest's final count.
VERDICT = re.compile(r"\b(pass|FAIL)\b|\b\d+ (passed|failed|errors?)\b")

# Required: what the kernels and the nf4 benchmark need. Optional: what only some stages need (bench_memory
# imports trl, which imports datasets, which needs a recent pyarrow): a failure there costs those stages, not all.
PREFLIGHT = """
import importlib, torch
for name, required in [("triton", 1), ("transformers", 1), ("peft", 1), ("accelerate", 1), ("bitsandbytes", 1),
                       ("pydantic", 1), ("studio", 1), ("studio_kernels", 1), ("trl", 0), ("datasets", 0)]:
    try:
        module = importlib.import_module(name)
    except Exception as err:
        if required:
            raise
        print(f"{name} does not import ({type(err).__name__}: {err}); the stages that need it will fail")
        continue
    print(f"{name} {getattr(module, '__version__', '(project)')}")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: "
      + (torch.cuda.get_device_name() if torch.cuda.is_available() else "none"))
"""
NEEDS_CUDA = """
if not torch.cuda.is_available():
    raise SystemExit("gpu_session: no CUDA device found; the session measures a GPU (--smoke runs its plan on the CPU)")
"""


GPU_TEST_FILES = ["kernels/tests/test_gpu.py", "kernels/tests/test_fused_ce.py"]


@dataclass
class Stage:
    """One step of the session: a command, its time limit, and the least time worth starting it with."""

    name: str
    args: list[str]
    limit_s: int
    min_s: int = 30
    gpu_only: bool = False  # skipped by --smoke (the CPU has nothing to check there)
    in_smoke: bool = True  # False: under --smoke it would repeat an earlier stage exactly
    proposes_dispatch: bool = False  # a matmul sweep: later stages dispatch with the threshold it measured
    env: dict = field(default_factory=dict)  # set for this stage only


# Device time is lent 15 minutes at a time, machine start included (assumed 180 s: "minutes"), with the
# results fetched after each run. The default budget leaves room for a second full run in the same lease
# (2 x (330 + 60) + 180 = 960 would not; 2 x (330 + 30) + 180 = 900 does): a run that fails early can be
# fixed and run again. tests/benchmarks/test_compile_plan.py holds the arithmetic to this.
DEVICE_SECONDS = 900
MACHINE_START_S = 180
PER_RUN_OVERHEAD_S = 30  # copying the tree and the wheels there, fetching the results back
DEFAULT_BUDGET_S = 330

# The GPU tests other than the every-config one, which has a stage of its own (it compiles about 50 binaries).
EVERY_CONFIG_TEST = "every_matmul_config"

# bench_grpo on the GPU: the bundled SmolLM2-135M (its shape with random weights where the demo package is not
# installed), 1 warm-up + 3 measured GRPO steps per config at 64-token completions; about a minute on an H200.
# benchmarks/compile_plan.py reads the same arguments to predict what the stage compiles.
GRPO_STAGE_ARGS = ["--steps", "3", "--completion", "64"]


def stages(smoke: bool, results: Path) -> list[Stage]:
    """The session's plan, most needed first: GPU correctness, the quick kernel and QLoRA figures, GRPO's step
    and generation speed, every config, then the full sweeps, memory and the fused loss.

    Under --smoke each benchmark runs its own tiny CPU variant, so CI exercises this plan end to end.
    Each stage's compile time is predicted by benchmarks/compile_plan.py and checked against its limit.
    """
    py = sys.executable
    out = ["--out", str(results)]
    smoke_flag = ["--smoke"] if smoke else []
    quick = ["--quick"] if not smoke else []

    def pytest(name: str, select: str) -> list[str]:
        junit = ["--junitxml", str(results / f"{name}.xml"), "-p", "no:cacheprovider"]
        return [py, "-m", "pytest", "-q", "-m", "gpu", "-k", select, *GPU_TEST_FILES, *junit]

    fixed = {"STUDIO_KERNEL_AUTOTUNE": "0"}
    return [
        Stage("preflight", [py, "-c", PREFLIGHT + ("" if smoke else NEEDS_CUDA)], 30, min_s=10),
        # The kernels compiled for the GPU against bitsandbytes' CUDA kernels, and the fused loss on CUDA, with
        # the first config of each fixed chain (autotuning every shape these tests touch would compile for
        # minutes). Only the files holding GPU tests: collecting the whole folder would import modules that
        # need packages the GPU machine may lack, and one import error stops pytest before any test runs.
        Stage("gpu-tests", pytest("gpu-tests", f"not {EVERY_CONFIG_TEST}"), 60, gpu_only=True, env=fixed),
        # The first figures: the quick matmul sweep (proposes the dispatch threshold), then the 1B training
        # step with studio QLoRA timed first.
        Stage("nf4-quick-matmul", [py, "-m", "benchmarks.bench_nf4", "--skip-training", *quick, *smoke_flag, *out],
              150, min_s=60, proposes_dispatch=True),
        Stage("nf4-quick-training", [py, "-m", "benchmarks.bench_nf4", "--skip-matmul", *quick, *smoke_flag, *out],
              90, min_s=45),
        # GRPO: step time and generation tokens/s of studio QLoRA, bitsandbytes QLoRA and bf16 LoRA on one model.
        # After the quick stages, so it runs by default only when they leave it its minimum.
        Stage("grpo", [py, "-m", "benchmarks.bench_grpo", *(smoke_flag or GRPO_STAGE_ARGS), *out], 120, min_s=90),
        # The UI's queue packing real `studio train` jobs by memory (the GPU seen as 8 GiB): each one's measured peak
        # against its estimate. Fixed kernel configs: each job is a process of its own, and would autotune again.
        Stage("packing", [py, "-m", "benchmarks.bench_packing", *smoke_flag, *out], 150, min_s=90, env=fixed),
        # Every distinct config of both matmul kernels, once each, for its values.
        Stage("gpu-configs", pytest("gpu-configs", EVERY_CONFIG_TEST), 150, min_s=90, gpu_only=True, env=fixed),
        # What a second run (or a longer budget) adds: the full sweep, the 8B step, memory, the fused loss.
        Stage("nf4-matmul", [py, "-m", "benchmarks.bench_nf4", "--skip-training", *smoke_flag, *out], 120, min_s=60,
              in_smoke=False, proposes_dispatch=True),
        Stage("nf4-training", [py, "-m", "benchmarks.bench_nf4", "--skip-matmul", *smoke_flag, *out], 150, min_s=60,
              in_smoke=False),
        # The 8B QLoRA target setting (batch 1, seq 2048), then estimate vs measured peak over the 1B grid.
        Stage("memory-target", [py, "-m", "benchmarks.bench_memory", "--target", *smoke_flag, *out], 120, min_s=60),
        Stage("memory", [py, "-m", "benchmarks.bench_memory", "--quick", *smoke_flag, *out], 150, min_s=60),
        Stage("fused_ce", [py, "-m", "benchmarks.bench_fused_ce", "--quick", *smoke_flag, *out], 90),
    ]


def install_wheels(wheels: Path | None, log) -> Path | None:
    """pip-install every wheel in `wheels` into a fresh folder (no index, no dependencies); return it, or None if none.

    Raises RuntimeError when pip refuses them (wheels for another Python, say); session.log has pip's words.
    """
    found = sorted(wheels.glob("*.whl")) if wheels and wheels.is_dir() else []
    if not found:
        return None
    target = Path(tempfile.mkdtemp(prefix="studio-site-"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, found)]
    done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"pip could not install the {len(found)} wheels in {wheels}")
    return target


def stage_environment(site: Path | None, smoke: bool) -> dict:
    """The environment every stage runs in: offline, with the wheels, then the project's source tree, first on the path.

    The GPU machine installs only the carried wheels, so the project's two packages come from this checkout:
    `studio` from the repository root (which also makes `benchmarks` importable) and `studio_kernels`
    from kernels/.
    """
    env = dict(os.environ)
    paths = [str(p) for p in (site, ROOT, ROOT / "kernels") if p] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    if smoke:
        env["TRITON_INTERPRET"] = "1"
    return env


def measured_dispatch(results: Path, since: float = 0.0) -> str | None:
    """STUDIO_NF4_LARGE_M for the stages after a matmul sweep: the threshold it just measured (in a file written
    after `since`, a time.time(): --out may hold an earlier session's results), if any."""
    import json

    fresh = [p for p in results.glob("nf4*.json") if p.stat().st_mtime >= since]
    for path in sorted(fresh, reverse=True):
        proposal = json.loads(path.read_text()).get("dispatch")
        if proposal:
            return str(proposal["large_m"] if proposal["large_m"] is not None else 2**62)  # None: fused at every M
    return None


def run_stage(stage: Stage, env: dict, log, limit_s: float) -> tuple[str, float, list[str]]:
    """Run one stage under `limit_s`; return its status (ok, failed rc=N, cut off), seconds, and its verdict lines."""
    log.write(f"\n===== {stage.name}: {' '.join(stage.args)} (limit {limit_s:.0f} s)\n")
    log.flush()
    start = time.monotonic()
    proc = subprocess.Popen(stage.args, cwd=ROOT, env={**env, **stage.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit_s)
        status = "ok" if proc.returncode == 0 else f"failed (rc={proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the whole group: pytest and benchmark children too
        out, _ = proc.communicate()
        status = "cut off at its time limit"
    log.write(out)
    log.flush()
    print(f"[{stage.name}] {status} in {time.monotonic() - start:.0f} s", flush=True)
    lines = [line.strip() for line in out.splitlines() if VERDICT.search(line)]
    return status, time.monotonic() - start, lines


def summary(rows: list[tuple[str, str, float, list[str]]], budget_s: float, used_s: float, smoke: bool) -> str:
    """The session in markdown: one row per stage, then every verdict line the stages printed."""
    lines = ["# GPU session" + (" (smoke run on the CPU: the numbers mean nothing)" if smoke else ""), "",
             f"Budget {budget_s:.0f} s, used {used_s:.0f} s.", "", "| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {status} | {secs:.0f} |" for name, status, secs, _ in rows]
    for name, _, _, verdicts in rows:
        if verdicts:
            lines += ["", f"## {name}", "", *[f"- {v}" for v in verdicts]]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list, budget_s: float, used_s: float, smoke: bool) -> None:
    """summary.md and results.tar.gz as they stand: rewritten after every stage, so a session cut off keeps them."""
    (out / "summary.md").write_text(summary(rows, budget_s, used_s, smoke))
    partial = out / "results.tar.gz.part"
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(out / "results", arcname="results")
    partial.replace(out / "results.tar.gz")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where session.log, summary.md, results/ and results.tar.gz go")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"the whole session's seconds (default {DEFAULT_BUDGET_S}: room for a rerun in one lease)")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="wheels to install first (default .whl)")
    parser.add_argument("--no-wheels", action="store_true", help="install nothing (a venv that has the project's packages)")
    parser.add_argument("--stages", help="comma-separated stage names to run (default: all, in plan order)")
    parser.add_argument("--smoke", action="store_true", help="the same plan on the CPU at tiny shapes")
    args = parser.parse_args(argv)

    start = time.monotonic()
    results = args.out / "results"  # the benchmarks write here directly: nothing waits for the end to be kept
    results.mkdir(parents=True, exist_ok=True)
    plan = stages(args.smoke, results)
    known = [s.name for s in plan]
    wanted = args.stages.split(",") if args.stages else known
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        print(f"gpu_session: unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(known)}", file=sys.stderr)
        return 2
    rows = []
    with open(args.out / "session.log", "w") as log:
        try:
            site = install_wheels(None if args.no_wheels else args.wheels, log)
        except RuntimeError as err:
            rows.append(("wheels", f"failed: {err} (see session.log)", time.monotonic() - start, []))
            plan = []  # nothing can run without them; the summary and the (empty) results are still written
            site = None
        env = stage_environment(site, args.smoke)
        for stage in plan:
            left, started = args.budget_s - (time.monotonic() - start), time.time()
            if stage.name not in wanted:
                continue
            if args.smoke and (stage.gpu_only or not stage.in_smoke):
                rows.append((stage.name, "skipped (GPU only)" if stage.gpu_only else "skipped (repeats a quick stage)", 0.0, []))
            elif left < stage.min_s:
                rows.append((stage.name, f"skipped ({left:.0f} s left, needs {stage.min_s})", 0.0, []))
            else:
                rows.append((stage.name, *run_stage(stage, env, log, min(stage.limit_s, left))))
            threshold = measured_dispatch(results, since=started) if stage.proposes_dispatch else None
            if threshold:
                env["STUDIO_NF4_LARGE_M"] = threshold
                log.write(f"\n(later stages dispatch with STUDIO_NF4_LARGE_M={env['STUDIO_NF4_LARGE_M']})\n")
            write_outputs(args.out, rows, args.budget_s, time.monotonic() - start, args.smoke)
            if stage.name == "preflight" and not rows[-1][1].startswith(("ok", "skipped")):
                break  # nothing else can run when the packages do not import
    write_outputs(args.out, rows, args.budget_s, time.monotonic() - start, args.smoke)
    print((args.out / "summary.md").read_text())
    return 0 if all(status == "ok" or status.startswith("skipped") for _, status, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
