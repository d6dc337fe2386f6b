"""What each `studio` subcommand does: call the library, print the result (text, or JSON with --json).

Each command imports the library it needs when it runs, so commands that load no model start fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from studio.cli import format as fmt
from studio.errors import StudioError


def _emit(args, data: dict, text: str) -> None:
    print(json.dumps(data, default=str) if args.json else text)


def cmd_train(args) -> int:
    """`studio train`: run a recipe, or resume a run directory."""
    from studio.cli.gpus import gpus_overrides
    from studio.config.load import load_recipe
    from studio.training.distributed import launch_distributed
    from studio.training.prepare import resume_recipe
    from studio.training.train import train

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
        raise StudioError("no recipe given", where="studio train", fix="pass a recipe file or a shipped recipe's name (`studio recipes` lists them), or --resume RUN_DIR")
    if recipe.distributed.strategy != "none":
        result = launch_distributed(recipe, resume=resume, progress=not args.no_progress, overwrite=args.overwrite)
    else:
        result = train(recipe, resume=resume, progress=not args.no_progress, overwrite=args.overwrite)
    data = {"run_dir": str(result.run_dir), "adapter_dir": str(result.adapter_dir), "steps": result.steps, "train_loss": result.train_loss, "eval_loss": result.eval_loss}
    _emit(args, data, fmt.train_result(result))
    return 0


def cmd_validate(args) -> int:
    """`studio validate`: schema, data file and format checks, without loading a model."""
    from studio.config.load import load_recipe
    from studio.config.yaml_text import dump_recipe
    from studio.data import load_examples, load_heldout

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.method == "grpo":
        from studio.training.grpo_data import load_prompt_examples

        load_prompt_examples(recipe)  # reward names, options and the columns each needs, row by row
    data_format, examples = load_examples(recipe.data.path, recipe.data)
    info = {"recipe": recipe.to_yaml_dict(), "data_format": data_format, "data_rows": len(examples), "valid": True}
    if recipe.data.test_path:
        info["test_rows"] = len(load_heldout(recipe.data.test_path, recipe.data)[1])
    text = f"{args.recipe}: valid ({recipe.method}, {recipe.model.name}); data: {len(examples)} {data_format} rows\n\n{dump_recipe(recipe)}"
    _emit(args, info, text)
    return 0


def cmd_recipes(args) -> int:
    """`studio recipes`: the shipped recipes with their model, method and estimated peak memory."""
    from studio.memory.fit import shipped_estimates

    rows = shipped_estimates(args.gpu)
    _emit(args, {"gpu": args.gpu, "recipes": rows}, fmt.recipe_table(rows, args.gpu))
    return 0


def cmd_rewards(args) -> int:
    """`studio rewards`: every reward a GRPO recipe can name, with the columns and options it takes."""
    from studio.training.rewards import available

    rows = [{"name": r.name, "summary": r.summary, "columns": list(r.columns), "optional_columns": list(r.optional_columns),
             "options": {k: repr(v) if v is not None and not isinstance(v, (int, float, str, bool)) else v for k, v in r.options.items()}, "source": r.source}
            for r in available(args.file).values()]
    _emit(args, {"rewards": rows}, fmt.reward_table(rows))
    return 0


def cmd_merge(args) -> int:
    """`studio merge`: merge and verify."""
    from studio.export.merge import merge

    result = merge(args.run_dir, args.out)
    _emit(args, result.to_dict(), fmt.merge_result(result))
    return 0


def cmd_eval(args) -> int:
    """`studio eval`: task metric for base and adapter, plus held-out loss; with --forgetting, the forgetting check."""
    from studio.evaluation.evaluate import evaluate

    if args.forgetting and args.tasks:
        raise StudioError("--forgetting and --tasks are two runs", where="--forgetting --tasks", fix="run `studio eval` once with each")
    if args.forgetting:
        return _eval_forgetting(args)
    if args.tasks:
        return _eval_harness(args)
    if args.task_dir or args.num_fewshot is not None:
        raise StudioError("--task-dir and --num-fewshot go with --tasks", where="--task-dir" if args.task_dir else "--num-fewshot",
                          fix="name the lm-eval tasks to run with --tasks")
    result = evaluate(args.run_dir, data=args.data, limit=args.limit, with_base=not args.no_base)
    _emit(args, result.to_dict(), fmt.eval_result(result))
    return 0


def _eval_harness(args) -> int:
    """`studio eval --tasks`: lm-evaluation-harness tasks on base and adapter, with the same settings."""
    from studio.evaluation.harness import run_tasks

    given = [flag for flag, value in (("--data", args.data), ("--no-base", args.no_base)) if value]
    if given:
        raise StudioError(f"--tasks reads each task's own data and always runs the base too, so {', '.join(given)} does not apply",
                          where=" ".join(given), fix=f"drop {', '.join(given)}")
    result = run_tasks(args.run_dir, args.tasks, task_dir=args.task_dir, limit=args.limit, num_fewshot=args.num_fewshot)
    _emit(args, result, fmt.harness_result(result))
    return 0


def _eval_forgetting(args) -> int:
    """`studio eval --forgetting`: the general probes through base and adapter, and the verdict."""
    from studio.evaluation.forgetting import check_forgetting

    given = [flag for flag, value in (("--data", args.data), ("--limit", args.limit), ("--no-base", args.no_base)) if value]
    if given:
        raise StudioError(f"--forgetting runs on the shipped general probes and always needs the base, so {', '.join(given)} does not apply",
                          where=" ".join(given), fix=f"drop {', '.join(given)}, or score held-out data in a separate `studio eval {args.run_dir}`")
    result = check_forgetting(args.run_dir)
    _emit(args, result.to_dict(), fmt.forgetting_result(result))
    return 0


def cmd_chat(args) -> int:
    """`studio chat`: one prompt, or an interactive conversation, through the adapter (or the base); a vision-language
    run's turns may carry images (--image, or /image FILE before a turn)."""
    from studio.evaluation.chat import ChatSession

    session = ChatSession(args.run_dir, use_adapter=not args.base, max_new_tokens=args.max_new_tokens)
    if args.prompt is not None:
        answer = session.ask(args.prompt, args.image)
        _emit(args, {"prompt": args.prompt, "images": args.image, "answer": answer}, answer)
        return 0
    if args.image:
        raise StudioError("--image goes with --prompt", where="--image", fix="add --prompt TEXT, or attach images interactively with /image FILE")
    extra = "; /image FILE shows a picture with your next turn" if session.sees_images else ""
    print("chatting with " + ("the base model" if args.base else "the adapter") + f"; /reset clears the history{extra}; /exit or Ctrl-D quits", file=sys.stderr)
    images: list[str] = []
    while True:
        try:
            text = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        command, _, rest = text.strip().partition(" ")
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            session.reset()
            images = []
        elif command == "/image" and rest.strip():
            images.append(rest.strip())
        elif text.strip():
            try:
                print("model> " + session.ask(text, images), flush=True)
            except StudioError as exc:  # a bad image or turn: say so and keep the conversation
                print(exc.format(), file=sys.stderr)
            images = []


