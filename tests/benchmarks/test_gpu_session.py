"""benchmarks.gpu_session: the one-command GPU session, exercised on the CPU with --smoke."""

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_session

ROOT = Path(__file__).resolve().parents[2]
SESSION = [sys.executable, "-m", "benchmarks.gpu_session"]


def _session(tmp_path, *args, timeout=240):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("TRITON_INTERPRET", None)  # the session sets it for its own stages under --smoke
    done = subprocess.run([*SESSION, "--out", str(tmp_path / "out"), "--wheels", str(tmp_path / "no-wheels"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return done, tmp_path / "out"


def _stage_rows(summary: str) -> dict:
    """{stage: status} from summary.md's table."""
    rows = [line.strip("|").split("|") for line in summary.splitlines() if line.startswith("| ") and not line.startswith("| stage")]
    return {cells[0].strip(): cells[1].strip() for cells in rows}


@pytest.mark.slow
def test_smoke_session_runs_its_stages_and_packs_the_results(tmp_path):
    done, out = _session(tmp_path, "--smoke", "--stages", "preflight,fused_ce,gpu-tests,nf4-quick-matmul,nf4-matmul")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["results", "results.tar.gz", "session.log", "summary.md"]
    summary = (out / "summary.md").read_text()
    rows = _stage_rows(summary)
    assert rows == {"preflight": "ok", "gpu-tests": "skipped (GPU only)", "nf4-quick-matmul": "ok",
                    "nf4-matmul": "skipped (repeats a quick stage)", "fused_ce": "ok"}
    # the benchmark's target verdicts are repeated under its stage (at smoke shapes they are meaningless FAILs)
    verdicts = summary.split("## fused_ce", 1)[1]
    assert verdicts.count("\n- ") >= 4 and "speed_vs_torch_bf16" in verdicts
    log = (out / "session.log").read_text()
    assert "studio_kernels (project)" in log and "device: none" in log  # the preflight's import check ran
    # the matmul benchmark's measured dispatch threshold is handed to the stages after it
    assert "(later stages dispatch with STUDIO_NF4_LARGE_M=" in log
    assert f"===== nf4-quick-matmul: {sys.executable} -m benchmarks.bench_nf4 --skip-training --smoke" in log  # a module
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("results/fused_ce-smoke") and n.endswith(".json") for n in names), names
    assert any(n.startswith("results/fused_ce-smoke") and n.endswith(".md") for n in names), names
    assert any(n.startswith("results/nf4-smoke") and n.endswith(".json") for n in names), names


def test_stages_that_do_not_fit_the_budget_are_skipped_and_said_so(tmp_path):
    done, out = _session(tmp_path, "--smoke", "--budget-s", "5")
    assert done.returncode == 0, done.stderr
    rows = _stage_rows((out / "summary.md").read_text())
    assert rows["preflight"].startswith("skipped (") and "needs 10" in rows["preflight"]
    assert rows["nf4-quick-matmul"].startswith("skipped (") and rows["gpu-tests"] == "skipped (GPU only)"


def test_unknown_stage_is_refused_with_the_list(tmp_path):
    done, out = _session(tmp_path, "--stages", "preflight,warp-drive")
    assert done.returncode == 2
    assert "unknown stage(s) warp-drive" in done.stderr and "preflight, gpu-tests, nf4" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_session_stops_after_the_preflight(tmp_path):
    done, out = _session(tmp_path)
    assert done.returncode == 1
    rows = _stage_rows((out / "summary.md").read_text())
    assert list(rows) == ["preflight"] and rows["preflight"].startswith("failed")
    assert "no CUDA device found" in (out / "session.log").read_text()


def test_the_gpu_test_stage_names_every_file_with_gpu_tests():
    """The stage collects named files only (see GPU_TEST_FILES); a GPU test in any other file would never run there.

    Every folder pytest collects (the studio's tests/ and the kernels' kernels/tests/) is searched.
    """
    mark = re.compile(r"^\s*@?pytest\.mark\.gpu\b", re.M)  # a decorator, or an entry of a module's pytestmark list
    files = [p for folder in ("tests", "kernels/tests") for p in (ROOT / folder).rglob("test_*.py")]
    marked = sorted(str(p.relative_to(ROOT)) for p in files if mark.search(p.read_text()))
    assert marked and set(marked) <= set(gpu_session.GPU_TEST_FILES), marked
    assert all((ROOT / f).is_file() for f in gpu_session.GPU_TEST_FILES), gpu_session.GPU_TEST_FILES


def test_stages_import_the_project_from_the_source_tree(tmp_path):
    """The GPU machine installs only the wheels: the stages' path holds the repository root and kernels/.

    `benchmarks` is installed nowhere, so importing it from another folder shows the root really is on the path.
    """
    env = gpu_session.stage_environment(None, smoke=True)
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [str(ROOT), str(ROOT / "kernels")]
    probe = "import benchmarks, studio, studio_kernels; print(benchmarks.__file__); print(studio_kernels.__file__)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(ROOT / "benchmarks" / "__init__.py"), str(ROOT / "kernels" / "studio_kernels" / "__init__.py")]


def test_wheels_pip_refuses_end_the_session_with_a_summary(tmp_path):
    """Wheels that do not install (another Python's, or broken) leave summary.md and the log, and exit 1."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    done = subprocess.run([*SESSION, "--smoke", "--out", str(tmp_path / "out"), "--wheels", str(wheels)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    rows = _stage_rows((tmp_path / "out" / "summary.md").read_text())
    assert list(rows) == ["wheels"] and rows["wheels"].startswith("failed: pip could not install the 1 wheels")
    assert (tmp_path / "out" / "results.tar.gz").exists()


def test_a_session_cut_off_keeps_what_the_stages_before_measured(tmp_path, monkeypatch):
    """The outer time limit kills the session, not only a stage: the results so far must already be in --out."""
    def plan(smoke, results):
        write = f"import pathlib; pathlib.Path({str(results)!r}, 'first.json').write_text('{{}}')"
        return [gpu_session.Stage("first", [sys.executable, "-c", write], 30, min_s=1),
                gpu_session.Stage("second", [sys.executable, "-c", "pass"], 30, min_s=1)]

    real_run = gpu_session.run_stage

    def run_then_die(stage, *args):
        if stage.name == "second":
            raise KeyboardInterrupt  # the machine taken back mid-session
        return real_run(stage, *args)

    monkeypatch.setattr(gpu_session, "stages", plan)
    monkeypatch.setattr(gpu_session, "run_stage", run_then_die)
    with pytest.raises(KeyboardInterrupt):
        gpu_session.main(["--smoke", "--no-wheels", "--out", str(tmp_path / "out")])
    out = tmp_path / "out"
    assert (out / "results" / "first.json").exists()
    assert _stage_rows((out / "summary.md").read_text()) == {"first": "ok"}
    with tarfile.open(out / "results.tar.gz") as tar:
        assert "results/first.json" in tar.getnames()


def test_the_dispatch_threshold_comes_from_this_session_only(tmp_path):
    """--out may hold an earlier session's results: a sweep that wrote nothing must not hand theirs on."""
    import json
    import time

    old = tmp_path / "nf4-NVIDIA_H200-old.json"
    old.write_text(json.dumps({"dispatch": {"large_m": 256}}))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    started = time.time()
    assert gpu_session.measured_dispatch(tmp_path, since=started) is None
    (tmp_path / "nf4-NVIDIA_H200-new.json").write_text(json.dumps({"dispatch": {"large_m": None}}))
    assert gpu_session.measured_dispatch(tmp_path, since=started) == str(2**62)  # fused at every M


def test_the_grpo_stage_follows_the_quick_stages_with_the_benchmarks_gpu_settings(tmp_path):
    """bench_grpo at 3 measured steps and 64-token completions, after the four quick stages (so the default
    budget gives them their whole limits first); under --smoke its own tiny CPU run."""
    plan = gpu_session.stages(smoke=False, results=tmp_path)
    names = [s.name for s in plan]
    assert names.index("grpo") == names.index("nf4-quick-training") + 1
    grpo = plan[names.index("grpo")]
    assert grpo.args[1:3] == ["-m", "benchmarks.bench_grpo"] and grpo.args[3:7] == gpu_session.GRPO_STAGE_ARGS
    assert grpo.args[-2:] == ["--out", str(tmp_path)] and (grpo.limit_s, grpo.min_s) == (120, 90)
    smoke = next(s for s in gpu_session.stages(smoke=True, results=tmp_path) if s.name == "grpo")
    assert smoke.args[3:] == ["--smoke", "--out", str(tmp_path)] and smoke.in_smoke and not smoke.gpu_only


@pytest.mark.slow
def test_smoke_session_runs_the_grpo_stage(tmp_path):
    done, out = _session(tmp_path, "--smoke", "--stages", "preflight,grpo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _stage_rows((out / "summary.md").read_text()) == {"preflight": "ok", "grpo": "ok"}
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("results/grpo-smoke-cpu-smoke") and n.endswith(".md") for n in names), names
    assert f"===== grpo: {sys.executable} -m benchmarks.bench_grpo --smoke" in (out / "session.log").read_text()
