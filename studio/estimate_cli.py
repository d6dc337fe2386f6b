"""`studio estimate RECIPE [--gpu 8GB|24GB|80GB|NAME] [--set key=value ...] [--json]`: memory before the run.

Wiring into studio/cli.py is two lines: `add_estimate_parser(sub)` in build_parser and
`"estimate": cmd_estimate` in COMMANDS. The exit status is 0 when the recipe fits the GPU, 1 when it does
not (so `studio estimate r.yaml --gpu 8GB && studio train r.yaml` works), and a StudioError (a bad recipe,
an unknown model or GPU) propagates to the CLI's handler (status 2).
"""

from __future__ import annotations

import json

from .errors import StudioError
from .memory import GPUS, auto_fit, estimate, gpus_needed

DEFAULT_GPU = "24GB"


def run_estimate(recipe_path: str, gpu: str | float = DEFAULT_GPU, overrides: list[str] | None = None, as_json: bool = False) -> tuple[int, str]:
    """(exit status, text to print) for a recipe file on a GPU: a table, or JSON with the breakdown in GiB."""
    from .recipe_io import load_recipe

    recipe = load_recipe(recipe_path, overrides or [])
    result = estimate(recipe, gpu)
    if not result["known"]:
        raise StudioError(f"no shape known for model {recipe.model.name!r}, so memory cannot be estimated", where="model.name",
                          fix="point model.name at a local folder with config.json or a .gguf file")
    report = dict(result)
    report["recipe"] = str(recipe_path)
    if not result["fits"]:
        try:
            report["gpus_needed"] = gpus_needed(recipe, result["gpu_gib"])
        except StudioError as exc:
            report["gpus_needed"] = None
            report["gpus_needed_error"] = exc.what
        try:
            _, info = auto_fit(recipe, result["gpu_gib"])
            report["auto_fit"] = {key: new for key, (_, new) in info["changes"].items()}
        except StudioError as exc:
            report["auto_fit"] = None
            report["auto_fit_error"] = exc.what
    code = 0 if result["fits"] else 1
    if as_json:
        return code, json.dumps(report, default=str)
    return code, format_table(report)


def format_table(report: dict) -> str:
    """The human-readable estimate."""
    lines = [f"{report['model']} · {report['method']} · {report['tokens_per_batch']} tokens per micro-batch · loss: {report['loss']}",
             f"{report['params'] / 1e9:.2f}B parameters, {report['lora_params'] / 1e6:.2f}M trainable; shapes from {report['source']}", ""]
    width = max(len(k) for k in report["breakdown"])
    for key, value in report["breakdown"].items():
        lines.append(f"  {key:<{width}}  {value:8.2f} GiB")
    lines.append(f"  {'peak':<{width}}  {report['peak_gib']:8.2f} GiB   (torch allocated ≈ {report['allocated_gib']:.2f} GiB)")
    if report.get("cpu_offload_gib"):
        lines.append(f"  CPU memory for offloaded activations and embeddings: {report['cpu_offload_gib']:.2f} GiB")
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


def add_estimate_parser(subparsers):
    """Add the `estimate` subcommand to the CLI's subparsers; returns its parser."""
    p = subparsers.add_parser("estimate", help="estimate peak GPU memory of a recipe and what fits, without a GPU or a download",
                              description="Peak GPU memory of training RECIPE, broken down, whether it fits, and the largest batch size and "
                                          "max_length that fit. Exit status 0 when it fits, 1 when it does not.")
    p.add_argument("recipe", help="recipe YAML file (see recipes/)")
    p.add_argument("--gpu", default=DEFAULT_GPU, metavar="SIZE|NAME",
                   help=f"GPU memory (8GB, 24GB, 80GB, or GiB as a number) or a name: {', '.join(GPUS)} (default {DEFAULT_GPU})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key (repeatable)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON (breakdown in GiB, total as peak_gib)")
    return p


def cmd_estimate(args) -> int:
    """`studio estimate`: print the estimate; the status says whether it fits."""
    code, text = run_estimate(args.recipe, args.gpu, args.overrides, args.json)
    print(text)
    return code
