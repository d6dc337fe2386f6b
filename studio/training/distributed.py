"""Several processes, one run: the accelerate config, the launcher, and what each worker needs to know.

No home-made distribution: `studio train RECIPE --gpus N` writes an accelerate config into the run
directory and starts `accelerate launch --config_file RUN_DIR/accelerate.yaml -m studio.cli train
--worker RUN_DIR`. accelerate (through torch.distributed.run) starts one worker per GPU; trl's trainer
does DDP or FSDP. The launcher only prepares the run directory, forwards Ctrl-C and returns the exit code.

On a machine without CUDA the same config runs the workers on the CPU over gloo (the test suite does
this): accelerate's `MULTI_GPU` launcher only spawns processes, and each worker's trainer (with
`use_cpu`) joins a gloo process group. accelerate's own `MULTI_CPU` type is not used: it expects
`mpirun` to start the processes and otherwise runs a single one.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from studio.config.schema import Recipe
from studio.config.yaml_text import dump_recipe
from studio.errors import Interrupted, StudioError
from studio.training.checkpoints import last_checkpoint
from studio.training.prepare import prepare_run
from studio.training.rundir import ACCELERATE, RECIPE, TrainResult, train_result, write_atomic


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the run (from the variables torch.distributed.run sets)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether this run has more than one process."""
        return self.world_size > 1


def process_info() -> ProcessInfo:
    """Rank, local rank and world size of this process (0, 0, 1 outside a distributed launch)."""
    env = os.environ
    return ProcessInfo(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def check_launchable(recipe: Recipe, cuda: bool) -> None:
    """Refuse, before anything is written, the combinations that cannot run here."""
    import torch

    d = recipe.distributed
    if cuda and d.num_processes > torch.cuda.device_count():
        raise StudioError(
            f"{d.num_processes} processes asked for but {torch.cuda.device_count()} GPU(s) are visible",
            where="distributed.num_processes (or --gpus)",
            fix="lower --gpus to the number of GPUs (check CUDA_VISIBLE_DEVICES)",
        )


def accelerate_config(recipe: Recipe) -> dict:
    """The accelerate config for the recipe's distributed section (saved as RUN_DIR/accelerate.yaml).

    Mixed precision stays "no" here: the trainer sets bf16/fp16 from the model's dtype, as it does on one GPU.
    """
    d = recipe.distributed
    config = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "FSDP" if d.strategy == "fsdp" else "MULTI_GPU",
        "num_processes": d.world_size,  # accelerate counts processes across all machines
        "num_machines": d.num_machines,
        "machine_rank": d.machine_rank,
        "main_process_port": d.main_process_port,
        "rdzv_backend": "static",
        "same_network": True,
        "mixed_precision": "no",
        "use_cpu": False,  # True would make `accelerate launch` start a single process; CPU workers use gloo
        "gpu_ids": "all",
        "downcast_bf16": "no",
        "main_training_function": "main",
        "tpu_use_cluster": False,
        "tpu_use_sudo": False,
    }
    if d.num_machines > 1:
        config["main_process_ip"] = d.main_process_ip
    if d.strategy == "fsdp":
        config["fsdp_config"] = {
            "fsdp_version": 2,
            # Each decoder layer is one shard unit; accelerate reads the layer class from the model's
            # `_no_split_modules` (LlamaDecoderLayer, Qwen2DecoderLayer, ...).
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True,
            "fsdp_offload_params": False,
            "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_cpu_ram_efficient_loading": False,
            "fsdp_activation_checkpointing": False,  # the studio enables checkpointing on the model itself
        }
    return config


def config_path(run_dir: Path, machine_rank: int = 0) -> Path:
    """RUN_DIR/accelerate.yaml on machine 0; accelerate-machine-N.yaml on machine N (a shared run
    directory then holds every machine's config side by side)."""
    return Path(run_dir) / (ACCELERATE if machine_rank == 0 else f"accelerate-machine-{machine_rank}.yaml")


def write_accelerate_config(run_dir: Path, recipe: Recipe) -> Path:
    """Write this machine's accelerate config into the run directory atomically and return its path."""
    path = config_path(run_dir, recipe.distributed.machine_rank)
    header = "# Generated by `studio train` from the recipe's distributed section; `accelerate launch --config_file` reads it.\n"
    write_atomic(path, header + yaml.safe_dump(accelerate_config(recipe), sort_keys=False))
    return path


