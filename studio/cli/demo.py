"""The demo: QLoRA-tune the bundled SmolLM2-135M-Instruct to extract orders as JSON, offline, then prove it.

Train -> score base and adapter on held-out requests -> show answers side by side -> merge and check
the merged model reproduces the adapter -> summary. It is a shell, like the rest of studio.cli: it only
calls the public library functions and writes what they return for a terminal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from studio.config.load import load_recipe
from studio.config.shipped import DEMO_RECIPE


def run_demo(out_dir: str | None = None, quick: bool = False, log=None) -> dict:
    """Run the whole demo and return its summary (base_score, adapter_score, metric, run_dir, merged_dir, ...).

    `quick` trains 3 steps on 4 held-out examples: the same path in seconds, for tests.
    """
    from studio.evaluation.evaluate import evaluate
    from studio.export.merge import merge
    from studio.training.train import train

    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    started = time.time()
    overrides = []
    if out_dir:
        overrides.append(f"output.dir={out_dir}")
    if quick:
        overrides += ["train.max_steps=3", "train.save_steps=2", "eval.limit=4", "eval.max_new_tokens=24", "data.val_split=0.02"]
    recipe = load_recipe(DEMO_RECIPE, overrides)

    log(f"== 1/4 Fine-tuning {recipe.model.name} with {recipe.method.upper()} on {Path(recipe.data.path).name} ==")
    trained = train(recipe, overwrite=True)
    train_s = time.time() - started

    log(f"\n== 2/4 Scoring base and adapter on held-out requests ({recipe.eval.metric}) ==")
    result = evaluate(trained.run_dir)
    for i, sample in enumerate(result.samples, start=1):
        request = sample["prompt"].split("\n\n", 1)[-1]
        log(f"\n-- example {i}: {request}")
        log(f"   expected: {sample['reference']}")
        log(f"   base:     {_one_line(sample['base'])}")
        log(f"   adapter:  {_one_line(sample['adapter'])}")

    log("\n== 3/4 Merging the adapter into the base and checking the merged logits ==")
    merged = merge(trained.run_dir)
    log(f"   max |merged - adapter| logit difference {merged.max_abs_diff:.2e} (relative {merged.rel_diff:.1e}, tolerance {merged.tolerance:.0e}): {'OK' if merged.passed else 'FAILED'}")

    summary = {
        "metric": result.metric,
        "base_score": round(result.base_score, 1),
        "adapter_score": round(result.adapter_score, 1),
        "improvement": round(result.adapter_score - result.base_score, 1),
        "heldout_examples": result.examples,
        "adapter_heldout_loss": result.adapter_loss,
        "base_heldout_loss": result.base_loss,
        "train_steps": trained.steps,
        "final_train_loss": trained.train_loss,
        "merge_max_abs_diff": merged.max_abs_diff,
        "merge_passed": merged.passed,
        "run_dir": str(trained.run_dir.resolve()),
        "merged_dir": str(merged.merged_dir.resolve()),
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - started, 1),
    }
    log("\n== 4/4 Summary ==")
    log(f"   {result.metric} on {result.examples} held-out requests: base {summary['base_score']:.1f} -> adapter {summary['adapter_score']:.1f} ({summary['improvement']:+.1f} points)")
    log(f"   run directory: {summary['run_dir']}")
    log(f"   merged model:  {summary['merged_dir']}")
    log(f"   total time:    {summary['total_seconds']:.0f} s")
    return summary


def _one_line(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= 140 else text[:137] + "..."
