"""The Train tab: start, stop and resume jobs; watch loss, learning rate, tokens/s, progress, ETA and the log.

A GRPO run also shows its rewards (the weighted total and each reward's mean), KL (when grpo.beta > 0) and
completion length against step, and a table of its most recent sampled completions with each reward's score
(completions.jsonl).

On a machine with more than one visible GPU it also offers the GPU count: a job started with N > 1 GPUs
runs `studio train RECIPE --gpus N` (DDP, or FSDP when the recipe says so).

Everything shown is read back from the job queue and the run directory on each timer tick, so a closed
browser or a restarted UI loses nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import gradio as gr
import pandas as pd

from studio.config.load import load_recipe
from studio.config.schema import Recipe
from studio.config.validate import validate_recipe
from studio.config.yaml_text import dump_recipe
from studio.errors import StudioError
from studio.training.eta import format_duration
from studio.training.rundir import COMPLETIONS, DATA, RECIPE, read_json_or_empty, read_metrics
from studio.ui import classroom
from studio.ui.access import check_name, check_recipe_paths, safe_path
from studio.ui.context import Context, recipe_data
from studio.ui.errors import shows_errors

POLL_S = 2.0
LOG_LINES = 40
JOB_COLUMNS = ["job", "user", "run", "kind", "status", "queue", "starts in", "exit", "note"]
COMPLETION_ROWS = 16  # the newest completions.jsonl records the table shows
COMPLETION_CHARS = 500  # a prompt or completion longer than this is cut in the table
TOTAL = "weighted total"  # the reward plot's series of the total reward GRPO ranks completions by


def visible_gpus() -> int:
    """CUDA GPUs this process sees (CUDA_VISIBLE_DEVICES applies); 0 without CUDA. Tests patch it."""
    import torch

    return torch.cuda.device_count()


def gpu_choices() -> list[int]:
    """The GPU counts the picker offers: 1..N with N > 1 visible GPUs, none (picker hidden) otherwise."""
    n = visible_gpus()
    return list(range(1, n + 1)) if n > 1 else []


def check_gpus(value) -> int | None:
    """The picked GPU count as an int, refused outside 1..visible GPUs; None when none was picked.

    Checked on the server because a client can send any value, even for a hidden picker.
    """
    if value in (None, ""):
        return None
    where = "Train tab: GPUs"
    try:
        gpus = int(value)
        if isinstance(value, bool) or gpus != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise StudioError(f"the GPU count must be a whole number, got {value!r}", where=where, fix="pick a number of GPUs from the list") from None
    visible = visible_gpus()
    top = max(visible, 1)  # without CUDA a job still runs in one process (on the CPU)
    if not 1 <= gpus <= top:
        raise StudioError(f"{gpus} GPUs asked for, but this machine has {visible} visible", where=where,
                          fix=f"pick 1 to {top} GPUs (check CUDA_VISIBLE_DEVICES if GPUs are missing)")
    return gpus


def queue_times(ctx: Context) -> tuple[dict[int, int], dict[int, float | None]]:
    """Each queued job's position (1 = next to start) and seconds until it starts (None: unknown), computed once
    for a whole table rather than once per row."""
    positions = {job.id: n for n, job in enumerate(ctx.queue.order(), start=1)}
    return positions, ctx.queue.etas()


def eta_text(job_id: int, etas: dict[int, float | None]) -> str:
    """When a queued job should start, as the tables show it: `3m05s`, `unknown`; empty for a job not waiting."""
    if job_id not in etas:
        return ""
    return "unknown" if etas[job_id] is None else format_duration(etas[job_id])


def waiting_text(ctx: Context, job_id: int) -> str:
    """` (position 2 in the queue, starts in 3m05s)` for a waiting job, empty once it has left the queue."""
    positions, etas = queue_times(ctx)
    if job_id not in positions:
        return ""
    when = "start time not known yet" if etas.get(job_id) is None else f"starts in {format_duration(etas[job_id])}"
    return f" (position {positions[job_id]} in the queue, {when})"


def job_rows(ctx: Context, request) -> list[list]:
    """The visible jobs as table rows (newest first), with queue positions, when each should start, and notes."""
    positions, etas = queue_times(ctx)
    return [[j.id, j.user, Path(j.run_dir).name, j.kind, j.status, positions.get(j.id, ""), eta_text(j.id, etas),
             "" if j.exit_code is None else j.exit_code, j.note or ""] for j in ctx.visible_jobs(request)]


def job_choices(ctx: Context, request) -> list[tuple[str, int]]:
    """Dropdown choices for the visible jobs."""
    return [(f"#{j.id} {Path(j.run_dir).name} ({j.status})", j.id) for j in ctx.visible_jobs(request)]


def curves(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Loss (train and validation) and learning-rate frames for the plots, from metrics.jsonl records."""
    loss = [{"step": r["step"], "loss": r[k], "series": name} for r in records for k, name in (("train_loss", "train"), ("eval_loss", "validation")) if k in r]
    lr = [{"step": r["step"], "lr": r["lr"]} for r in records if "lr" in r]
    return plot_frame(loss, ["step", "loss", "series"]), plot_frame(lr, ["step", "lr"])


