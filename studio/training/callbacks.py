"""Every callback the studio adds to a trl trainer, and the list each training method uses.

Metrics to metrics.jsonl, a progress bar with loss, tokens/s and ETA, Ctrl-C that saves and stops, a
manifest for every checkpoint, and for distributed runs a barrier before each manifest and a stop that
every rank agrees on. They extend trl's trainers without subclassing them.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from studio.training.distributed import barrier
from studio.training.eta import format_duration
from studio.training.rundir import CHECKPOINT_PREFIX, append_metrics


class MetricsCallback(TrainerCallback):
    """Writes each Trainer log (train loss, learning rate, grad norm, eval loss) as one JSON line."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.start = None
        self.tokens_at_start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()
        self.tokens_at_start = state.num_input_tokens_seen or 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.time() - (self.start or time.time())
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time_s": round(elapsed, 2)}
        summary = "train_runtime" in logs  # the Trainer's end-of-run log: its train_loss is a run average
        for key, value in logs.items():
            if key in ("total_flos", "num_input_tokens_seen"):
                continue
            name = "mean_train_loss" if summary and key == "train_loss" else _rename(key)
            record[name] = value if not isinstance(value, float) else round(value, 6)
        tokens = (state.num_input_tokens_seen or 0) - self.tokens_at_start
        record["tokens"] = state.num_input_tokens_seen or 0
        if elapsed > 0 and tokens:
            record["tokens_per_s"] = round(tokens / elapsed, 1)
        append_metrics(self.run_dir, record)


_RENAMED = {
    "loss": "train_loss",
    "learning_rate": "lr",
    # GRPO (trl's names, kept for rewards/<name>/mean and /std): the ones whose name would not say what they are
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "truncated_share",
}


def _rename(key: str) -> str:
    return _RENAMED.get(key, key)


class ProgressCallback(TrainerCallback):
    """One live line on stderr: step, bar, loss, tokens/s, ETA. Plain lines when stderr is not a terminal."""

    def __init__(self, stream=None, width: int = 24):
        self.stream = stream or sys.stderr
        self.width = width
        self.loss = float("nan")
        self.reward = None
        self.start = None
        self.first_step = 0
        self.tokens_at_start = 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()
        self.first_step = state.global_step
        self.tokens_at_start = state.num_input_tokens_seen or 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = logs["loss"]
        if logs and "reward" in logs:  # GRPO: the reward says how training goes; its loss hovers near 0
            self.reward = logs["reward"]

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        total = state.max_steps or 1
        done = state.global_step
        elapsed = time.time() - self.start
        steps_here = max(1, done - self.first_step)
        eta = elapsed / steps_here * (total - done)
        tokens = (state.num_input_tokens_seen or 0) - self.tokens_at_start
        rate = tokens / elapsed if elapsed > 0 else 0.0
        filled = int(self.width * done / total)
        bar = "#" * filled + "-" * (self.width - filled)
        loss = f"{self.loss:.4f}" if not math.isnan(self.loss) else "  -   "
        shown = f"reward {self.reward:.3f}" if self.reward is not None else f"loss {loss}"
        line = f"step {done:>{len(str(total))}}/{total} [{bar}] {shown} | {rate:,.0f} tok/s | ETA {format_duration(eta)}"
        if self.tty:
            self.stream.write("\r" + line)
            if done >= total:
                self.stream.write("\n")
        elif done == total or done % max(1, args.logging_steps) == 0:
            self.stream.write(line + "\n")
        self.stream.flush()


class GracefulStopCallback(TrainerCallback):
    """Ctrl-C (SIGINT) finishes the current step, saves a checkpoint, and stops; a second Ctrl-C aborts.

    The UI stops jobs the same way, so a stopped run is always resumable from the step it reached.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def on_train_begin(self, args, state, control, **kwargs):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        import signal

        if self.requested:  # second Ctrl-C: the user wants out now
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        import signal
        import threading

        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class CheckpointManifestCallback(TrainerCallback):
    """After each checkpoint is fully written, record every file's size and sha256 in manifest.json.

    Resuming trusts only checkpoints whose manifest exists and matches, so a checkpoint torn by a crash
    (even mid-write) is never read as valid.
    """

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from studio.training.checkpoints import write_manifest

            write_manifest(Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}")


class AgreeOnStopCallback(TrainerCallback):
    """Stops every rank when any rank stops (its Ctrl-C arrived a step earlier).

    Without it one rank would save and leave while the others wait for it in the next step's all-reduce.
    """

    def on_step_end(self, args, state, control, **kwargs):
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([1.0 if control.should_training_stop else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not control.should_training_stop:
            control.should_training_stop = True
            control.should_save = True


class BarrierBeforeManifestCallback(TrainerCallback):
    """Lines every rank up before a checkpoint's manifest is written.

    Every rank writes its own RNG state into the checkpoint; without the barrier rank 0 could hash the
    folder before the other ranks' files are there, and the checkpoint would never verify.
    """

    def on_save(self, args, state, control, **kwargs):
        barrier()


def training_callbacks(run_dir: Path, progress: bool) -> list:
    """The studio's callbacks for any trl trainer: metrics, checkpoint manifests, Ctrl-C, progress bar."""
    # The barrier comes before the manifest, so rank 0 hashes a checkpoint only when every rank has written to it.
    from studio.training.determinism import AutotuneRecordCallback

    # Every rank's autotune record is part of the checkpoint: written before the barrier, so before rank 0 hashes it.
    callbacks = [MetricsCallback(run_dir), AutotuneRecordCallback(), BarrierBeforeManifestCallback(), CheckpointManifestCallback(),
                 GracefulStopCallback(), AgreeOnStopCallback()]
    if progress:
        callbacks.append(ProgressCallback())
    return callbacks


def stop_requested(trainer) -> bool:
    """Whether the user asked this trainer to stop (Ctrl-C, or the UI's stop) during its run."""
    return any(isinstance(cb, GracefulStopCallback) and cb.requested for cb in trainer.callback_handler.callbacks)
