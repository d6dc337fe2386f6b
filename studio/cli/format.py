"""Results as a terminal shows them: the library returns data, these functions turn it into lines."""

from __future__ import annotations


def recipe_keys_help() -> str:
    """Every recipe key with its default and docstring, from the schema (what `studio train --help` ends with)."""
    from studio.config.walker import recipe_fields

    lines = ["recipe keys (override any with --set key=value):"]
    for field in recipe_fields():
        lines.append(f"  {field.key} = {field.default!r}\n      {field.doc}")
    return "\n".join(lines)


def train_result(result) -> str:
    """A finished training run: steps, losses, where it went and what to run next."""
    text = f"trained {result.steps} steps; final train loss {result.train_loss}"
    if result.eval_loss is not None:
        text += f", validation loss {result.eval_loss:.4f}"
    return f"{text}\nrun directory: {result.run_dir}\nnext: studio eval {result.run_dir}  |  studio merge {result.run_dir}"


def merge_result(result) -> str:
    """Where the merged model is, its logit parity with the adapter, and the serving-consistency gate."""
    text = (f"merged model: {result.merged_dir}\nparity: max |merged - adapter| logit difference {result.max_abs_diff:.2e} "
            f"(relative {result.rel_diff:.1e} <= {result.tolerance:.0e})")
    return "\n".join([text, *consistency_lines(result.consistency)])


def consistency_lines(gate: dict) -> list[str]:
    """The serving-consistency gate of a merge or export: a verdict, each failed check with its file, fix and diff,
    the stop behaviour figures and the notes."""
    if not gate:
        return []
    checks = gate["checks"]
    failed = [c for c in checks if not c["passed"]]
    lines = [f"serving consistency: {'FAILED' if failed else 'passed'} ({len(checks) - len(failed)}/{len(checks)} checks: "
             f"{', '.join(dict.fromkeys(c['name'].split(':')[0] for c in checks))})"]
    for c in failed:
        lines.append(f"  FAILED {c['name']}: {c['detail']}")
        lines += [f"    {label}: {c[key]}" for label, key in (("file", "file"), ("fix", "fix")) if c.get(key)]
        if c.get("diff"):
            lines += ["    " + line for line in c["diff"].splitlines()]
    lines += [f"  {c['name']}: {c['detail']}" for c in checks if c["passed"] and c["name"] == "stop behaviour"]
    lines += [f"  note: {note}" for note in gate.get("notes", [])]
    return lines


def eval_result(result) -> str:
    """Scores and losses of base and adapter, then a few answers side by side."""
    scored = result.metric != "none"
    lines = [f"{result.metric if scored else 'loss (no task metric: eval.metric is none)'} on {result.examples} held-out examples:"]

    def score(value) -> str:
        return f"{value:6.1f}   " if scored else ""

    if result.base_loss is not None:
        lines.append(f"  base    {score(result.base_score)}loss {result.base_loss:.4f}")
    lines.append(f"  adapter {score(result.adapter_score)}loss {result.adapter_loss:.4f}  perplexity {result.adapter_perplexity:.3f}")
    if result.adapter_rewards:
        lines.append("mean reward (greedy answers):")
        for who, rewards in (("base", result.base_rewards), ("adapter", result.adapter_rewards)):
            if rewards:
                lines.append(f"  {who:<7} " + "  ".join(f"{name} {value:.3f}" for name, value in rewards.items()))
    for s in result.samples:
        lines += ["", f"prompt:    {s['prompt']}", f"reference: {s['reference']}", f"base:      {s['base']}", f"adapter:   {s['adapter']}"]
    return "\n".join(lines)


def forgetting_result(result) -> str:
    """The forgetting verdict, why, the figures behind it, and the questions whose answer changed."""
    same = sum(a["same"] for a in result.answers)
    lines = [
        f"forgetting on {result.questions} general questions and a general text sample: {result.verdict.upper()}",
        *(f"  because {reason}" for reason in result.reasons),
        f"  KL(base || adapter)      mean {result.kl_mean:.4f}  max {result.kl_max:.4f} nats/token, over {result.kl_tokens} tokens of the base's answers",
        f"  general-text perplexity  base {result.base_perplexity:.3f}  adapter {result.adapter_perplexity:.3f}  ratio {result.perplexity_ratio:.3f}",
        f"  same greedy answer       {same}/{result.questions} ({result.agreement:.0%})",
        f"  expected answer given    base {result.base_accuracy:.1f}%  adapter {result.adapter_accuracy:.1f}%",
    ]
    changed = [a for a in result.answers if not a["same"]][:3]
    for a in changed:
        lines += ["", f"question: {a['question']}", f"expected: {a['expected']}", f"base:     {_one_line(a['base'])}", f"adapter:  {_one_line(a['adapter'])}"]
    return "\n".join(lines)


