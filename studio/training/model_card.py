"""The model card (README.md) of a run: Hugging Face front matter plus how the adapter was made.

The card is meant to travel with the adapter, so it names the base model the way someone else can get
it (a hub id) and never a path of this machine: a local model is named by its folder's name only.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from studio.config.schema import BUNDLED_DEMO_MODEL, names_local_model
from studio.training.rundir import ADAPTER, CARD, DATA, ENV, EVAL, RECIPE, SUMMARY, read_json_or_empty, write_atomic

BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the bundled demo model is a GGUF copy of


def shareable_base(name: str) -> str | None:
    """The base model as a hub id someone else can load, or None when it is a file of this machine."""
    if name == BUNDLED_DEMO_MODEL:
        return BUNDLED_HUB_ID
    if names_local_model(name):
        return None
    return name



def forgetting_lines(forgetting: dict | None) -> list[str]:
    """The card's section on what the adapter kept of the base (`studio eval --forgetting`), or none before the check."""
    if not isinstance(forgetting, dict) or forgetting.get("verdict") is None:
        return []
    try:
        return [
            "## Forgetting",
            "",
            f"On the studio's general probes ({forgetting['questions']} general questions, a general text sample), against the base "
            f"with the adapter disabled: **{forgetting['verdict']}**.",
            "",
            "| figure | value |",
            "| --- | --- |",
            f"| KL(base ‖ adapter) per token, mean / max | {forgetting['kl_mean']:.4f} / {forgetting['kl_max']:.4f} |",
            f"| general-text perplexity, adapter / base | {forgetting['perplexity_ratio']:.3f} |",
            f"| greedy answers equal to the base's | {forgetting['agreement']:.0%} |",
            f"| expected answers given (base / adapter) | {forgetting['base_accuracy']:.1f} / {forgetting['adapter_accuracy']:.1f} |",
            "",
        ]
    except (KeyError, TypeError, ValueError):  # an edited eval.json: the card leaves out what it cannot read
        return []


def harness_lines(harness: dict | None) -> list[str]:
    """The card's section of lm-evaluation-harness scores (`studio eval --tasks`), base and adapter, or none before a run."""
    if not isinstance(harness, dict) or not isinstance(harness.get("scores"), dict):
        return []
    try:
        settings = harness["settings"]
        rows = [f"| {task} | {metric} | {_score(pair['base'])} | {_score(pair['adapter'])} |"
                for task, metrics in harness["scores"].items() for metric, pair in metrics.items()]
        fewshot = settings["num_fewshot"] if settings.get("num_fewshot") is not None else "each task's default"
        return [
            "## Benchmarks (lm-evaluation-harness)",
            "",
            f"lm-eval {harness['lm_eval']}, the same settings for both (few-shot: {fewshot}; limit: {settings.get('limit') or 'none'}; "
            f"seed {settings['seed']}); the base is this model with the adapter disabled.",
            "",
            "| task | metric | base | adapter |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
        ]
    except (KeyError, TypeError, ValueError):  # an edited eval.json: the card leaves out what it cannot read
        return []


def _score(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def write_model_card(run_dir: Path) -> Path:
    """Write run_dir/README.md from the run's own files; called after training and after evaluation."""
    run_dir = Path(run_dir)
    recipe = yaml.safe_load((run_dir / RECIPE).read_text(encoding="utf-8"))
    data, env, summary = read_json_or_empty(run_dir / DATA), read_json_or_empty(run_dir / ENV), read_json_or_empty(run_dir / SUMMARY)
    evaluation = read_json_or_empty(run_dir / EVAL)
    hub_id = shareable_base(recipe["model"]["name"])
    # Training saves a vision-language run's processor beside its adapter; it loads with the image-text-to-text class.
    vision = (run_dir / ADAPTER / "processor_config.json").exists()
    auto, reader = ("AutoModelForImageTextToText", "AutoProcessor") if vision else ("AutoModelForCausalLM", "AutoTokenizer")
    base = hub_id or Path(recipe["model"]["name"]).name  # a local model: its folder's name, never the path
    front = {
        **({"base_model": hub_id} if hub_id else {}),
        "library_name": "peft",
        "license": "apache-2.0",
        "tags": list(dict.fromkeys(["adapter-studio", recipe["method"], "lora", *(["image-text-to-text"] if vision else [])])),
        "datasets_sha256": data.get("sha256"),
    }
    metrics_rows = []
    # A GRPO loss hovers near 0 whatever happens; its last logged reward says how training went.
    for key in ("train_reward",) if recipe["method"] == "grpo" else ("train_loss", "eval_loss"):
        if summary.get(key) is not None:
            metrics_rows.append(f"| {key} | {summary[key]:.4f} |")
    if evaluation:
        metric = evaluation.get("metric")
        for who in ("base", "adapter"):
            if evaluation.get(f"{who}_score") is not None:
                metrics_rows.append(f"| {metric} ({who}) | {evaluation[f'{who}_score']:.1f} |")
        for who in ("base", "adapter"):  # grpo: the mean reward of greedy answers to held-out prompts
            total = (evaluation.get(f"{who}_rewards") or {}).get("total")
            if total is not None:
                metrics_rows.append(f"| mean reward ({who}) | {total:.3f} |")
    lora = recipe["lora"]
    train = recipe["train"]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {recipe['output'].get('name') or run_dir.name}",
        "",
        f"A {recipe['method'].upper()} adapter for `{base}`, trained with Adapter Studio.",
        "",
        "## Training",
        "",
        f"- method: {recipe['method']}; LoRA rank {lora['rank']}, alpha {lora['alpha']}, dropout {lora['dropout']}, targets {lora['targets']}",
        f"- data: `{Path(data.get('path', '?')).name}` ({data.get('format', '?')}), sha256 `{data.get('sha256', '?')}`, "
        f"{data.get('train', {}).get('examples', data.get('train', {}).get('prompts', '?'))} training examples, max length {recipe['data']['max_length']}",
        *(["- rewards: " + ", ".join(f"{r['name']} (weight {r['weight']})" for r in data["rewards"])] if data.get("rewards") else []),
        f"- steps: {summary.get('steps', '?')}; batch {train['batch_size']} x grad accum {train['grad_accum']}; lr {train['learning_rate']} ({train['lr_scheduler']}); seed {train['seed']}",
        f"- device: {env.get('device', '?')}; torch {env.get('packages', {}).get('torch', '?')}, transformers {env.get('packages', {}).get('transformers', '?')}, peft {env.get('packages', {}).get('peft', '?')}",
        "",
        "## Results",
        "",
        "| metric | value |",
        "| --- | --- |",
        *(metrics_rows or ["| (none yet) | |"]),
        "",
        *forgetting_lines(evaluation.get("forgetting")),
        *harness_lines(evaluation.get("harness")),
        "## Use",
        "",
        "```python",
        "from peft import PeftModel",
        f"from transformers import {auto}, {reader}",
        f"base = {auto}.from_pretrained({hub_id!r})" if hub_id else f"base = {auto}.from_pretrained('path/to/{base}')  # the base model this adapter was trained on",
        "model = PeftModel.from_pretrained(base, 'adapter')",
        f"{'processor' if vision else 'tokenizer'} = {reader}.from_pretrained('adapter')",
        "```",
        "",
        "## Reproduce",
        "",
        "```bash",
        "studio train recipe.yaml          # the same run from its resolved recipe",
        "studio reproduce .                # re-train from this folder and compare losses and adapters",
        "```",
        "",
    ]
    path = run_dir / CARD
    write_atomic(path, "\n".join(lines))
    return path