def plot_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """A plot's data with its numbers as floats even while it has no rows: Gradio reads an empty column as a category,
    and the page's plot keeps the axes it was first built with (a live plot starts empty)."""
    return pd.DataFrame(rows, columns=columns).astype({c: float for c in columns if c != "series"})


def grpo_curves(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Reward (the weighted total and each reward's mean), KL and completion-length frames for a GRPO run's plots,
    from metrics.jsonl records; KL is there only when grpo.beta > 0 makes trl log it."""
    reward = []
    for r in records:
        if "reward" in r:
            reward.append({"step": r["step"], "reward": r["reward"], "series": TOTAL})
        reward += [{"step": r["step"], "reward": v, "series": k.removeprefix("rewards/").removesuffix("/mean")}
                   for k, v in r.items() if k.startswith("rewards/") and k.endswith("/mean")]
    kl = [{"step": r["step"], "kl": r["kl"]} for r in records if "kl" in r]
    length = [{"step": r["step"], "completion_length": r["completion_length"]} for r in records if "completion_length" in r]
    return plot_frame(reward, ["step", "reward", "series"]), plot_frame(kl, ["step", "kl"]), plot_frame(length, ["step", "completion_length"])


def completion_table(samples: list[dict], limit: int = COMPLETION_ROWS) -> pd.DataFrame:
    """The newest completions.jsonl records, newest step first: step, prompt, completion, each reward's score, total."""
    names = list(dict.fromkeys(name for s in samples for name in s.get("rewards", {})))
    recent = sorted(samples[-limit:], key=lambda s: -s["step"])  # a stable sort: a step's records keep their order
    rows = [[s["step"], _clip(s["prompt"]), _clip(s["completion"]), *[_round(s["rewards"].get(n)) for n in names], _round(s.get("total"))] for s in recent]
    return pd.DataFrame(rows, columns=["step", "prompt", "completion", *names, "total"])


def _clip(text) -> str:
    text = str(text)
    return text if len(text) <= COMPLETION_CHARS else text[:COMPLETION_CHARS] + "…"


def _round(score: float | None) -> float | None:
    return None if score is None else round(score, 4)


def job_recipe(job) -> Recipe | None:
    """The recipe a job trains: its run directory's (written when training starts), else the queued recipe file."""
    for path in (Path(job.run_dir) / RECIPE, job.recipe_path):
        if path and Path(path).is_file():
            try:
                return load_recipe(path)
            except StudioError:
                return None
    return None


def total_steps(run_dir: Path, recipe: Recipe | None) -> int | None:
    """Optimizer steps the run will take: train.max_steps, else epochs over data.json's training examples."""
    if recipe is None:
        return None
    if recipe.train.max_steps:
        return recipe.train.max_steps
    examples = read_json_or_empty(run_dir / DATA).get("train", {}).get("examples")
    if not isinstance(examples, int):
        return None
    # Each optimizer step takes batch_size x grad_accum examples on every process of a distributed run.
    per_epoch = math.ceil(examples / (recipe.train.batch_size * recipe.train.grad_accum * recipe.distributed.world_size))
    return math.ceil(per_epoch * recipe.train.epochs)


def progress_text(records: list[dict], total: int | None, status: str) -> str:
    """Step, progress, last loss, learning rate, tokens/s and ETA as markdown."""
    steps = [r for r in records if "train_loss" in r]
    if not steps:
        return f"**{status}** — waiting for the first step (loading the model and data)…" if status == "running" else f"**{status}**"
    last = steps[-1]
    step = last["step"]
    # time_s restarts at 0 when a run is resumed: measure the pace within the latest segment.
    segment = [r for r in steps if r.get("time_s", 0) <= last.get("time_s", 0)]
    first = segment[0]
    pace = (last["time_s"] - first["time_s"]) / (step - first["step"]) if step > first["step"] else (last["time_s"] / step if step else 0)
    parts = [f"**{status}**", f"step {step}" + (f"/{total} ({100 * step / total:.0f}%)" if total else ""), f"loss {last['train_loss']:.4f}"]
    if "reward" in last:  # GRPO: the reward says how training goes; its loss hovers near 0
        parts.append(f"reward {last['reward']:.3f}")
    evals = [r for r in records if "eval_loss" in r]
    if evals:
        parts.append(f"val loss {evals[-1]['eval_loss']:.4f}")
    if "lr" in last:
        parts.append(f"lr {last['lr']:.2e}")
    if "tokens_per_s" in last:
        parts.append(f"{last['tokens_per_s']:,.0f} tok/s")
    if total and status == "running" and pace:
        parts.append(f"ETA {format_duration(pace * max(0, total - step))}")
    return " · ".join(parts)


def log_tail(path: str | None, lines: int = LOG_LINES) -> str:
    """The last lines of a job's log (carriage-return progress lines collapsed)."""
    if not path or not Path(path).exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 64_000))
        text = handle.read().decode("utf-8", errors="replace")
    text = "\n".join(line.split("\r")[-1] for line in text.splitlines())
    return "\n".join(text.splitlines()[-lines:])