def harness_result(result: dict) -> str:
    """lm-eval scores, one line per task and metric: base, adapter and the change."""
    s = result["settings"]
    lines = [f"lm-eval {result['lm_eval']} on base and adapter (limit {s['limit'] or 'none'}, few-shot {s['num_fewshot'] if s['num_fewshot'] is not None else 'task default'}, seed {s['seed']}):"]
    for task, metrics in result["scores"].items():
        for metric, pair in metrics.items():
            base, adapter = pair["base"], pair["adapter"]
            change = f"{adapter - base:+.4f}" if base is not None and adapter is not None else "n/a"
            lines.append(f"  {task:<24} {metric:<18} base {_num(base)}  adapter {_num(adapter)}  change {change}")
    return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:117] + "..."


def reproduce_result(result) -> str:
    """Whether the re-run matched, and by how much it differs."""
    verdict = "identical" if result.identical else "differs"
    return (f"reproduction {verdict}: {result.steps} steps; max loss difference {result.max_loss_diff:.3g}, "
            f"max adapter difference {result.max_adapter_diff:.3g}\nreproduced run: {result.new_run_dir}")


def export_result(result) -> str:
    """The exported files, the round-trip figures against their thresholds, and the serving-consistency gate."""
    diverges = not (result.tokenizer_match and result.top1_agreement >= result.min_top1 and result.mean_kl <= result.max_kl)
    kept = "DIVERGES" if diverges else "FAILS THE SERVING-CONSISTENCY GATE"
    lines = [f"{'exported' if result.passed else f'exported ({kept}, kept by --no-check)'}: {result.path}"]
    if result.mmproj:
        found = result.projector
        lines.append(f"vision projector: {result.mmproj}  (llama.cpp --mmproj; {found.get('projector_type')}, read back: {found.get('tensors')} tensors, "
                     f"max difference {found.get('max_abs_diff', 0):.2g})")
    if result.modelfile:
        lines.append(f"modelfile: {result.modelfile}  (ollama create NAME -f {result.modelfile})")
    lines.append(
        f"round trip ({result.quant}, {result.prompts} prompts, {result.positions} positions): "
        f"top-1 agreement {result.top1_agreement:.4f} (>= {result.min_top1}), mean KL {result.mean_kl:.2e} (<= {result.max_kl}), "
        f"tokenizer {'identical' if result.tokenizer_match else 'DIFFERS'}"
    )
    lines += consistency_lines(result.consistency)
    return "\n".join(lines)


