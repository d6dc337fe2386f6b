"""A run directory read into the plain data the report page shows, section by section.

Every file is optional but recipe.yaml: a section whose file is missing (or damaged, or written by another
version) says what to run to fill it instead of failing the page. Nothing here trusts a value's type: the
files may have been edited by hand, so numbers are checked before they are drawn or compared.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import yaml

from studio.errors import StudioError
from studio.training.rundir import CARD, COMPLETIONS, DATA, ENV, EVAL, EXPORT, MERGE, RECIPE, SUMMARY, check_run_dir, read_json_or_empty, read_metrics

NOT_CHECKED = "not checked yet"
SAMPLE_COMPLETIONS = 8  # GRPO: the newest sampled completions shown; the file keeps every few steps' worth
ANSWER_CHARS = 2000  # a sample longer than this is cut on the page (the run directory keeps it whole)


def number(value) -> float | None:
    """value as a finite float, or None for anything else (text, booleans, NaN, a missing key)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def figure(value, spec: str) -> str:
    """A number of the run formatted with `spec`, or "?" when the file holds no number there."""
    found = number(value)
    return "?" if found is None else format(found, spec)


def texts(value) -> list[str]:
    """A list of the run's texts (reasons, notes), clipped; [] for anything that is not a list."""
    return [clip(v) for v in value if v] if isinstance(value, list) else []


def clip(value) -> str | None:
    """A value of the run as text no longer than ANSWER_CHARS (None stays None: 'not generated')."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + f"… ({len(text) - ANSWER_CHARS} more characters)"


def flat_rows(value, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, text) rows of a nested JSON object, for the provenance tables (lists of scalars joined)."""
    if isinstance(value, dict):
        rows = []
        for key, item in value.items():
            rows += flat_rows(item, f"{prefix}{key}." if isinstance(item, dict) and item else f"{prefix}{key}")
        return rows
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        text = ", ".join(str(v) for v in value)
    else:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return [(prefix.rstrip("."), clip(text))]


def _recipe(run_dir: Path) -> tuple[str, dict]:
    text = (run_dir / RECIPE).read_text(encoding="utf-8", errors="replace")
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:  # shown as text all the same; the sections that need its values say unknown
        parsed = None
    return text, parsed if isinstance(parsed, dict) else {}


