"""Crashes and interruptions: SIGKILL at random moments and Ctrl-C both leave a run that resumes to the
same adapter as an uninterrupted run (CPU training is deterministic), and a torn checkpoint is never used."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import recipe_dict
from safetensors.torch import load_file

from studio.training.checkpoints import is_intact, last_intact_checkpoint
from studio.training.prepare import resume_recipe
from studio.training.rundir import read_metrics
from studio.training.train import train

STEPS = 20  # long enough that a kill after at most half the steps always interrupts the run


def _recipe_file(tmp_path: Path, model_dir: Path, data: Path, name: str, save_steps: int = 2) -> tuple[Path, Path]:
    run_dir = tmp_path / name
    raw = recipe_dict(model_dir, data, run_dir, train={"max_steps": STEPS, "save_steps": save_steps, "save_total_limit": 10})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path, run_dir


def _start(recipe: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.Popen([sys.executable, "-m", "studio.cli", "train", str(recipe), "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(run_dir: Path, proc: subprocess.Popen, steps: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if sum(1 for r in read_metrics(run_dir) if "train_loss" in r) >= steps:
            return
        time.sleep(0.05)


def _adapter(run_dir: Path) -> dict:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def _assert_same_adapter(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key


@pytest.fixture(scope="module")
def reference(tiny_llama_dir, tiny_data, tmp_path_factory):
    """An uninterrupted run, trained in a subprocess like the interrupted ones."""
    tmp = tmp_path_factory.mktemp("reference")
    recipe, run_dir = _recipe_file(tmp, tiny_llama_dir, tiny_data, "ref")
    proc = _start(recipe)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return _adapter(run_dir), [r["train_loss"] for r in read_metrics(run_dir) if "train_loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_moment_then_resume_gives_the_same_adapter(seed, reference, tiny_llama_dir, tiny_data, tmp_path):
    rng = random.Random(seed)
    recipe, run_dir = _recipe_file(tmp_path, tiny_llama_dir, tiny_data, f"kill{seed}")
    proc = _start(recipe)
    # Kill after a random number of logged steps plus a random delay: sometimes mid-step,
    # sometimes while a checkpoint is being written.
    _wait_for_steps(run_dir, proc, rng.randint(1, STEPS // 2))
    time.sleep(rng.uniform(0.0, 0.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (run_dir / "adapter").exists(), "the kill came too late to interrupt anything"
    train(resume_recipe(run_dir), resume=True, progress=False)
    ref_adapter, ref_losses = reference
    _assert_same_adapter(_adapter(run_dir), ref_adapter)
    losses = [r["train_loss"] for r in read_metrics(run_dir) if "train_loss" in r]
    assert [r["step"] for r in read_metrics(run_dir) if "train_loss" in r] == list(range(1, STEPS + 1))
    assert losses == pytest.approx(ref_losses, rel=1e-6)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_stops_then_resume_finishes(reference, tiny_llama_dir, tiny_data, tmp_path):
    # save_steps larger than the run: the only checkpoint is the one Ctrl-C asks for.
    recipe, run_dir = _recipe_file(tmp_path, tiny_llama_dir, tiny_data, "ctrlc", save_steps=100)
    proc = _start(recipe)
    _wait_for_steps(run_dir, proc, 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "resume" in err
    checkpoint = last_intact_checkpoint(run_dir / "checkpoints")
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) >= 2
    train(resume_recipe(run_dir), resume=True, progress=False)
    _assert_same_adapter(_adapter(run_dir), reference[0])


def test_a_torn_checkpoint_is_skipped(tiny_llama_dir, tiny_data, tmp_path):
    raw = recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "torn", train={"max_steps": 4, "save_steps": 2, "save_total_limit": 10})
    from studio.config.load import load_recipe

    result = train(load_recipe(raw), progress=False)
    folder = result.run_dir / "checkpoints"
    newest = folder / "checkpoint-4"
    assert is_intact(newest) and is_intact(folder / "checkpoint-2")
    victim = newest / "adapter_model.safetensors"
    victim.write_bytes(victim.read_bytes()[:-10])  # a write cut short by a crash
    assert not is_intact(newest)
    assert last_intact_checkpoint(folder) == folder / "checkpoint-2"
    (newest / "manifest.json").unlink()
    assert last_intact_checkpoint(folder) == folder / "checkpoint-2"


@pytest.mark.slow
def test_sigkill_during_grpo_then_resume_gives_the_same_adapter(tiny_llama_dir, tmp_path):
    """GRPO samples its own training data: after SIGKILL the resumed run must sample, score and update exactly as
    the uninterrupted one did (the sampling RNG travels with each checkpoint)."""
    rows = [{"prompt": f"add {i % 10} and {(i * 3) % 10}", "answer": str(i % 10 + (i * 3) % 10)} for i in range(32)]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(__import__("json").dumps(r) + "\n" for r in rows), encoding="utf-8")

    def recipe(name: str) -> tuple[Path, Path]:
        run_dir = tmp_path / name
        raw = recipe_dict(tiny_llama_dir, data, run_dir, method="grpo", train={"max_steps": 12, "save_steps": 2, "save_total_limit": 10, "batch_size": 4},
                          grpo={"adapter": "lora", "num_generations": 2, "max_completion_length": 6, "rewards": [{"name": "length_target", "args": {"target": 8, "tolerance": 2}}]})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return path, run_dir

    ref_recipe, ref_dir = recipe("grpo_ref")
    proc = _start(ref_recipe)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    kill_recipe, kill_dir = recipe("grpo_kill")
    proc = _start(kill_recipe)
    _wait_for_steps(kill_dir, proc, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (kill_dir / "adapter").exists(), "the kill came too late to interrupt anything"
    train(resume_recipe(kill_dir), resume=True, progress=False)
    _assert_same_adapter(_adapter(kill_dir), _adapter(ref_dir))
    rewards = lambda d: [r["reward"] for r in read_metrics(d) if "reward" in r]  # noqa: E731
    assert rewards(kill_dir) == pytest.approx(rewards(ref_dir), rel=1e-6) and len(rewards(ref_dir)) == 12