def estimate_table(report: dict) -> str:
    """The memory estimate broken down, whether it fits, and what would fit when it does not."""
    lines = [f"{report['model']} · {report['method']} · {report['tokens_per_batch']} tokens per micro-batch · loss: {report['loss']}",
             f"{report['params'] / 1e9:.2f}B parameters, {report['lora_params'] / 1e6:.2f}M trainable; shapes from {report['source']}", ""]
    width = max(len(k) for k in report["breakdown"])
    for key, value in report["breakdown"].items():
        lines.append(f"  {key:<{width}}  {value:8.2f} GiB")
    lines.append(f"  {'peak':<{width}}  {report['peak_gib']:8.2f} GiB   (torch allocated ≈ {report['allocated_gib']:.2f} GiB)")
    if report.get("cpu_offload_gib"):
        lines.append(f"  CPU memory for offloaded activations and embeddings: {report['cpu_offload_gib']:.2f} GiB")
    if report.get("vision"):
        lines += ["", *vision_lines(report["vision"])]
    lines.append("")
    lines.append(f"fits {report['gpu_gib']:g} GiB: {'yes' if report['fits'] else 'no'}")
    lines.append(f"largest train.batch_size that fits: {report['max_batch_size'] or 'none'}")
    lines.append(f"largest data.max_length that fits: {report['max_length'] or 'none'}")
    if not report["fits"]:
        if report.get("auto_fit"):
            settings = " ".join(f"--set {k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in report["auto_fit"].items())
            lines.append(f"fits with (train.auto_fit picks this): {settings}")
        elif report.get("auto_fit_error"):
            lines.append(f"no batch/checkpointing setting fits: {report['auto_fit_error']}")
        if report.get("gpus_needed"):
            lines.append(f"GPUs of {report['gpu_gib']:g} GiB needed, sharded (FSDP) {report['method']}: {report['gpus_needed']}")
        elif report.get("gpus_needed_error"):
            lines.append(f"sharding does not help: {report['gpus_needed_error']}")
    return "\n".join(lines)


def vision_lines(vision: dict) -> list[str]:
    """A vision-language model's tower and what one image costs, under the breakdown (its vision_tower and
    image_activations rows), with the assumption the estimate made about images."""
    state = "adapted (lora.vision)" if vision["trained"] else "frozen"
    lines = [f"vision tower: {vision['tower_params'] / 1e6:,.0f}M parameters, kept 16-bit, {state}"]
    tiles = f" ({vision['tiles_per_image']} tiles)" if vision["tiles_per_image"] > 1 else ""
    where = f"{vision['tokens_per_image']} in the sequence"
    if vision["cross_attention_tokens"]:
        where += f", {vision['cross_attention_tokens']} image states for cross-attention"
    lines.append(f"image tokens: {where}; {vision['tower_tokens_per_image']} tower positions{tiles} per image "
                 f"(assumed {vision['images_per_row']} per row, at data.image_max_pixels={vision['image_max_pixels']})")
    if not vision["fits_max_length"]:
        lines.append(f"  warning: an image's {vision['tokens_per_image']} tokens do not fit data.max_length={vision['max_length']}: "
                     "such rows are refused; raise data.max_length or lower data.image_max_pixels")
    return lines


def recipe_table(rows: list[dict], gpu: str) -> str:
    """The shipped recipes as aligned columns, with the command that trains one."""
    headers = ("name", "model", "method", "peak GiB", f"fits {gpu}")
    cells = [(r["name"], r["model"], r["method"], "?" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}",
              "?" if r["fits"] is None else ("yes" if r["fits"] else "no")) for r in rows]
    widths = [max(len(str(c[i])) for c in [headers, *cells]) for i in range(len(headers))]
    line = lambda c: "  ".join(str(v).ljust(w) for v, w in zip(c, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths]), *map(line, cells)]
    if rows:
        from studio.config.shipped import DEMO_RECIPE

        out += ["", f"train one: studio train {DEMO_RECIPE}   (its memory on a GPU: studio estimate NAME --gpu 8GB)"]
    return "\n".join(out)


def reward_table(rows: list[dict]) -> str:
    """The GRPO rewards, one block each: name and summary, then the columns it reads and its options."""
    out = []
    for r in rows:
        out.append(f"{r['name']}  ({r['source']})\n  {r['summary']}")
        columns = r["columns"] + [f"{c} (optional)" for c in r["optional_columns"]]
        if columns:
            out.append(f"  columns: {', '.join(columns)}")
        if r["options"]:
            out.append("  options: " + ", ".join(f"{k}={v}" for k, v in r["options"].items()))
    out += ["", "use one: grpo.rewards: [{name: numeric_answer, weight: 1.0, args: {tolerance: 0.01}}]"]
    return "\n".join(out)


def doctor_report(checks) -> str:
    """One line per check with its verdict, and the fix under each that is not ok."""
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "    "}
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"[{marks[c.status]}] {c.name:<{width}}  {c.detail}")
        if c.fix and c.status in ("warn", "fail"):
            lines.append(f"       {'':<{width}}  fix: {c.fix}")
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    lines += ["", f"{failed} problem(s), {warned} warning(s)" if failed or warned else "everything the studio needs is in place"]
    return "\n".join(lines)


def report_result(report) -> str:
    """Where the report page went and one line per section: what it found, or what is not checked yet."""
    from pathlib import Path

    lines = [f"report: {report.path}"]
    for section, found in report.sections.items():
        shown = ", ".join(found) if isinstance(found, list) else found
        lines.append(f"  {section:<12} {shown}")
    return "\n".join(lines + [f"open it in a browser: {Path(report.path).resolve().as_uri()}"])