def cmd_demo(args) -> int:
    """`studio demo`: the offline end-to-end demonstration."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from studio.cli.demo import run_demo

    out = str(Path(args.out) / "{name}") if args.out else None
    summary = run_demo(out_dir=out, quick=args.quick)
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_reproduce(args) -> int:
    """`studio reproduce`: dataset hash check, re-training, and the largest differences."""
    from studio.training.reproduce import reproduce

    result = reproduce(args.run_dir, args.out, progress=not args.json)
    _emit(args, result.to_dict(), fmt.reproduce_result(result))
    return 0


def cmd_delete(args) -> int:
    """`studio delete`: remove a run directory and everything the studio derived from its data."""
    from studio.training.rundir import delete_run

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
    from studio.ui.app import launch

    rules = {"max_queued": args.max_queued, "max_running": args.max_running}
    launch(host=args.host, port=args.port, auth_file=args.auth, home=args.home, concurrency=args.concurrency, rules=rules,
           session_hours=args.session_hours, idle_hours=args.idle_hours)
    return 0


def run_estimate(recipe_path: str, gpu: str | float, overrides: list[str] | None = None, as_json: bool = False) -> tuple[int, str]:
    """(exit status, text to print) for a recipe on a GPU: 0 when it fits, 1 when not; a table, or JSON in GiB."""
    from studio.config.load import load_recipe
    from studio.memory.fit import fit_report

    report = fit_report(load_recipe(recipe_path, overrides or []), gpu)
    report["recipe"] = str(recipe_path)
    return (0 if report["fits"] else 1), (json.dumps(report, default=str) if as_json else fmt.estimate_table(report))


def cmd_estimate(args) -> int:
    """`studio estimate`: print the estimate; the status says whether it fits (so `estimate && train` works)."""
    code, text = run_estimate(args.recipe, args.gpu, args.overrides, args.json)
    print(text)
    return code


def cmd_export(args) -> int:
    """`studio export`: write, round-trip and report; exit 1 when a kept (--no-check) file diverges."""
    from studio.export.exporter import export

    result = export(args.run_dir, fmt=args.fmt, quant=args.quant, out=args.out, check=not args.no_check, max_kl=args.max_kl, min_top1=args.min_top1)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
        return 0
    print(fmt.export_result(result))
    return 0 if result.passed else 1


def cmd_report(args) -> int:
    """`studio report`: one self-contained HTML page of the run directory, written atomically."""
    from studio.report import write_report

    report = write_report(args.run_dir, args.out)
    _emit(args, report.to_dict(), fmt.report_result(report))
    return 0


def cmd_doctor(args) -> int:
    """`studio doctor`: one line per thing the studio depends on, with a verdict and a fix; exit 1 on a failure."""
    from studio.env.doctor import diagnose

    checks = diagnose(port=args.port)
    _emit(args, {"checks": [c.to_dict() for c in checks], "ok": not any(c.status == "fail" for c in checks)}, fmt.doctor_report(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


def cmd_users(args) -> int:
    """`studio users`: add, re-password, remove or list the accounts of a shared studio."""
    from studio.cli.users import run_users

    return run_users(args)


COMMANDS = {
    "train": cmd_train, "validate": cmd_validate, "recipes": cmd_recipes, "rewards": cmd_rewards, "estimate": cmd_estimate, "merge": cmd_merge,
    "eval": cmd_eval, "chat": cmd_chat, "export": cmd_export, "reproduce": cmd_reproduce, "delete": cmd_delete,
    "ui": cmd_ui, "demo": cmd_demo, "doctor": cmd_doctor, "users": cmd_users, "report": cmd_report,
}
