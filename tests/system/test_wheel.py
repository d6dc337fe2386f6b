"""The wheels work outside the clone: built from this repository, installed into a fresh virtual environment,
and run from an unrelated folder, they carry every package, the shipped recipes, the examples and the
kernels' dispatch table, and `studio demo --quick`, `studio validate` and `studio ui` all work.

The fresh environment reuses this environment's installed dependencies (a .pth line naming its
site-packages: .pth files found there, such as the editable install of this checkout, are not run), so
nothing is downloaded; the studio and its kernels come only from the wheels.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import helpers
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def run(*args, cwd, timeout=600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """The two wheels, built from a copy of the files git tracks (or would) with the pinned setuptools (no build isolation,
    no download). A copy, because an in-tree build reuses build/, where a deleted module would live on."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    done = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check", "-q",
               "-w", dist, source / "kernels", source, cwd=source)
    assert done.returncode == 0, done.stderr[-3000:]
    found = {w.name.split("-")[0]: w for w in dist.glob("*.whl")}
    assert set(found) == {"adapter_studio", "adapter_studio_kernels"}, found
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheels) -> Path:
    """A fresh virtual environment outside the clone with both wheels installed; its bin folder."""
    root = tmp_path_factory.mktemp("wheel-venv")
    assert run(sys.executable, "-m", "venv", root / "env", cwd=root).returncode == 0
    bin_dir = root / "env" / "bin"
    site = Path(run(bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).stdout.strip())
    (site / "reuse-installed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = run(bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check", *wheels.values(), cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return bin_dir


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """An unrelated working directory, with no checkout above it."""
    folder = tmp_path / "somewhere-else"
    folder.mkdir()
    return folder


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1")
    return env


def test_the_wheels_carry_every_package_and_the_package_data(wheels):
    names = zipfile.ZipFile(wheels["adapter_studio"]).namelist()
    for init in (REPO / "studio").rglob("__init__.py"):  # every package of the source tree, listed in pyproject or not
        assert init.relative_to(REPO).as_posix() in names, f"{init.parent.name} is missing from the wheel"
    recipes = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml"))
    assert recipes and all(f"studio/{r}" in names for r in recipes)
    assert "studio/recipes/deepseek-r1/no-think.jinja" in names
    assert "studio/evaluation/general_probes.json" in names  # the forgetting check's probe set
    examples = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "examples").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert examples and all(f"studio/{e}" in names for e in examples)
    kernels = zipfile.ZipFile(wheels["adapter_studio_kernels"]).namelist()
    assert "studio_kernels/dispatch.json" in kernels and "studio_kernels/ops/nf4_matmul.py" in kernels
    assert not [n for n in kernels if n.startswith("studio/")] and not [n for n in names if n.startswith("studio_kernels/")]


def test_the_installed_studio_is_the_wheel_and_validates_a_shipped_recipe(venv, elsewhere):
    env = clean_env()
    where = run(venv / "python", "-c", "import studio, studio_kernels; print(studio.__file__); print(studio_kernels.__file__)", cwd=elsewhere, env=env)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert line.startswith(str(venv.parent)) and not line.startswith(str(REPO)), where.stdout
    version = run(venv / "studio", "--version", cwd=elsewhere, env=env)
    assert re.fullmatch(r"adapter-studio \d+\.\d+\.\d+\n", version.stdout)
    done = run(venv / "studio", "validate", "smollm2/135m-qlora", "--json", cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["valid"] and info["data_rows"] == 400 and info["test_rows"] > 0
    assert info["recipe"]["data"]["path"].startswith(str(venv.parent))  # the examples installed with the wheel
    listed = run(venv / "studio", "recipes", "--json", cwd=elsewhere, env=env)
    assert {"smollm2/135m-qlora", "llama3.1/8b-qlora"} <= {r["name"] for r in json.loads(listed.stdout)["recipes"]}


def test_the_quick_demo_runs_from_the_wheel(venv, elsewhere):
    done = run(venv / "studio", "demo", "--quick", "--json", "--out", elsewhere / "runs", cwd=elsewhere, env=clean_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["train_steps"] == 3 and summary["merge_passed"] is True
    assert Path(summary["run_dir"]).is_relative_to(elsewhere)


def test_the_ui_serves_its_first_page_from_the_wheel(venv, elsewhere):
    port = helpers.free_port()
    proc = subprocess.Popen([str(venv / "studio"), "ui", "--port", str(port), "--home", str(elsewhere / "home")], cwd=elsewhere,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.time() + 180, None
        while time.time() < deadline and page is None and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode("utf-8", errors="replace")
            except OSError:
                time.sleep(1)
        assert page is not None, proc.stdout.read() if proc.poll() is not None else "no answer in time"
        assert "Adapter Studio" in page
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10) as response:
            config = response.read().decode()
        assert "smollm2/135m-qlora" in config  # the recipe picker lists the recipes shipped in the wheel
    finally:
        proc.terminate()
        proc.wait(timeout=30)