def job_view(ctx: Context, request, job_id) -> tuple:
    """Everything the tab shows for one job: stats, loss frame, lr frame, log tail, and for a GRPO run its reward,
    KL and completion-length frames and completions table (None for any other run)."""
    try:
        job = ctx.job_for(request, job_id)
    except StudioError as exc:
        return f"{exc.what[0].upper()}{exc.what[1:]}.", *curves([]), "", None
    run_dir = Path(job.run_dir)
    records = read_metrics(run_dir)
    recipe = job_recipe(job)
    status = job.status + (waiting_text(ctx, job.id) if job.status == "queued" else "")
    stats = progress_text(records, total_steps(run_dir, recipe), status) + f"  \nrun directory: `{run_dir}`" + (f" · {job.gpus} GPUs" if job.gpus and job.gpus > 1 else "")
    if job.note:
        stats += f"  \nnote: {job.note}"
    grpo = (*grpo_curves(records), completion_table(read_metrics(run_dir, COMPLETIONS))) if recipe is not None and recipe.method == "grpo" else None
    return stats, *curves(records), log_tail(job.log_path), grpo


def start_job(ctx: Context, request, run_name: str, raw: dict | None, gpus=None) -> int:
    """Write the form's recipe into the user's workspace and enqueue a training job; return its id.

    `gpus` is the picked GPU count (None: the recipe alone decides, as on a machine with one GPU). A student's
    recipe must keep the class recipe's locked values and the class's step cap (classroom.check_job), checked
    here on the server before anything is written, whichever way the recipe came (the form or /start_training).
    """
    if raw is None:
        raise StudioError("the recipe has errors", where="Recipe tab", fix="fix the recipe first")
    gpus = check_gpus(gpus)
    recipe = validate_recipe(raw, where="form")
    user = ctx.user(request)
    teacher = ctx.is_teacher(user)
    if not teacher:
        classroom.check_job(ctx.home, ctx.queue.rules(), recipe)
    wanted = recipe.distributed.num_processes
    if gpus == 1 and wanted > 1:
        # `--gpus 1` cannot shrink a ddp/fsdp recipe, and running it on more GPUs than picked would surprise.
        raise StudioError(f"the recipe asks for {wanted} processes (distributed.num_processes) but 1 GPU is picked", where="Train tab: GPUs",
                          fix=f"pick {wanted} GPUs, or set distributed.strategy to none in the recipe")
    name = check_name((run_name or "").strip() or recipe.output.name or "run")
    space = ctx.workspace(request)
    if ctx.shared:  # a reward file comes back as the absolute path of the owner's file, the one training imports
        recipe = check_recipe_paths(space, recipe)
    run_dir = safe_path(space / "runs", name)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise StudioError(f"run '{name}' already exists", where=str(run_dir), fix="pick another run name, or resume that run")
    data = recipe.to_yaml_dict()
    data["output"] = {"dir": str(run_dir), "name": name}
    recipe_path = safe_path(space / "recipes", f"{name}.yaml")
    recipe_path.write_text(dump_recipe(validate_recipe(data)), encoding="utf-8")
    return ctx.queue.enqueue(user, recipe_path, run_dir, gpus=gpus, exempt=teacher).id


