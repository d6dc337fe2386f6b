"""The `studio` command: parses arguments and calls the library. No logic lives here.

Every StudioError ends as a short message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import StudioError


def _schema_help() -> str:
    """Every recipe key with its default and docstring, generated from the schema (one source of truth)."""
    from pydantic import BaseModel

    from .recipe import Recipe

    lines = ["recipe keys (override any with --set key=value):"]
    for section, field in Recipe.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for name, sub in ann.model_fields.items():
                default = sub.default if sub.default_factory is None else sub.default_factory()
                doc = " ".join((sub.description or "").split())
                lines.append(f"  {section}.{name} = {default!r}\n      {doc}")
        else:
            lines.append(f"  {section} = {field.default!r}\n      {' '.join((field.description or '').split())}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="studio", description="Adapter Studio: LoRA/QLoRA fine-tuning that merges back into the open base model.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("train", help="fine-tune a recipe and write a run directory", epilog=_schema_help(), formatter_class=fmt,
                       description="Train RECIPE (a YAML file), or continue an interrupted run with --resume RUN_DIR.")
    p.add_argument("recipe", nargs="?", help="recipe YAML file (see recipes/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key, e.g. --set train.max_steps=10 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last complete checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    p.add_argument("--gpus", type=int, metavar="N", help="train on N GPUs of this machine through accelerate (DDP, or FSDP when the recipe's distributed.strategy says so)")
    p.add_argument("--worker", metavar="RUN_DIR", help=argparse.SUPPRESS)  # one process of a distributed run (started by the launcher)
    p.add_argument("--resume-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")

    p = sub.add_parser("validate", help="check a recipe and its data without loading a model", epilog=_schema_help(), formatter_class=fmt)
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key (repeatable)")
    p.add_argument("--json", action="store_true", help="print the resolved recipe and data summary as JSON")

    from .estimate_cli import add_estimate_parser
    from .export import add_export_parser

    add_estimate_parser(sub)
    add_export_parser(sub)

    p = sub.add_parser("merge", help="merge a run's adapter into the base model and verify the logits")
    p.add_argument("run_dir", help="a run directory written by `studio train`")
    p.add_argument("--out", help="where to write the merged model (default RUN_DIR/merged)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("eval", help="score base and adapter on held-out examples")
    p.add_argument("run_dir", help="a run directory written by `studio train`")
    p.add_argument("--data", help="held-out file (default: the recipe's data.test_path, else data.val_path)")
    p.add_argument("--limit", type=int, help="evaluate on at most N examples")
    p.add_argument("--no-base", action="store_true", help="skip the base model (faster)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("chat", help="talk to the adapter (interactive, or one --prompt)")
    p.add_argument("run_dir", help="a run directory written by `studio train`")
    p.add_argument("--prompt", help="answer this one prompt and exit")
    p.add_argument("--base", action="store_true", help="use the base model without the adapter, for comparison")
    p.add_argument("--max-new-tokens", type=int, help="answer length limit (default: the recipe's eval.max_new_tokens)")
    p.add_argument("--json", action="store_true", help="with --prompt: print {prompt, answer} as JSON")

    p = sub.add_parser("reproduce", help="re-train a run from its directory and compare losses and adapters")
    p.add_argument("run_dir", help="a run directory written by `studio train`")
    p.add_argument("--out", help="where the reproduction goes (default RUN_DIR-reproduced)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")

    p = sub.add_parser("delete", help="remove a run directory (adapter, checkpoints, merged model, exports)")
    p.add_argument("run_dir", help="a run directory written by `studio train`")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = sub.add_parser("ui", help="open the studio in the browser (http://127.0.0.1:7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but localhost requires --auth")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--auth", metavar="FILE", help="file of `user:sha256-hash` lines (or set STUDIO_UI_AUTH)")
    p.add_argument("--home", help="studio home for workspaces and the job queue (default $STUDIO_HOME)")
    p.add_argument("--concurrency", type=int, default=1, help="training jobs run at once (default 1: one per GPU)")

    p = sub.add_parser("demo", help="fine-tune the bundled SmolLM2-135M offline and show before/after")
    p.add_argument("--out", help="run directory parent (default runs/)")
    p.add_argument("--quick", action="store_true", help="a 3-step smoke run of the same path (for tests)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `studio` console script; returns the exit status."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from .models import quiet_libraries

    quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except StudioError as exc:
        if getattr(args, "json", False):
            print(json.dumps(exc.to_dict()))
        print(exc.format(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        return 0


def _emit(args, data: dict, text: str) -> None:
    print(json.dumps(data, default=str) if args.json else text)


def cmd_train(args) -> int:
    """`studio train`: run a recipe, or resume a run directory."""
    from .distributed import gpus_overrides
    from .recipe_io import load_recipe
    from .train import launch_distributed, resume_recipe, train

    if args.worker:
        train(resume_recipe(args.worker), resume=args.resume_worker, progress=not args.no_progress, worker=True)
        return 0  # the launcher reports the result
    if args.resume:
        if args.recipe or args.overrides or args.gpus:
            raise StudioError("--resume continues a run exactly as it was started", where="--resume", fix="drop the recipe, --set and --gpus arguments")
        recipe, resume = resume_recipe(args.resume), True
    elif args.recipe:
        recipe, resume = load_recipe(args.recipe, gpus_overrides(args.recipe, args.overrides, args.gpus)), False
    else:
        raise StudioError("no recipe given", where="studio train", fix="pass a recipe file (see recipes/) or --resume RUN_DIR")
    if recipe.distributed.strategy != "none":
        result = _distributed_result(launch_distributed(recipe, resume=resume, progress=not args.no_progress, overwrite=args.overwrite))
    else:
        result = train(recipe, resume=resume, progress=not args.no_progress, overwrite=args.overwrite)
    data = {"run_dir": str(result.run_dir), "adapter_dir": str(result.adapter_dir), "steps": result.steps, "train_loss": result.train_loss, "eval_loss": result.eval_loss}
    text = f"trained {result.steps} steps; final train loss {result.train_loss}" + (f", validation loss {result.eval_loss:.4f}" if result.eval_loss is not None else "")
    _emit(args, data, f"{text}\nrun directory: {result.run_dir}\nnext: studio eval {result.run_dir}  |  studio merge {result.run_dir}")
    return 0


def _distributed_result(run_dir: Path):
    """The TrainResult of a finished distributed run, read from the summary its rank 0 wrote."""
    from .rundir import ADAPTER, SUMMARY, read_json
    from .train import TrainResult

    if not (run_dir / SUMMARY).exists():  # machines other than 0 do not write the run directory
        return TrainResult(run_dir, run_dir / ADAPTER, 0, None, None)
    summary = read_json(run_dir / SUMMARY)
    return TrainResult(run_dir, run_dir / ADAPTER, summary["steps"], summary["train_loss"], summary["eval_loss"])


def cmd_validate(args) -> int:
    """`studio validate`: schema, data file and format checks, without loading a model."""
    from .data import load_examples, load_heldout
    from .recipe_io import dump_recipe, load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    fmt, examples = load_examples(recipe.data.path, recipe.data)
    info = {"recipe": recipe.to_yaml_dict(), "data_format": fmt, "data_rows": len(examples), "valid": True}
    if recipe.data.test_path:
        info["test_rows"] = len(load_heldout(recipe.data.test_path, recipe.data)[1])
    text = f"{args.recipe}: valid ({recipe.method}, {recipe.model.name}); data: {len(examples)} {fmt} rows\n\n{dump_recipe(recipe)}"
    _emit(args, info, text)
    return 0


def cmd_merge(args) -> int:
    """`studio merge`: merge and verify."""
    from .merge import merge

    result = merge(args.run_dir, args.out)
    _emit(args, result.to_dict(), f"merged model: {result.merged_dir}\nparity: max |merged - adapter| logit difference {result.max_abs_diff:.2e} (relative {result.rel_diff:.1e} <= {result.tolerance:.0e})")
    return 0


def cmd_eval(args) -> int:
    """`studio eval`: task metric for base and adapter, plus held-out loss."""
    from .evaluate import evaluate

    result = evaluate(args.run_dir, data=args.data, limit=args.limit, with_base=not args.no_base)
    lines = [f"{result.metric} on {result.examples} held-out examples:"]
    if result.base_score is not None:
        lines.append(f"  base    {result.base_score:6.1f}   loss {result.base_loss:.4f}")
    lines.append(f"  adapter {result.adapter_score:6.1f}   loss {result.adapter_loss:.4f}  perplexity {result.adapter_perplexity:.3f}")
    for s in result.samples:
        lines += ["", f"prompt:    {s['prompt']}", f"reference: {s['reference']}", f"base:      {s['base']}", f"adapter:   {s['adapter']}"]
    _emit(args, result.to_dict(), "\n".join(lines))
    return 0


def cmd_chat(args) -> int:
    """`studio chat`: one prompt, or an interactive conversation, through the adapter (or the base)."""
    from .chat import ChatSession

    session = ChatSession(args.run_dir, use_adapter=not args.base, max_new_tokens=args.max_new_tokens)
    if args.prompt is not None:
        answer = session.ask(args.prompt)
        _emit(args, {"prompt": args.prompt, "answer": answer}, answer)
        return 0
    print("chatting with " + ("the base model" if args.base else "the adapter") + "; /reset clears the history, /exit or Ctrl-D quits", file=sys.stderr)
    while True:
        try:
            text = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if text.strip() in ("/exit", "/quit"):
            return 0
        if text.strip() == "/reset":
            session.reset()
            continue
        if text.strip():
            print("model> " + session.ask(text), flush=True)


def cmd_demo(args) -> int:
    """`studio demo`: the offline end-to-end demonstration."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .demo import run_demo

    out = str(Path(args.out) / "{name}") if args.out else None
    summary = run_demo(out_dir=out, quick=args.quick)
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_reproduce(args) -> int:
    """`studio reproduce`: dataset hash check, re-training, and the largest differences."""
    from .reproduce import reproduce

    r = reproduce(args.run_dir, args.out, progress=not args.json)
    verdict = "identical" if r.identical else "differs"
    _emit(args, r.to_dict(), f"reproduction {verdict}: {r.steps} steps; max loss difference {r.max_loss_diff:.3g}, max adapter difference {r.max_adapter_diff:.3g}\nreproduced run: {r.new_run_dir}")
    return 0


