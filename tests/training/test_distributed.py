"""Multi-process training through accelerate: the recipe section, the generated config, and real
two-process runs on the CPU over gloo (the same code path as `studio train RECIPE --gpus 2` on GPUs).

The equivalence test leans on arithmetic, not on luck: DDP with 2 processes x batch 2 sees the same 4
examples per step as one process with batch 4 (accelerate shards each global batch across ranks in
sampler order), the loss is normalised by the global token count, and DDP averages gradients, so the
two runs differ only by float32 summation order (the all-reduce adds two partial sums instead of one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import free_port, recipe_dict

from studio.config.load import load_recipe
from studio.errors import StudioError

REPO = Path(__file__).resolve().parents[2]


def _write_recipe(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _studio_train(recipe: Path, *extra: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "studio.cli", "train", str(recipe), "--gpus", "2", "--json", "--no-progress",
               "--set", f"distributed.main_process_port={free_port()}", *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _adapter(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_adapter(a: dict, b: dict) -> None:
    import torch

    assert sorted(a) == sorted(b)
    # lora_B entries reach ~2.5e-3 after these steps; float32 summation-order noise measured ~2e-8.
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-4, msg=key)


def _train_single(model_dir, data, out_dir, method="lora", backend="studio", **train):
    from studio.training.train import train as run

    recipe = load_recipe(recipe_dict(model_dir, data, out_dir, method=method, quant={"backend": backend}, train={"batch_size": 4, **train}))
    return run(recipe, progress=False).run_dir


# --- the recipe section and the generated config (fast) -----------------------------------------------


def test_distributed_section_defaults_to_one_process(tiny_llama_dir, tiny_data, tmp_path):
    recipe = load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path))
    assert recipe.distributed.strategy == "none" and recipe.distributed.world_size == 1


@pytest.mark.parametrize("section, message", [
    ({"strategy": "fsdp"}, "needs num_processes > 1"),
    ({"strategy": "ddp", "num_processes": 1}, "needs num_processes > 1"),
    ({"num_processes": 4}, "strategy is none"),
    ({"strategy": "ddp", "num_processes": 2, "num_machines": 2}, "main_process_ip"),
    ({"strategy": "ddp", "num_processes": 2, "num_machines": 2, "machine_rank": 2, "main_process_ip": "10.0.0.1"}, "machine_rank"),
])
def test_distributed_cross_checks(tiny_llama_dir, tiny_data, tmp_path, section, message):
    with pytest.raises(StudioError, match=message):
        load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path, distributed=section))


def test_gpus_flag_means_ddp_unless_the_recipe_says_fsdp(tiny_llama_dir, tiny_data, tmp_path):
    from studio.cli.gpus import gpus_overrides

    plain = _write_recipe(tmp_path / "plain.yaml", recipe_dict(tiny_llama_dir, tiny_data, tmp_path))
    recipe = load_recipe(plain, gpus_overrides(str(plain), [], 4))
    assert (recipe.distributed.strategy, recipe.distributed.num_processes) == ("ddp", 4)
    fsdp = _write_recipe(tmp_path / "fsdp.yaml", recipe_dict(tiny_llama_dir, tiny_data, tmp_path, distributed={"strategy": "fsdp"}))
    recipe = load_recipe(fsdp, gpus_overrides(str(fsdp), [], 2))
    assert (recipe.distributed.strategy, recipe.distributed.num_processes) == ("fsdp", 2)
    assert load_recipe(plain, gpus_overrides(str(plain), [], 1)).distributed.strategy == "none"


def test_accelerate_config_for_ddp_fsdp_and_two_machines(tiny_llama_dir, tiny_data, tmp_path):
    from studio.training.distributed import accelerate_config

    ddp = load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path, distributed={"strategy": "ddp", "num_processes": 4}))
    config = accelerate_config(ddp)
    assert config["distributed_type"] == "MULTI_GPU" and config["num_processes"] == 4 and config["use_cpu"] is False
    assert "fsdp_config" not in config
    fsdp = load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path, distributed={"strategy": "fsdp", "num_processes": 2}))
    config = accelerate_config(fsdp)
    assert config["distributed_type"] == "FSDP" and config["fsdp_config"]["fsdp_version"] == 2
    two = load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path, distributed={
        "strategy": "ddp", "num_processes": 8, "num_machines": 2, "machine_rank": 1, "main_process_ip": "10.0.0.1", "main_process_port": 29600}))
    config = accelerate_config(two)
    # accelerate counts processes over all machines and starts num_processes / num_machines per machine.
    assert (config["num_processes"], config["num_machines"], config["machine_rank"]) == (16, 2, 1)
    assert (config["main_process_ip"], config["main_process_port"]) == ("10.0.0.1", 29600)


def test_resume_refuses_a_new_gpu_count(tmp_path):
    from studio.cli import main

    assert main(["train", "--resume", str(tmp_path), "--gpus", "2"]) == 2


# --- real two-process runs over gloo (slow) ------------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_run(tiny_llama_dir, tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    recipe = _write_recipe(root / "ddp.yaml", recipe_dict(tiny_llama_dir, tiny_data, root / "run", train={"batch_size": 2}))
    done = _studio_train(recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run", json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_ddp_run_finishes_and_ranks_agree(ddp_run):
    run_dir, result = ddp_run
    assert result["steps"] == 4
    config = yaml.safe_load((run_dir / "accelerate.yaml").read_text())
    assert config["distributed_type"] == "MULTI_GPU" and config["num_processes"] == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    ranks = summary["distributed"]
    assert ranks["world_size"] == 2 and ranks["accelerate_type"] == "MULTI_CPU"  # gloo on this CPU
    digests = ranks["adapter_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1] and ranks["ranks_agree"] is True
    # Only rank 0 writes metrics: each step appears once.
    steps = [r["step"] for r in _metrics(run_dir) if "train_loss" in r]
    assert steps == [1, 2, 3, 4]
    assert {p.name for p in (run_dir / "checkpoints" / "checkpoint-4").glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    from studio.training.checkpoints import last_checkpoint

    assert last_checkpoint(run_dir).name == "checkpoint-4"  # the manifest was written after both ranks saved
    assert (run_dir / "README.md").exists() and (run_dir / "data.json").exists()
    resolved = load_recipe(run_dir / "recipe.yaml")
    assert (resolved.distributed.strategy, resolved.distributed.num_processes) == ("ddp", 2)


@pytest.mark.slow
def test_ddp_matches_one_process_with_the_same_effective_batch(ddp_run, tiny_llama_dir, tiny_data, tmp_path):
    run_dir, _ = ddp_run
    single = _train_single(tiny_llama_dir, tiny_data, tmp_path / "single")
    _assert_same_adapter(_adapter(run_dir), _adapter(single))
    losses = [[r["train_loss"] for r in _metrics(d) if "train_loss" in r] for d in (run_dir, single)]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], abs=1e-5)


# --- FSDP: the same accelerate path as on GPUs, over gloo (slow) ----------------------------------------


# (name, method, quant.backend): bitsandbytes QLoRA is sharded through a float quant_storage dtype.
FSDP_RUNS = [("lora", "lora", "studio"), ("qlora", "qlora", "studio"), ("qlora-bitsandbytes", "qlora", "bitsandbytes")]


@pytest.fixture(scope="module")
def fsdp_runs(tiny_llama_dir, tiny_data, tmp_path_factory):
    """Two-process FSDP runs, LoRA and QLoRA, by method: (run dir, the CLI's JSON result)."""
    runs = {}
    for name, method, backend in FSDP_RUNS:
        root = tmp_path_factory.mktemp(f"fsdp-{name}")
        raw = recipe_dict(tiny_llama_dir, tiny_data, root / "run", method=method, train={"batch_size": 2}, distributed={"strategy": "fsdp"},
                          quant={"backend": backend})
        done = _studio_train(_write_recipe(root / "fsdp.yaml", raw))
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = (root / "run", json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name, method, backend", FSDP_RUNS)
def test_fsdp_run_shards_the_base_and_matches_one_process(fsdp_runs, name, method, backend, tiny_llama_dir, tiny_data, tmp_path):
    """FSDP (QLoRA included: the NF4 bytes are sharded too) trains the same adapter as one process with
    the same effective batch; each rank held half of the model's parameter bytes."""
    run_dir, result = fsdp_runs[name]
    assert result["steps"] == 4
    assert yaml.safe_load((run_dir / "accelerate.yaml").read_text())["distributed_type"] == "FSDP"
    ranks = json.loads((run_dir / "summary.json").read_text())["distributed"]
    assert ranks["accelerate_type"] == "FSDP" and ranks["world_size"] == 2
    # 1/2 each, up to the padding FSDP adds to parameters whose first dimension is odd.
    assert ranks["held_fraction_per_rank"] == [pytest.approx(0.5, abs=0.02)] * 2
    assert ranks["ranks_agree"] is True and len(set(ranks["adapter_sha256_per_rank"])) == 1
    single = _train_single(tiny_llama_dir, tiny_data, tmp_path / "single", method=method, backend=backend)
    sharded = _adapter(run_dir)
    _assert_same_adapter(sharded, _adapter(single))
    # The checkpoint holds the whole adapter too (gathered from the shards), not one rank's slice.
    _assert_same_adapter(sharded, load_file_dir(run_dir / "checkpoints" / "checkpoint-4"))
    losses = [[r["train_loss"] for r in _metrics(d) if "train_loss" in r] for d in (run_dir, single)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


@pytest.mark.slow
def test_fsdp_qlora_run_resumes_to_the_same_adapter(fsdp_runs, tmp_path):
    """Resuming a sharded QLoRA run from its middle checkpoint ends with the uninterrupted run's adapter."""
    import shutil

    run_dir, _ = fsdp_runs["qlora"]
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "checkpoints" / "checkpoint-4")
    shutil.rmtree(copy / "adapter")
    (copy / "summary.json").unlink()
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "studio.cli", "train", "--resume", str(copy), "--json", "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [r["step"] for r in _metrics(copy) if "train_loss" in r]
    assert steps == [1, 2, 3, 4]  # steps 3-4 trained again after checkpoint-2, logged once
    # Steps 1-2 were kept, not retrained: their records (wall times included) are the original ones.
    assert (copy / "metrics.jsonl").read_text().splitlines()[:2] == (run_dir / "metrics.jsonl").read_text().splitlines()[:2]
    _assert_same_adapter(_adapter(copy), _adapter(run_dir))


def load_file_dir(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))