def build(ctx: Context, recipe: dict) -> dict:
    """Lay out the Train tab; return its components."""
    with gr.Row():
        run_name = gr.Textbox(label="Run name", placeholder="defaults to output.name", max_lines=1, scale=2, elem_id="run-name")
        choices = gpu_choices()
        gpus = gr.Dropdown(label="GPUs", choices=choices, value=1 if choices else None, visible=bool(choices), scale=1, elem_id="train-gpus",
                           info="more than 1: one process per GPU (DDP, or FSDP if the recipe says so)")
        start = gr.Button("Start training", variant="primary", scale=1, elem_id="start-training")
    message = gr.Markdown(elem_id="train-message")
    with gr.Row():
        with gr.Column(scale=2):
            jobs = gr.Dataframe(headers=JOB_COLUMNS, label="Jobs (newest first)", interactive=False, wrap=True, max_height=260, elem_id="train-jobs")
        with gr.Column(scale=1):
            selected = gr.Dropdown(label="Job", choices=[], value=None, allow_custom_value=True, elem_id="job-select")
            with gr.Row():
                stop = gr.Button("Stop", variant="stop")
                resume = gr.Button("Resume")
    stats = gr.Markdown(elem_id="train-stats")
    with gr.Column(visible=False, elem_id="grpo-view") as grpo_box:
        with gr.Row():
            # No block label over a plot's title: in 320 pixels it pushes the legend (which line is which) out of sight.
            reward_plot = gr.LinePlot(x="step", y="reward", color="series", title="Reward", height=320, label="Reward", show_label=False, elem_id="reward-plot", y_axis_format=".3~g")
            length_plot = gr.LinePlot(x="step", y="completion_length", title="Completion length (tokens)", height=320, label="Completion length", show_label=False, elem_id="length-plot")
            kl_plot = gr.LinePlot(x="step", y="kl", title="KL to the base model", height=320, label="KL", show_label=False, elem_id="kl-plot", y_axis_format=".2e", visible=False)
        completions = gr.Dataframe(label=f"Recent completions (newest first, up to {COMPLETION_ROWS})", interactive=False, wrap=True, max_height=420, elem_id="completions-table")
    with gr.Row():
        loss_plot = gr.LinePlot(x="step", y="loss", color="series", title="Loss", height=320, label="Loss", show_label=False, elem_id="loss-plot", y_axis_format=".4~g")
        lr_plot = gr.LinePlot(x="step", y="lr", title="Learning rate", height=320, label="Learning rate", y_axis_format=".1e")
    log = gr.Code(label="Log (tail)", language=None, interactive=False, lines=10, max_lines=14)
    timer = gr.Timer(POLL_S)

    def refresh(job_id, request: gr.Request):
        choices = job_choices(ctx, request)
        ids = [c[1] for c in choices]
        if job_id not in ids:
            job_id = ids[0] if ids else None
        stats, loss, lr, log, grpo = job_view(ctx, request, job_id)
        return job_rows(ctx, request), gr.update(choices=choices, value=job_id), stats, series_plot(loss), lr, log, *grpo_updates(grpo)

    @shows_errors
    def on_start(name, raw, count, request: gr.Request):
        job_id = start_job(ctx, request, name, raw, count)
        return f"Queued job #{job_id}{waiting_text(ctx, job_id)}.", job_id

    @shows_errors
    def on_stop(job_id, request: gr.Request):
        job = ctx.job_for(request, job_id)
        ctx.queue.stop(job.id)
        return f"Stop requested for job #{job.id}; it saves a checkpoint and exits."

    def on_resume(job_id, request: gr.Request):
        new = resume_job(ctx, request, job_id)
        return f"Queued job #{new.id} to resume {Path(new.run_dir).name}.", new.id

    views = [jobs, selected, stats, loss_plot, lr_plot, log, grpo_box, reward_plot, length_plot, kl_plot, completions]
    start.click(on_start, [run_name, recipe["recipe_state"], gpus], [message, selected], api_visibility="undocumented").then(refresh, [selected], views, api_visibility="undocumented", show_progress="hidden")
    stop.click(on_stop, [selected], [message], api_visibility="undocumented").then(refresh, [selected], views, api_visibility="undocumented", show_progress="hidden")
    resume.click(on_resume, [selected], [message, selected], api_visibility="undocumented").then(refresh, [selected], views, api_visibility="undocumented", show_progress="hidden")
    selected.input(refresh, [selected], views, api_visibility="undocumented", show_progress="hidden")
    timer.tick(refresh, [selected], views, api_visibility="undocumented", show_progress="hidden")

    @shows_errors
    def api_start_training(recipe_yaml: str, run_name: str = "", gpus: int | None = None, request: gr.Request = None) -> int:
        """Queue a training job for a recipe given as YAML text, on `gpus` GPUs (1..visible; default: as the recipe says); returns the job id (run lands in your workspace)."""
        return start_job(ctx, request, run_name, recipe_data(recipe_yaml, where="start_training"), gpus)

    @shows_errors
    def api_job_status(job_id: int, request: gr.Request = None) -> dict:
        """A job's status, queue position and seconds until it starts (eta_s, None when unknown; eta as text), run directory, metrics
        records so far, a GRPO run's newest completions, the log tail, and a note on why it ended when someone else stopped it."""
        job = ctx.job_for(request, job_id)
        positions, etas = queue_times(ctx)
        return {"id": job.id, "status": job.status, "position": positions.get(job.id, 0), "eta_s": etas.get(job.id), "eta": eta_text(job.id, etas),
                "note": job.note, "exit_code": job.exit_code, "gpus": job.gpus,
                "run_dir": job.run_dir, "metrics": read_metrics(Path(job.run_dir)), "completions": read_metrics(Path(job.run_dir), COMPLETIONS)[-COMPLETION_ROWS:],
                "log_tail": log_tail(job.log_path)}

    def api_resume_job(job_id: int, request: gr.Request = None) -> int:
        """Queue a job that resumes a finished, failed, stopped or interrupted job's run from its last checkpoint; returns the new job id."""
        return resume_job(ctx, request, job_id).id

    def api_list_jobs(request: gr.Request = None) -> list[dict]:
        """The jobs you may see (your own; every user's for a teacher), newest first: each with its queue position (0: not waiting),
        the seconds until it starts (eta_s, None when unknown; eta as text) and a note on why it ended when someone else stopped it."""
        positions, etas = queue_times(ctx)
        return [{"id": j.id, "user": j.user, "run": Path(j.run_dir).name, "kind": j.kind, "status": j.status, "position": positions.get(j.id, 0),
                 "eta_s": etas.get(j.id), "eta": eta_text(j.id, etas), "note": j.note,
                 "exit_code": j.exit_code, "gpus": j.gpus, "created": j.created, "started": j.started, "finished": j.finished} for j in ctx.visible_jobs(request)]

    gr.api(api_start_training, api_name="start_training")
    gr.api(api_job_status, api_name="job_status")
    gr.api(api_resume_job, api_name="resume_job")
    gr.api(api_list_jobs, api_name="list_jobs")
    return {"refresh": refresh, "views": views, "selected": selected, "gpus": gpus}