def cmd_delete(args) -> int:
    """`studio delete`: remove a run directory and everything the studio derived from its data."""
    from .rundir import delete_run

    if not args.yes:
        if not sys.stdin.isatty():
            raise StudioError("refusing to delete without confirmation", where=args.run_dir, fix="pass --yes")
        if input(f"delete {args.run_dir} and everything in it? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return 1
    removed = delete_run(args.run_dir)
    print(f"deleted {removed}")
    return 0


def cmd_ui(args) -> int:
    """`studio ui`: serve the Gradio studio."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .ui.app import launch

    launch(host=args.host, port=args.port, auth_file=args.auth, home=args.home, concurrency=args.concurrency)
    return 0


def cmd_estimate(args) -> int:
    """`studio estimate`: peak GPU memory of a recipe; exit 0 when it fits, 1 when it does not."""
    from .estimate_cli import cmd_estimate as run

    return run(args)


def cmd_export(args) -> int:
    """`studio export`: GGUF or Ollama files from the merged model, checked by a round trip."""
    from .export import cmd_export as run

    return run(args)


COMMANDS = {"train": cmd_train, "validate": cmd_validate, "merge": cmd_merge, "eval": cmd_eval, "chat": cmd_chat, "demo": cmd_demo, "ui": cmd_ui, "estimate": cmd_estimate, "reproduce": cmd_reproduce, "delete": cmd_delete, "export": cmd_export}


if __name__ == "__main__":
    sys.exit(main())
