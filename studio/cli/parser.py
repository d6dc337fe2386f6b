"""Every `studio` subcommand and its flags, in one place.

Building the parser imports nothing heavy (no torch, no transformers, not even the recipe schema):
`studio --help` answers in a fraction of a second. The recipe keys listed by `studio train --help` and
`studio validate --help` are generated from the schema only when that help is asked for.
"""

from __future__ import annotations

import argparse

from studio.export.formats import DEFAULT_QUANT, FORMATS, QUANTS, THRESHOLDS
from studio.memory.gpus import DEFAULT_GPU, GPUS

RECIPE_HELP = "a recipe YAML file, or the name of a shipped recipe such as smollm2/135m-qlora (see `studio recipes`)"


class _HelpWithRecipeKeys(argparse._HelpAction):
    """`-h/--help` that appends every recipe key, its default and its meaning, read from the schema."""

    def __call__(self, parser, namespace, values, option_string=None):
        from studio.cli.format import recipe_keys_help

        parser.epilog = recipe_keys_help()
        super().__call__(parser, namespace, values, option_string)


def _recipe_parser(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand that takes a recipe: its help lists the recipe keys, and it takes --set overrides."""
    p = sub.add_parser(name, add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    p.add_argument("-h", "--help", action=_HelpWithRecipeKeys, help="show this help, with every recipe key, and exit")
    return p


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.max_steps=10 (repeatable)")


def _add_json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object")


def _concurrency(value: str) -> str | int:
    """`auto` or a whole number of at least 1, for `studio ui --concurrency`."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"at least 1 job must run at once, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from studio import __version__

    parser = argparse.ArgumentParser(prog="studio", description="Adapter Studio: LoRA/QLoRA fine-tuning that merges back into the open base model.")
    parser.add_argument("--version", action="version", version=f"adapter-studio {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _recipe_parser(sub, "train", help="fine-tune a recipe and write a run directory",
                       description="Train RECIPE (a YAML file or a shipped recipe's name), or continue an interrupted run with --resume RUN_DIR.")
    p.add_argument("recipe", nargs="?", help=RECIPE_HELP)
    _add_set(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last complete checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    p.add_argument("--gpus", type=int, metavar="N", help="train on N GPUs of this machine through accelerate (DDP, or FSDP when the recipe's distributed.strategy says so)")
    p.add_argument("--worker", metavar="RUN_DIR", help=argparse.SUPPRESS)  # one process of a distributed run (started by the launcher)
    p.add_argument("--resume-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_json(p)

    p = _recipe_parser(sub, "validate", help="check a recipe and its data without loading a model")
    p.add_argument("recipe", help=RECIPE_HELP)
    _add_set(p)
    _add_json(p, "the resolved recipe and data summary")

    p = sub.add_parser("recipes", help="list the shipped recipes: name, model, method and estimated peak GPU memory")
    p.add_argument("--gpu", default=DEFAULT_GPU, metavar="SIZE|NAME", help=f"the GPU the 'fits' column is judged against (default {DEFAULT_GPU})")
    _add_json(p, "the list")

    p = sub.add_parser("rewards", help="list the GRPO rewards: the shipped ones (and a reward file's), the columns and options each takes")
    p.add_argument("--file", metavar="PY", help="also list the reward functions of this Python file (it is run, like any script)")
    _add_json(p, "the list")

    add_estimate_parser(sub)
    add_export_parser(sub)
    add_users_parser(sub)
    add_report_parser(sub)

    p = sub.add_parser("merge", help="merge a run's adapter into the base model and verify the logits")
    p.add_argument("run_dir", help="a run directory written by `studio train`")
    p.add_argument("--out", help="where to write the merged model (default RUN_DIR/merged)")
    _add_json(p)

    p = sub.add_parser("eval", help="score base and adapter on held-out examples")
    p.add_argument("run_dir", help="a run directory written by `studio train`")
    p.add_argument("--data", help="held-out file (default: the recipe's data.test_path, else data.val_path)")
    p.add_argument("--limit", type=int, help="evaluate on at most N examples")
    p.add_argument("--no-base", action="store_true", help="skip the base model (faster)")
    p.add_argument("--forgetting", action="store_true",
                   help="instead, check what the adapter forgot on the shipped general probes: KL to the base, general-text "
                        "perplexity and answer agreement, with a verdict kept / drifted / forgot (added to eval.json)")
    p.add_argument("--tasks", metavar="NAMES", help="instead, run lm-evaluation-harness tasks (comma-separated) on base and adapter "
                                                    "with identical settings (the `eval` extra; added to eval.json)")
    p.add_argument("--task-dir", metavar="DIR", help="a folder of your own lm-eval task YAML files (with --tasks)")
    p.add_argument("--num-fewshot", type=int, metavar="N", help="few-shot examples per task (with --tasks; default: each task's own)")
    _add_json(p)

    p = sub.add_parser("chat", help="talk to the adapter (interactive, or one --prompt)")
    p.add_argument("run_dir", help="a run directory written by `studio train`")
    p.add_argument("--prompt", help="answer this one prompt and exit")
    p.add_argument("--base", action="store_true", help="use the base model without the adapter, for comparison")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="an image shown with --prompt (vision-language runs; repeat for several; interactively: /image FILE)")
    p.add_argument("--max-new-tokens", type=int, help="answer length limit (default: the recipe's eval.max_new_tokens)")
    _add_json(p, "{prompt, answer} (with --prompt)")

    p = sub.add_parser("reproduce", help="re-train a run from its directory and compare losses and adapters")
    p.add_argument("run_dir", help="a run directory written by `studio train`")
    p.add_argument("--out", help="where the reproduction goes (default RUN_DIR-reproduced)")
    _add_json(p, "the comparison")

    p = sub.add_parser("delete", help="remove a run directory (adapter, checkpoints, merged model, exports)")
    p.add_argument("run_dir", help="a run directory written by `studio train`")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = sub.add_parser("ui", help="open the studio in the browser (http://127.0.0.1:7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but localhost requires --auth")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--auth", metavar="FILE", help="users file written by `studio users add` (default: STUDIO_UI_AUTH, else the studio home's users file when it exists)")
    p.add_argument("--home", help="studio home for workspaces and the job queue (default $STUDIO_HOME)")
    p.add_argument("--concurrency", type=_concurrency, default="auto", metavar="auto|N",
                   help="training jobs run at once: auto (default) packs jobs whose estimated peak memory fits the GPU's free memory, "
                        "or follows the CPU cores; a number runs at most that many")
    p.add_argument("--max-queued", type=int, metavar="N", help="jobs one user may have waiting (default 10 on a shared server, none locally)")
    p.add_argument("--max-running", type=int, metavar="N", help="jobs one user may have running at once (default 1 on a shared server, none locally)")
    p.add_argument("--session-hours", type=float, default=12.0, metavar="H", help="a login lasts this long (default 12)")
    p.add_argument("--idle-hours", type=float, default=2.0, metavar="H", help="a login ends after this long without a request (default 2)")

    p = sub.add_parser("demo", help="fine-tune the bundled SmolLM2-135M offline and show before/after")
    p.add_argument("--out", help="run directory parent (default runs/)")
    p.add_argument("--quick", action="store_true", help="a 3-step smoke run of the same path (for tests)")
    _add_json(p, "the summary")

    p = sub.add_parser("doctor", help="what the studio sees on this machine (Python, torch, GPU, Triton, bitsandbytes, cache, port), with fixes")
    p.add_argument("--port", type=int, default=7860, help="the port `studio ui` would serve on (default 7860)")
    _add_json(p, "every check")
    return parser


def add_estimate_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `estimate` subcommand to the CLI's subparsers; returns its parser."""
    p = subparsers.add_parser("estimate", help="estimate peak GPU memory of a recipe and what fits, without a GPU or a download",
                              description="Peak GPU memory of training RECIPE, broken down, whether it fits, and the largest batch size and "
                                          "max_length that fit. Exit status 0 when it fits, 1 when it does not.")
    p.add_argument("recipe", help=RECIPE_HELP)
    p.add_argument("--gpu", default=DEFAULT_GPU, metavar="SIZE|NAME",
                   help=f"GPU memory (8GB, 24GB, 80GB, or GiB as a number) or a name: {', '.join(GPUS)} (default {DEFAULT_GPU})")
    _add_set(p)
    _add_json(p, "the estimate (breakdown in GiB, total as peak_gib)")
    return p


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `export` subcommand to the CLI's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "export",
        help="write the merged model as GGUF (llama.cpp) or for Ollama, checked against the merged model",
        description="Write RUN_DIR's merged model as one GGUF file (and a Modelfile with --format ollama), "
        "load it back with an independent reader and compare next-token predictions on held-out prompts. "
        "An export past the thresholds is reported as failed and not written.",
    )
    top1 = ", ".join(f"{t[0]} for {q}" for q, t in THRESHOLDS.items())
    kl = ", ".join(f"{t[1]} for {q}" for q, t in THRESHOLDS.items())
    p.add_argument("run_dir", help="a run directory written by `studio train` (merged first if needed)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default=FORMATS[0], help="gguf: one .gguf file; ollama: model.gguf + Modelfile (default gguf)")
    p.add_argument("--quant", choices=QUANTS, default=DEFAULT_QUANT, help=f"precision of the weight matrices; norms and biases stay f32 (default {DEFAULT_QUANT})")
    p.add_argument("--out", help="gguf: a .gguf path or a folder (default RUN_DIR/export/); ollama: a folder (default RUN_DIR/ollama)")
    p.add_argument("--min-top1", type=float, help=f"fail below this top-1 agreement (default {top1})")
    p.add_argument("--max-kl", type=float, help=f"fail above this mean KL in nats (default {kl})")
    p.add_argument("--no-check", action="store_true", help="keep the file even when the round trip diverges (figures are still recorded)")
    _add_json(p)
    return p


def add_users_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `users` subcommand (add, passwd, remove, list accounts of a shared studio); returns its parser."""
    p = subparsers.add_parser("users", help="manage the accounts of a shared studio (the users file `studio ui` reads)",
                              description="Add, re-password, remove and list the accounts `studio ui` accepts. Passwords are read "
                                          "without echo on a terminal (typed twice), else as one line of stdin, and stored as salted "
                                          "scrypt hashes. The file defaults to the studio home's `users`, which `studio ui` reads "
                                          "when no --auth is given.")
    actions = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    file_help = "the users file (default: `users` in the studio home, $STUDIO_HOME or ~/.cache/adapter-studio)"
    a = actions.add_parser("add", help="add an account (asks for its password)")
    a.add_argument("name", help="the login name: letters, digits, '_', '.', '-'")
    a.add_argument("--teacher", action="store_true", help="the account sees every user's jobs")
    a.add_argument("--file", metavar="USERS_FILE", help=file_help)
    a = actions.add_parser("passwd", help="set a new password (also migrates an old unsalted line)")
    a.add_argument("name", help="an existing login name")
    a.add_argument("--file", metavar="USERS_FILE", help=file_help)
    a = actions.add_parser("remove", help="delete an account")
    a.add_argument("name", help="an existing login name")
    a.add_argument("--file", metavar="USERS_FILE", help=file_help)
    a = actions.add_parser("list", help="the accounts and which are teachers (never the hashes)")
    a.add_argument("--file", metavar="USERS_FILE", help=file_help)
    _add_json(a, "the accounts")
    return p


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `report` subcommand (one self-contained HTML page of a run directory); returns its parser."""
    p = subparsers.add_parser(
        "report",
        help="write one self-contained HTML page of a run: curves, base vs adapter, forgetting, samples, serving checks, provenance",
        description="Read RUN_DIR's files and write one HTML page that needs no network (charts inlined): loss, validation and "
        "learning-rate curves (and GRPO rewards), base vs adapter scores, the forgetting verdict, answers side by side, "
        "the serving-consistency checks of merge and export, and the recipe, data, versions and device the run used. "
        "A section whose step has not run says which command fills it.",
    )
    p.add_argument("run_dir", help="a run directory written by `studio train` (finished or not)")
    p.add_argument("--out", metavar="FILE", help="where to write the page: a file, or a folder to put report.html in (default RUN_DIR/report.html)")
    _add_json(p, "the page's path and what each section found")
    return p
