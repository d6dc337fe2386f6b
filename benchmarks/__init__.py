"""GPU benchmarks and the one-command GPU session, each run from the repository root as `python -m benchmarks.<name>`."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
RESULTS = ROOT / "benchmarks" / "results"  # where every benchmark writes by default, and the committed results live