def curves(records: list[dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """chart -> series -> (step, value) points from metrics.jsonl: loss (train, validation), learning rate, and
    for GRPO the reward (the weighted total and each reward's mean) and KL; charts with no point are left out."""
    charts: dict[str, dict[str, list]] = {"loss": {"train": [], "validation": []}, "learning rate": {"lr": []},
                                          "reward": {"total": []}, "kl": {"kl": []}}
    for record in records:
        step = number(record.get("step")) if isinstance(record, dict) else None
        if step is None:
            continue
        for key, chart, series in (("train_loss", "loss", "train"), ("eval_loss", "loss", "validation"),
                                   ("lr", "learning rate", "lr"), ("reward", "reward", "total"), ("kl", "kl", "kl")):
            if number(record.get(key)) is not None:
                charts[chart][series].append((step, number(record[key])))
        for key, value in record.items():
            if key.startswith("rewards/") and key.endswith("/mean") and number(value) is not None:
                charts["reward"].setdefault(key.removeprefix("rewards/").removesuffix("/mean"), []).append((step, number(value)))
    return {chart: {s: p for s, p in series.items() if p} for chart, series in charts.items() if any(series.values())}


def _perplexity(loss) -> float | None:
    # as studio.evaluation.generate.perplexity computes the adapter's: exp(loss), capped where a diverged model overflows
    loss = number(loss)
    return None if loss is None else math.exp(min(loss, 50.0))


def _harness_rows(harness) -> list[dict]:
    """`studio eval --tasks` (eval.json "harness": task -> metric -> base, adapter) as table rows."""
    found = harness.get("scores") if isinstance(harness, dict) else None
    if not isinstance(found, dict):
        return []
    return [{"figure": f"lm-eval {task}: {metric}", "base": pair.get("base"), "adapter": pair.get("adapter"), "better": None}
            for task, metrics in found.items() if isinstance(metrics, dict) for metric, pair in metrics.items() if isinstance(pair, dict)]


def scores(evaluation: dict) -> list[dict]:
    """The rows of the base-vs-adapter table (figure, base, adapter, change, which way is better) from eval.json:
    `studio eval`'s metric, losses and GRPO rewards, and `studio eval --tasks`'s lm-eval scores; [] before either."""
    rows = [{"figure": f"{evaluation.get('metric', '?')} (0-100)", "base": evaluation.get("base_score"), "adapter": evaluation.get("adapter_score"), "better": "higher"},
            {"figure": "held-out loss", "base": evaluation.get("base_loss"), "adapter": evaluation.get("adapter_loss"), "better": "lower"},
            {"figure": "held-out perplexity", "base": _perplexity(evaluation.get("base_loss")), "adapter": evaluation.get("adapter_perplexity"), "better": "lower"}]
    base_rewards, rewards = evaluation.get("base_rewards"), evaluation.get("adapter_rewards")
    base_rewards, rewards = (base_rewards if isinstance(base_rewards, dict) else {}), (rewards if isinstance(rewards, dict) else {})
    for name in dict.fromkeys([*rewards, *base_rewards]):  # the weighted total GRPO maximises, then each reward
        label = "mean reward, weighted total" if name == "total" else f"mean reward: {name}"
        rows.append({"figure": label, "base": base_rewards.get(name), "adapter": rewards.get(name), "better": "higher"})
    rows += _harness_rows(evaluation.get("harness"))
    for row in rows:
        base, adapter = number(row["base"]), number(row["adapter"])
        row["change"] = None if base is None or adapter is None else adapter - base
    return [r for r in rows if r["base"] is not None or r["adapter"] is not None]


def samples(evaluation: dict) -> list[dict]:
    """eval.json's answers side by side: prompt, reference, base (None when the base was skipped), adapter, and a
    vision run's held-out pictures as inline thumbnails (a picture no longer readable is left out)."""
    found = evaluation.get("samples")
    if not isinstance(found, list):
        return []
    return [{**{k: clip(s.get(k)) for k in ("prompt", "reference", "base", "adapter")}, "images": _thumbnails(s.get("images"))}
            for s in found if isinstance(s, dict)]


def _thumbnails(paths) -> list[str]:
    from studio.data.images import thumbnail_uri
    from studio.errors import StudioError

    shown = []
    for path in paths if isinstance(paths, list) else []:
        try:
            shown.append(thumbnail_uri(str(path), "report sample"))
        except StudioError:  # moved or deleted since evaluation: the answers still stand
            continue
    return shown


def completions(run_dir: Path) -> list[dict]:
    """The newest GRPO completions (step, prompt, completion, each reward's score, total), newest first."""
    found = [r for r in read_metrics(run_dir, COMPLETIONS) if isinstance(r, dict)][-SAMPLE_COMPLETIONS:]
    rows = []
    for r in reversed(found):
        rewards = r.get("rewards") if isinstance(r.get("rewards"), dict) else {}
        rows.append({"step": r.get("step"), "prompt": clip(r.get("prompt")), "completion": clip(r.get("completion")),
                     "rewards": {str(k): v for k, v in rewards.items()}, "total": r.get("total")})
    return rows


def forgetting(evaluation: dict) -> dict | None:
    """eval.json's "forgetting" record (`studio eval --forgetting`), or None before the check (or when unreadable)."""
    found = evaluation.get("forgetting")
    if not isinstance(found, dict) or not isinstance(found.get("verdict"), str):
        return None
    answers = found.get("answers") if isinstance(found.get("answers"), list) else []
    return {**found, "reasons": texts(found.get("reasons")),
            "thresholds": found.get("thresholds") if isinstance(found.get("thresholds"), dict) else {},
            "answers": [{k: clip(a.get(k)) for k in ("question", "expected", "base", "adapter")} | {"same": a.get("same") is True}
                        for a in answers if isinstance(a, dict)]}


def _gate(record: dict) -> dict | None:
    gate = record.get("consistency")
    if not isinstance(gate, dict) or not isinstance(gate.get("checks"), list):
        return None
    checks = [{"name": clip(c.get("name")), "passed": c.get("passed") is True, "detail": clip(c.get("detail")), "file": clip(c.get("file")),
               "fix": clip(c.get("fix")), "diff": c.get("diff") if isinstance(c.get("diff"), str) else None}
              for c in gate["checks"] if isinstance(c, dict)]
    return {"passed": gate.get("passed") is True and all(c["passed"] for c in checks), "checks": checks, "notes": texts(gate.get("notes"))}


def consistency(run_dir: Path) -> list[dict]:
    """The serving-consistency results recorded by `studio merge` (merge.json) and each `studio export` (export.json):
    source, the step's own check (logit parity or GGUF round trip), and the gate's checks; [] when none was run."""
    found = []
    merge = read_json_or_empty(run_dir / MERGE)
    if merge:
        parity = (f"logit parity: max |merged - adapter| {figure(merge.get('max_abs_diff'), '.2e')} (relative "
                  f"{figure(merge.get('rel_diff'), '.1e')}, tolerance {figure(merge.get('tolerance'), '.0e')})")
        found.append({"source": f"merge ({MERGE})", "where": clip(merge.get("merged_dir")), "step_passed": merge.get("passed") is True,
                      "step": parity, "gate": _gate(merge)})
    for key, record in read_json_or_empty(run_dir / EXPORT).items():
        if not isinstance(record, dict):
            continue
        trip = (f"GGUF round trip: top-1 agreement {figure(record.get('top1_agreement'), '.4f')}, mean KL "
                f"{figure(record.get('mean_kl'), '.3g')} over {figure(record.get('prompts'), '.0f')} prompts")
        found.append({"source": f"export {clip(key)} ({EXPORT})", "where": clip(record.get("path")) or "not written",
                      "step_passed": record.get("passed") is True, "step": trip, "gate": _gate(record)})
    return found


def gather(run_dir: str | Path) -> dict:
    """Everything the report shows, read from the run directory; a StudioError when it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StudioError(f"no run directory at {run_dir}", where=str(run_dir), fix="pass the folder `studio train` printed at the end (under runs/)")
    run_dir = check_run_dir(run_dir, need_adapter=False).resolve()
    recipe_text, recipe = _recipe(run_dir)
    method = recipe.get("method") if isinstance(recipe.get("method"), str) else None
    output, model = (recipe.get(k) if isinstance(recipe.get(k), dict) else {} for k in ("output", "model"))
    evaluation = read_json_or_empty(run_dir / EVAL)
    quoted = shlex.quote(str(run_dir))
    card = run_dir / CARD
    return {
        "run_dir": str(run_dir),
        "name": str(output.get("name") or run_dir.name),
        "method": method,
        "model": str(model.get("name", "?")),
        "curves": curves(read_metrics(run_dir)),
        "scores": scores(evaluation),
        "examples": evaluation.get("examples"),
        "samples": samples(evaluation),
        "completions": completions(run_dir) if method == "grpo" else [],
        "forgetting": forgetting(evaluation),
        "consistency": consistency(run_dir),
        "recipe": recipe_text,
        "data": flat_rows(read_json_or_empty(run_dir / DATA)),
        "env": flat_rows(read_json_or_empty(run_dir / ENV)),
        "summary": flat_rows(read_json_or_empty(run_dir / SUMMARY)),
        "card": card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None,
        "commands": {"eval": f"studio eval {quoted}", "forgetting": f"studio eval {quoted} --forgetting",
                     "merge": f"studio merge {quoted}", "export": f"studio export {quoted}", "train": f"studio train --resume {quoted}"},
    }


def statuses(contents: dict) -> dict:
    """One word or count per section (what `studio report --json` prints beside the page's path)."""
    gates = [c["gate"] for c in contents["consistency"] if c["gate"] is not None]
    return {
        "curves": sorted(contents["curves"]) or "no metrics logged yet",
        "scores": "evaluated" if contents["scores"] else "not evaluated yet",
        "forgetting": contents["forgetting"]["verdict"] if contents["forgetting"] else NOT_CHECKED,
        "samples": len(contents["samples"]) + len(contents["completions"]),
        "consistency": NOT_CHECKED if not gates else "passed" if all(g["passed"] for g in gates) else "failed",
        "provenance": "recorded" if contents["data"] or contents["env"] else "recipe only",
    }