def series_plot(frame: pd.DataFrame) -> dict:
    """An update of a plot with series (loss, reward): no value until there are rows. The page's plot takes its series
    (their colours) from the first data it draws, and draws no line at all when that data was empty."""
    return gr.update(value=frame if len(frame) else None)


def grpo_updates(grpo: tuple | None) -> tuple:
    """Updates of the GRPO view from job_view's frames: shown for a GRPO run only, the KL plot only once KL is logged."""
    if grpo is None:
        return gr.update(visible=False), gr.update(), gr.update(), gr.update(visible=False), gr.update()
    reward, kl, length, table = grpo
    return gr.update(visible=True), series_plot(reward), length, gr.update(value=kl, visible=not kl.empty), table


@shows_errors
def resume_job(ctx: Context, request, job_id):
    """Enqueue `studio train --resume` for one of the user's jobs that has ended (one click in the tab, or /resume_job).

    The new job keeps the old one's GPU count: the run directory's recipe holds it, so the resumed run uses
    it again; it is checked here against the GPUs visible now, before the job waits in the queue.
    """
    job = ctx.job_for(request, job_id)
    if job.status in ("queued", "running"):
        raise StudioError(f"job #{job.id} is still {job.status}", where=f"job {job.id}", fix="stop it first, or wait for it to end")
    if not (Path(job.run_dir) / RECIPE).exists():
        raise StudioError("this run never started, so there is nothing to resume", where=job.run_dir, fix="start it again")
    visible = visible_gpus()
    if job.gpus and job.gpus > max(visible, 1):
        raise StudioError(f"job #{job.id} trained on {job.gpus} GPUs, but this machine has {visible} visible now", where=job.run_dir,
                          fix=f"resume it where {job.gpus} GPUs are visible (check CUDA_VISIBLE_DEVICES)")
    return ctx.queue.enqueue(job.user, None, job.run_dir, kind="resume", gpus=job.gpus, exempt=ctx.is_teacher(ctx.user(request)))