def worker_command(config: Path, run_dir: Path, resume: bool, progress: bool) -> list[str]:
    """`accelerate launch --config_file RUN_DIR/accelerate.yaml -m studio.cli train --worker RUN_DIR`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "-m", "studio.cli", "train", "--worker", str(run_dir)]
    if resume:
        command.append("--resume-worker")
    if not progress:
        command.append("--no-progress")
    return command


def worker_env(cuda: bool) -> dict:
    """The launcher's environment for the workers; on CPU, gloo over loopback unless the user chose an interface."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1" if not cuda else env.get("OMP_NUM_THREADS", "4"))
    if not cuda:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def launch(config: Path, run_dir: Path, resume: bool, progress: bool, cuda: bool) -> tuple[int, bool]:
    """Run the workers through `accelerate launch`; return their exit code and whether a signal stopped them.

    accelerate runs in its own session, so a terminal's Ctrl-C reaches only this launcher, which passes
    SIGINT (or SIGTERM) on once; torch.distributed.run hands it to every worker, each finishes its step,
    and a checkpoint is saved, so the run stays resumable. (torch.distributed.run allows the workers 30 s
    for that before it kills them.)
    """
    command = worker_command(config, run_dir, resume, progress)
    stopped = []
    try:
        child = subprocess.Popen(command, env=worker_env(cuda), start_new_session=True)
    except OSError as exc:
        raise StudioError(f"cannot start accelerate: {exc.strerror}", where=" ".join(command[:4]), fix="install accelerate in the studio's environment") from None

    def forward(signum, frame):
        if child.poll() is None and not stopped:  # once: a second signal would cut torchrun's own shutdown short
            stopped.append(signum)
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
        return code, bool(stopped)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def enable_fsdp_over_gloo() -> None:
    """Let accelerate apply FSDP to a CPU process group, so `strategy: fsdp` runs (and is tested) without GPUs.

    accelerate selects FSDP only inside its GPU-type branch: on a CPU/gloo group it would silently train
    plain data parallel. Calling this in each worker before the trainer exists starts the gloo group
    through accelerate as usual, then marks the state as a multi-device one, so the Accelerator the
    trainer creates takes the same FSDP2 path (`fully_shard` over a CPU device mesh) as on GPUs.
    """
    import torch
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    if torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    state = PartialState(cpu=True)  # joins the gloo group; device stays the CPU
    if state.distributed_type == DistributedType.MULTI_CPU:
        state.distributed_type = DistributedType.MULTI_GPU
        _FSDP_OVER_GLOO.append(True)


def fsdp_state_prepared() -> bool:
    """Whether this process prepared accelerate's state with `enable_fsdp_over_gloo` (the trainer must keep it)."""
    return bool(_FSDP_OVER_GLOO)


_FSDP_OVER_GLOO: list[bool] = []


def trainable_state(model) -> dict:
    """The adapter's trainable tensors by name, whole and on the CPU, on every rank.

    Under FSDP each rank holds a slice of every parameter (a DTensor): the slices are gathered, one
    parameter at a time and only for the trainable ones, so no rank ever materialises the base model.
    A collective call when sharded: every rank must make it, with the same model.
    """
    from torch.distributed.tensor import DTensor

    state = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            tensor = param.detach()
            if isinstance(tensor, DTensor):
                tensor = tensor.full_tensor()
            state[name] = tensor.to("cpu").contiguous()
    return state


def is_sharded(model) -> bool:
    """Whether any of the model's parameters is an FSDP shard (a DTensor)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def held_fraction(model) -> float:
    """The share of the model's parameter bytes this rank holds: 1.0 unsharded, about 1/N under FSDP on N ranks."""
    from torch.distributed.tensor import DTensor

    local = total = 0
    for param in model.parameters():
        size = param.element_size()
        total += param.numel() * size
        local += (param.to_local() if isinstance(param, DTensor) else param).numel() * size
    return local / total if total else 1.0


def gather_objects(value) -> list:
    """Every rank's `value`, in rank order (a collective call; [value] outside a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values: list = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def adapter_digest(model) -> str:
    """sha256 over the adapter's trainable tensors (names, dtypes, bytes), whole (FSDP shards gathered)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(trainable_state(model).items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def gather_digests(model) -> list[str]:
    """Every rank's adapter digest, in rank order (a collective call: every rank must make it)."""
    return gather_objects(adapter_digest(model))


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def launch_distributed(recipe: Recipe, resume: bool = False, progress: bool = True, overwrite: bool = False) -> TrainResult:
    """Prepare the run directory, write RUN_DIR/accelerate.yaml and run one worker per process through
    `accelerate launch`; once every worker has finished, the run's result as rank 0 recorded it."""
    from studio.modeling.loading import pick_device

    device = pick_device(recipe.train.device)
    cuda = device.type == "cuda"
    check_launchable(recipe, cuda)
    if recipe.distributed.machine_rank == 0:
        recipe, run_dir = prepare_run(recipe, device, resume, overwrite)
    else:
        # Machines other than 0 train but write nothing to the run directory; they only need the recipe and config.
        run_dir = recipe.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_atomic(run_dir / RECIPE, dump_recipe(recipe))
    config = write_accelerate_config(run_dir, recipe)
    code, interrupted = launch(config, run_dir, resume, progress, cuda)
    if interrupted:
        done = last_checkpoint(run_dir)
        raise Interrupted(f"training stopped; saved {done.name if done else 'no checkpoint'}", where=str(run_dir), fix=f"resume with `studio train --resume {run_dir}`")
    if code != 0:
        raise StudioError(f"a training process failed (exit status {code}); its error is printed above", where=str(run_dir), fix="fix the reported problem, then start again or `studio train --resume " + str(run_dir) + "`")
    return train_result(run_dir)
