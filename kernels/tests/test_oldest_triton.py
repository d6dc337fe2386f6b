"""The kernels under the oldest Triton they declare (kernels/pyproject.toml), not only the one pinned here.

GPU images ship their own Triton (a common CUDA image has 3.6 while requirements.lock pins 3.9), so the
declared floor is tested: a side environment holds that Triton alone, sees everything else from this
one, and runs the interpreter kernel tests. Triton 3.6's interpreter needs NumPy < 2.3 (it converts
one-element arrays to ints, which NumPy 2.3 refuses); compiled kernels on a GPU do not use NumPy.
"""

from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

KERNELS = Path(__file__).resolve().parents[1]
REPO = KERNELS.parent
NUMPY_FOR_OLD_INTERPRETER = "numpy==2.2.6"
# Every kernel test file but this one (it would recurse) and the GPU-only one.
SUITES = sorted(p.name for p in Path(__file__).parent.glob("test_*.py") if p.name not in {Path(__file__).name, "test_gpu.py"})


def oldest_triton() -> str:
    """The lowest Triton version kernels/pyproject.toml accepts (its `>=` bound)."""
    deps = tomllib.loads((KERNELS / "pyproject.toml").read_text())["project"]["dependencies"]
    (triton,) = [Requirement(d) for d in deps if Requirement(d).name == "triton"]
    (floor,) = [s.version for s in triton.specifier if s.operator == ">="]
    return floor


@pytest.fixture(scope="session")
def old_triton_python(tmp_path_factory) -> Path:
    """A venv with only the oldest Triton (and an old enough NumPy); the rest comes from this interpreter.

    Kept under .cache/ so a second `make test` reuses it instead of downloading Triton again.
    """
    version = oldest_triton()
    env_dir = REPO / ".cache" / f"triton-{version}"
    python = env_dir / "bin" / "python"
    ready = env_dir / ".ready"
    if not ready.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env_dir)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        f"triton=={version}", NUMPY_FOR_OLD_INTERPRETER], check=True)
        # addsitedir (not a bare path) so this environment's .pth files run too: the editable kernels install.
        ours = site.getsitepackages()[0]
        (next((env_dir / "lib").glob("python*/site-packages")) / "studio-reuse.pth").write_text(
            f"import site; site.addsitedir({ours!r})\n")
        ready.write_text(version)
    return python


@pytest.mark.slow
def test_kernel_tests_pass_under_the_oldest_declared_triton(old_triton_python):
    version = oldest_triton()
    probe = subprocess.run([str(old_triton_python), "-c", "import triton, numpy, studio_kernels; print(triton.__version__)"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert Version(probe.stdout.strip()) == Version(version)  # the side environment really runs the old Triton
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [str(old_triton_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES],
        cwd=KERNELS / "tests", env=env, capture_output=True, text=True,
    )
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    summary = result.stdout.strip().splitlines()[-1]
    assert int(re.search(r"(\d+) passed", summary).group(1)) >= 100, summary
    assert not re.search(r"failed|error", summary), summary
