"""Run directories for the report tests: a tiny adapter (helpers.make_run_dir) plus the files the other steps would
have written, built from those steps' own result classes so their keys are the ones the studio writes."""

from __future__ import annotations

import json
from pathlib import Path

import helpers

# Untrusted text in every place the page shows the run's words: each must come out as text, never as markup.
HOSTILE = '<script>window.__pwned = 1</script><img src="http://evil.example/x.png" onerror="window.__pwned = 2">'
SECTIONS = ("Training curves", "Base vs adapter", "Forgetting", "Samples side by side", "Serving consistency", "Provenance")


def bare_run(model_dir: Path, data_path: Path, run_dir: Path, **sections) -> Path:
    """A run directory as `helpers.make_run_dir` leaves it: recipe.yaml and an adapter, nothing else."""
    return helpers.make_run_dir(model_dir, data_path, run_dir, **sections)


def _metrics(run_dir: Path, grpo: bool) -> None:
    lines = []
    for step in range(1, 11):
        record = {"step": step, "epoch": step / 10, "train_loss": round(2.5 - 0.15 * step, 4), "lr": 1e-3 * (1 - step / 11), "tokens": 64 * step}
        if grpo:
            record.update({"reward": 0.1 * step, "rewards/numeric_answer/mean": 0.08 * step, f"rewards/{HOSTILE}$x$/mean": 0.5, "kl": 0.01 * step})
        lines.append(record)
        if step % 2 == 0:
            lines.append({"step": step, "eval_loss": round(2.6 - 0.12 * step, 4)})
    helpers.write_jsonl(run_dir / "metrics.jsonl", lines)


def checked_run(model_dir: Path, data_path: Path, run_dir: Path, grpo: bool = False) -> Path:
    """A run that was trained, evaluated, checked for forgetting, merged and exported: every file of the report, with
    hostile text in its prompts, answers, reward names, check details and recipe, and one failed serving check."""
    from studio.evaluation.evaluate import EvalResult
    from studio.evaluation.forgetting import ForgettingResult, judge
    from studio.export.consistency import Check, Consistency
    from studio.export.exporter import ExportResult
    from studio.export.merge import MergeResult

    sections = {"data": {"system_prompt": HOSTILE}}
    if grpo:
        sections.update(method="grpo", grpo={"rewards": [{"name": "numeric_answer"}]})
    bare_run(model_dir, data_path, run_dir, **sections)
    _metrics(run_dir, grpo)
    (run_dir / "env.json").write_text(json.dumps({"created": "2026-12-01T10:00:00+00:00", "studio": "0.1.0", "python": "3.11.7",
                                                  "packages": {"torch": "2.13.0", "transformers": "5.23.0"}, "device": "cpu", "project_commit": "0123abcd"}))
    (run_dir / "data.json").write_text(json.dumps({"path": str(data_path), "sha256": "f" * 64, "format": "chat", "rows": 24,
                                                   "train": {"examples": 18, "lengths": {"count": 18, "mean": 19.5}}, "val": {"examples": 6}}))
    (run_dir / "summary.json").write_text(json.dumps({"steps": 10, "train_loss": 1.0, "eval_loss": 1.4, "device": "cpu"}))
    verdict, reasons = judge(0.2, 1.1, 0.7)
    forgetting = ForgettingResult(verdict=verdict, reasons=reasons, kl_mean=0.2, kl_max=1.5, kl_tokens=80, base_perplexity=10.0,
                                  adapter_perplexity=11.0, perplexity_ratio=1.1, agreement=0.7, base_accuracy=80.0, adapter_accuracy=75.0,
                                  questions=2, answers=[{"question": "What is 2 + 2?", "expected": "4", "base": "4", "adapter": HOSTILE, "same": False},
                                                        {"question": "Capital of France?", "expected": "Paris", "base": "Paris", "adapter": "Paris", "same": True}])
    rewards = {"numeric_answer": 0.75, "total": 0.75} if grpo else None
    evaluation = EvalResult(metric="exact_match", examples=4, base_score=25.0, adapter_score=75.0, base_loss=2.0, adapter_loss=1.2,
                            adapter_perplexity=3.32, base_rewards={"numeric_answer": 0.25, "total": 0.25} if grpo else None, adapter_rewards=rewards,
                            samples=[{"prompt": HOSTILE, "reference": "5", "base": "five-ish", "adapter": "5"},
                                     {"prompt": "add 1 and 1", "reference": "2", "base": None, "adapter": "2"}])
    harness = {"tasks": ["arc_easy"], "scores": {"arc_easy": {"acc,none": {"base": 0.25, "adapter": 0.3}}}}  # `studio eval --tasks`
    (run_dir / "eval.json").write_text(json.dumps({**evaluation.to_dict(), "forgetting": forgetting.to_dict(), "harness": harness}))
    merge_gate = Consistency([Check("prompt format: merged model", True, "7 conversations render to the same text and token ids as in training"),
                              Check("stop tokens: merged model", True, "stops on [2 \"<|im_end|>\"], including the trained end-of-turn")],
                             ["data.system_prompt is not stored in the merged model"])
    merge = MergeResult(run_dir / "merged", 3.6e-7, 5.2e-7, 1e-4, 4, True, merge_gate.to_dict())
    (run_dir / "merge.json").write_text(json.dumps(merge.to_dict()))
    export_gate = Consistency([Check("prompt format: GGUF", True, "9 conversations render alike"),
                               Check("stop tokens: Ollama Modelfile", False, f"no PARAMETER stop for {HOSTILE}", str(run_dir / "ollama" / "Modelfile"),
                                     "export again", "--- training\n+++ ollama\n-PARAMETER stop \"<|im_end|>\"\n+<b>nothing</b>")])
    exported = ExportResult(format="ollama", quant="f16", path=None, modelfile=None, top1_agreement=0.999, mean_kl=2.3e-6, max_kl_position=1e-4,
                            prompts=8, positions=900, tokenizer_match=True, min_top1=0.98, max_kl=0.01, passed=False, seconds=3.0,
                            consistency=export_gate.to_dict())
    (run_dir / "export.json").write_text(json.dumps({"ollama-f16": exported.to_dict()}))
    if grpo:
        helpers.write_jsonl(run_dir / "completions.jsonl", [{"step": s, "prompt": f"add {s} and 1", "completion": HOSTILE if s == 9 else str(s + 1),
                                                             "rewards": {"numeric_answer": 1.0}, "total": 1.0} for s in range(1, 11)])
    return run_dir
