"""GRPO: reinforcement learning from verifiable rewards (R1-style) on a LoRA/QLoRA adapter, through trl.

Each step the adapter-wrapped model samples `grpo.num_generations` completions per prompt (trl's generation
with the KV cache, through the same model that trains: the studio's 4-bit layers for QLoRA), the recipe's
rewards score them, and trl's GRPOTrainer pushes each completion up or down by how its weighted total reward
compares with its group's. The studio adds its data path (prompt rows whose other columns reach the rewards,
checked before any model loads), guarded rewards (a failing reward is a StudioError naming it and the row),
a sample of completions with their scores in completions.jsonl, and the run directory every method shares.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from studio.config.schema import Recipe
from studio.data import Example
from studio.training.arguments import trainer_arguments
from studio.training.callbacks import training_callbacks
from studio.training.grpo_data import build_prompt_data, resolved_rewards
from studio.training.rewards import guarded
from studio.training.rewards.guard import completion_text
from studio.training.rundir import COMPLETIONS, append_metrics

ROW = "_row"  # the dataset column that ties a completion back to its prompt row (its columns and file:line)


class CompletionSamples:
    """The latest generation batch as the rewards saw it: prompt rows, completions and each reward's scores."""

    def __init__(self):
        self.rows: list[int] = []
        self.completions: list[str] = []
        self.scores: dict[str, list[float]] = {}

    def record(self, name: str, rows: list[int], completions: list[str], scores: list[float]) -> None:
        """Keep one reward's scores of a batch; a batch with other rows starts a new sample."""
        if rows != self.rows or completions != self.completions:
            self.rows, self.completions, self.scores = list(rows), list(completions), {}
        self.scores[name] = list(scores)


def trl_rewards(resolved, examples: list[Example], samples: CompletionSamples) -> tuple[list, list[float]]:
    """The resolved rewards as trl reward functions (each guarded, fed its rows' columns) and their weights."""
    columns = [e.columns or {} for e in examples]
    wheres = [e.where for e in examples]
    funcs, weights = [], []
    for reward, options, weight in resolved:
        funcs.append(_fed_from_rows(guarded(reward, options), columns, wheres, samples))
        weights.append(weight)
    return funcs, weights


def _fed_from_rows(fn, columns: list[dict], wheres: list[str], samples: CompletionSamples):
    """`fn` called with each completion's row columns, looked up by row index: the columns never pass through a
    `datasets` table, which would demand one type per column across rows (a JSON schema here, a string there)."""

    def reward(prompts, completions, completion_ids=None, **kwargs):
        rows = [int(i) for i in kwargs.pop(ROW)]
        names = {key for i in rows for key in columns[i]}
        values = {key: [columns[i].get(key) for i in rows] for key in names}
        # What trl adds (trainer_state, log_metric, ...) goes on, for reward files that ask for it.
        scores = fn(prompts, completions, completion_ids, **kwargs, _where=[wheres[i] for i in rows], **values)
        samples.record(fn.__name__, rows, [completion_text(c) for c in completions], scores)
        return scores

    reward.__name__ = fn.__name__  # trl names the metrics rewards/<name>/mean after it
    return reward


class CompletionsLogCallback(TrainerCallback):
    """Every grpo.log_completions_steps steps, append a sample of prompts, completions and per-reward scores to
    completions.jsonl (the Train tab's table of recent completions reads it)."""

    def __init__(self, run_dir: Path, examples: list[Example], samples: CompletionSamples, weights: dict[str, float], every: int, count: int):
        self.run_dir, self.examples, self.samples = Path(run_dir), examples, samples
        self.weights, self.every, self.count = weights, every, count

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or state.global_step % self.every or not self.samples.rows:
            return
        s = self.samples
        for i in range(min(self.count, len(s.rows))):
            example = self.examples[s.rows[i]]
            scores = {name: values[i] for name, values in s.scores.items()}
            append_metrics(self.run_dir, {
                "step": state.global_step,
                "where": example.where,
                "prompt": example.messages[-1]["content"],
                "completion": s.completions[i],
                "rewards": scores,
                "total": round(sum(self.weights.get(n, 0.0) * v for n, v in scores.items()), 6),
            }, COMPLETIONS)


def grpo_arguments(recipe: Recipe, run_dir: Path, device, weights: list[float]) -> dict:
    """GRPOConfig's arguments: the ones every studio trainer shares, plus the grpo section's."""
    g = recipe.grpo
    common = trainer_arguments(recipe, run_dir, device, has_val=False)
    del common["max_length"]  # GRPO bounds completions (max_completion_length); prompts are checked at load
    return {
        **common,
        "num_generations": g.num_generations,
        "max_completion_length": g.max_completion_length,
        "temperature": g.temperature,
        "top_p": g.top_p,
        "beta": g.beta,
        "epsilon": g.epsilon,
        "epsilon_high": g.epsilon_high,
        "loss_type": g.loss_type,
        "scale_rewards": g.scale_rewards,
        "mask_truncated_completions": g.mask_truncated_completions,
        "generation_batch_size": g.generation_batch_size,
        "reward_weights": weights,
        "log_completions": False,  # completions.jsonl instead of rich tables on stdout
        "optim": "adamw_torch",
        "dataloader_pin_memory": device.type == "cuda",
        "ddp_find_unused_parameters": False,
    }


def grpo_trainer(recipe: Recipe, model, tokenizer, run_dir: Path, device, progress: bool):
    """trl's GRPOTrainer on the recipe's prompts and rewards, the data manifest, and False (no validation loss)."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    resolved = resolved_rewards(recipe)
    data = build_prompt_data(recipe, tokenizer, resolved)
    samples = CompletionSamples()
    funcs, weights = trl_rewards(resolved, data.examples, samples)
    train_set = datasets.Dataset.from_dict({"prompt": [list(e.messages) for e in data.examples], ROW: list(range(len(data.examples)))})
    datasets.disable_progress_bars()
    g = recipe.grpo
    log = CompletionsLogCallback(run_dir, data.examples, samples, {f.__name__: w for f, w in zip(funcs, weights)}, g.log_completions_steps, g.log_completions_count)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=GRPOConfig(**grpo_arguments(recipe, run_dir, device, weights)),
                          train_dataset=train_set, processing_class=tokenizer, callbacks=[*training_callbacks(run_dir, progress), log])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer, data.manifest, False
