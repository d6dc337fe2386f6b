"""How fast the commands that load no model answer: `studio --help`, `--version`, `validate`, `recipes`.

    python -m benchmarks.bench_startup              # 7 runs of each, from an unrelated folder
    python -m benchmarks.bench_startup --runs 15

Each command runs as a fresh process (what a user waits for), with the bare interpreter (`python -c pass`)
and the import every command used to pay (`import torch, transformers`) timed in the same run as the two
baselines, so a slower or busier machine moves all the rows together. Targets (issue "One house"): `studio
--help` under 0.5 s and `studio validate RECIPE` under 2 s on the 2-core development machine. Writes
benchmarks/results/startup-<cpu>-<time>.json and .md naming the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import RESULTS
from benchmarks._gpu_env import Results

TARGETS_S = {"studio --help": 0.5, "studio validate smollm2/135m-qlora": 2.0}


def commands() -> dict[str, list[str]]:
    """What is timed: the two baselines, then the studio's light commands (through the installed console script)."""
    studio = shutil.which("studio", path=str(Path(sys.executable).parent)) or "studio"
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch, transformers'": [sys.executable, "-c", "import torch, transformers"],
        "studio --version": [studio, "--version"],
        "studio --help": [studio, "--help"],
        "studio validate smollm2/135m-qlora": [studio, "validate", "smollm2/135m-qlora"],
        "studio recipes": [studio, "recipes"],
    }


def time_once(argv: list[str], cwd: Path, env: dict) -> float:
    """Wall-clock seconds of one run of `argv`; raises when it fails (a broken command times nothing)."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-500:]}")
    return seconds


def machine() -> dict:
    """The CPU this ran on (the numbers are about it), in the form the results writer names files by."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"gpu": f"cpu{os.cpu_count()}", "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def markdown(result: dict) -> str:
    """The results as a table: median, min and max seconds, against the bare interpreter, and the targets."""
    lines = [f"# Start-up time, {result['env']['cpu']} ({result['env']['cores']} cores), {result['date']}", "",
             f"{result['runs']} runs each, every run a fresh process from an unrelated folder, offline.", "",
             "| command | median s | min s | max s | x bare python | target | verdict |", "|---|---|---|---|---|---|---|"]
    bare = result["rows"]["python -c pass"]["median_s"]
    for name, row in result["rows"].items():
        target = TARGETS_S.get(name)
        verdict = "" if target is None else ("pass" if row["median_s"] < target else "FAIL")
        lines.append(f"| `{name}` | {row['median_s']:.3f} | {row['min_s']:.3f} | {row['max_s']:.3f} | {row['median_s'] / bare:.1f} | "
                     f"{'' if target is None else f'< {target} s'} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Time every command `--runs` times (interleaved, so load changes hit all rows alike) and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (default 7)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("PYTHONPATH", None)
    timed = commands()
    samples: dict[str, list[float]] = {name: [] for name in timed}
    with tempfile.TemporaryDirectory(prefix="studio-startup-") as folder:
        for argv_ in timed.values():  # once untimed: the OS file cache is warm for every row alike
            time_once(argv_, Path(folder), env)
        for _ in range(args.runs):
            for name, argv_ in timed.items():
                samples[name].append(time_once(argv_, Path(folder), env))
    rows = {name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s), "samples_s": s} for name, s in samples.items()}
    env_info = machine()
    result = {"env": env_info, "date": time.strftime("%Y-%m-%d"), "runs": args.runs, "rows": rows,
              "targets_s": TARGETS_S, "verdicts": {k: rows[k]["median_s"] < v for k, v in TARGETS_S.items()}}
    results = Results(args.out, "startup", env_info)
    results.finish(result, lambda: markdown(result))
    print(markdown(result))
    return 0 if all(result["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
