"""The Teacher tab: the whole class's queue on one GPU, and the rules and recipe a teacher sets for it.

It shows every user's jobs (position, when each should start, estimated peak memory, notes), the memory each
running job holds over time, and how many jobs run at once; it pauses and resumes the queue, moves a job to the
front or cancels it, sets the class rules (studio.ui.jobs.Rules) and the class recipe with its locked values
(studio.ui.classroom).

Only teachers see the tab (it is hidden until the page load finds a teacher), and every handler and named API
endpoint checks on the server that the asking user is one: a hidden tab is still in the page's config, so
hiding it protects nothing by itself.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path

import gradio as gr
import pandas as pd

from studio.config.yaml_text import dump_recipe
from studio.errors import StudioError
from studio.memory.gpus import GIB
from studio.ui import classroom
from studio.ui.context import Context, recipe_data
from studio.ui.errors import shows_errors
from studio.ui.jobs import Rules
from studio.ui.tabs.train import eta_text, queue_times, series_plot

POLL_S = 5.0  # the teacher's view refreshes this often: memory is sampled every 5 s anyway
MEMORY_WINDOW_S = 3600.0  # the memory plot shows the last hour
COLUMNS = ["job", "user", "run", "status", "queue", "starts in", "started", "peak GiB", "note"]
RULES = ("max_queued", "max_running", "max_steps", "max_minutes")
RULE_LABELS = {"max_queued": "Max waiting jobs per user", "max_running": "Max running jobs per user",
               "max_steps": "Max steps per job", "max_minutes": "Max minutes per job"}
MEMORY_KINDS = {"gpu": "GPU", "cpu": "resident CPU"}
WHERE = "Teacher tab"


def teacher(ctx: Context, request) -> str:
    """The asking user when they are a teacher; StudioError "teachers only" otherwise (checked on the server for
    every handler, whatever the page shows)."""
    user = ctx.user(request)
    if not ctx.is_teacher(user):
        raise StudioError("teachers only", where=WHERE, fix="log in with a teacher account")
    return user


def jobs_table(ctx: Context, request) -> pd.DataFrame:
    """Every user's jobs, newest first: id, user, run, status, queue position, when it should start, when it
    started, the estimated peak GPU memory (GiB) and the note on why someone else stopped it."""
    teacher(ctx, request)
    positions, etas = queue_times(ctx)
    rows = [[j.id, j.user, Path(j.run_dir).name, j.status, positions.get(j.id, ""), eta_text(j.id, etas),
             datetime.fromtimestamp(j.started).strftime("%H:%M:%S") if j.started else "",
             "unknown" if j.peak_bytes is None else round(j.peak_bytes / GIB, 2), j.note or ""] for j in ctx.queue.jobs()]
    return pd.DataFrame(rows, columns=COLUMNS)


def job_choices(ctx: Context, request) -> list[tuple[str, int]]:
    """The jobs a teacher may move up or cancel: queued ones in the order they will start, then running ones."""
    teacher(ctx, request)
    waiting = ctx.queue.order()
    running = [j for j in ctx.queue.jobs() if j.status == "running"]
    return [(f"#{j.id} {j.user} {Path(j.run_dir).name} ({j.status})", j.id) for j in waiting + running]


def memory_frame(ctx: Context, request, now: float | None = None) -> pd.DataFrame:
    """The memory each job held over the last hour, one series per job: GPU memory where a GPU is measured,
    else the process's resident CPU memory, in GiB."""
    teacher(ctx, request)
    since = (time.time() if now is None else now) - MEMORY_WINDOW_S
    rows = [{"time": datetime.fromtimestamp(s["t"]), "GiB": s["bytes"] / GIB,
             "job": f"#{s['job_id']} {s['user']} ({MEMORY_KINDS.get(s['kind'], s['kind'])})"} for s in ctx.queue.usage(since)]
    # Typed even while empty: the page's plot keeps the axes it was first drawn with.
    return pd.DataFrame(rows, columns=["time", "GiB", "job"]).astype({"time": "datetime64[ns]", "GiB": float, "job": str})


def queue_text(ctx: Context, request) -> str:
    """The queue in words: paused or running, how many jobs wait and run, and the rule for how many run at once."""
    teacher(ctx, request)
    jobs = ctx.queue.jobs()
    waiting, running = (sum(j.status == s for j in jobs) for s in ("queued", "running"))
    state = "**paused**: no job starts until you resume it" if ctx.queue.rules().paused else "**running**"
    return f"Queue {state} · {waiting} waiting · {running} running  \nHow many run at once: {ctx.queue.packer.describe()}"


def job_id_of(value) -> int:
    """A picked job id as an int; StudioError for none or a non-number."""
    if value in (None, ""):
        raise StudioError("no job selected", where=f"{WHERE}: job", fix="pick a job from the list")
    try:
        if isinstance(value, bool) or int(value) != float(value):
            raise ValueError
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise StudioError(f"invalid job id {value!r}", where=f"{WHERE}: job", fix="pick a job from the list") from None


def pause(ctx: Context, request, paused: bool) -> Rules:
    """Pause the queue (running jobs go on, nothing new starts) or resume it."""
    teacher(ctx, request)
    return ctx.queue.set_rules(paused=paused)


def promote(ctx: Context, request, job_id) -> int:
    """Move a queued job to the front of the queue; returns its new position."""
    teacher(ctx, request)
    job = ctx.queue.promote(job_id_of(job_id))
    return ctx.queue.position(job.id)


def cancel(ctx: Context, request, job_id) -> str:
    """Cancel anyone's queued job, or stop a running one (it saves a checkpoint), noting which teacher did; returns
    the job's status after it."""
    user = teacher(ctx, request)
    job = ctx.queue.get(job_id_of(job_id))
    if job.status not in ("queued", "running"):
        raise StudioError(f"job #{job.id} has already ended ({job.status})", where=f"job {job.id}", fix="pick a queued or running job")
    return ctx.queue.stop(job.id, note=f"stopped by teacher {user}").status


def rule_value(key: str, value):
    """A rule's value from the form or the API: None for empty or 0 (no limit), else a finite number (minutes may
    have a fraction); the queue's set_rules checks the rest."""
    if value in (None, "") or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StudioError(f"{RULE_LABELS[key].lower()} must be a number, got {value!r}", where=f"{WHERE}: {RULE_LABELS[key]}",
                          fix="give a number, or 0 for no limit")
    return int(value) if key != "max_minutes" and float(value).is_integer() else value


def save_rules(ctx: Context, request, max_queued=None, max_running=None, max_steps=None, max_minutes=None) -> Rules:
    """Set all four class limits at once (None or 0: no limit); returns the rules now in force."""
    teacher(ctx, request)
    given = dict(zip(RULES, (max_queued, max_running, max_steps, max_minutes)))
    return ctx.queue.set_rules(**{key: rule_value(key, value) for key, value in given.items()})


def rule_fields(rules: Rules) -> list:
    """The rules form's values (0 for no limit)."""
    return [getattr(rules, key) or 0 for key in RULES]


def set_class_recipe(ctx: Context, request, recipe, locked) -> classroom.ClassRecipe:
    """Save the class recipe (recipe data or YAML text) with its locked keys."""
    teacher(ctx, request)
    if recipe is None:
        raise StudioError("the Recipe tab's form has errors", where="Recipe tab", fix="fix the fields marked ⚠, then use the form's recipe again")
    return classroom.save(ctx.home, recipe, list(locked or []))


def clear_class_recipe(ctx: Context, request) -> None:
    """Remove the class recipe and its locks."""
    teacher(ctx, request)
    classroom.clear(ctx.home)


def class_recipe_view(ctx: Context, request) -> tuple[str, str, list[str] | None]:
    """The saved class recipe as the tab shows it: the locks in words, the YAML, and the locked keys (None: no recipe)."""
    teacher(ctx, request)
    try:
        saved = classroom.load(ctx.home)
    except StudioError as exc:  # a damaged file: say so where the teacher saves a new one
        return f"<div class='studio-error'>\n\n```\n{exc.format()}\n```\n</div>", "", None
    if saved is None:
        return "No class recipe yet: students start from the demo recipe, as everyone does.", "", None
    locks = ", ".join(f"`{k}` = `{v}`" for k, v in saved.locked.items()) or "nothing (students may change every field)"
    return f"**Class recipe saved.** Locked for students: {locks}", dump_recipe(saved.recipe), list(saved.locked)


def build(ctx: Context, recipe: dict, tab) -> dict:
    """Lay out the Teacher tab (`tab`, hidden until a teacher's page loads); return what app.load needs."""
    gr.Markdown("The whole class's queue: every user's jobs, the memory they hold, and the rules and recipe you set for the class.")
    queue_md = gr.Markdown(elem_id="teacher-queue")
    with gr.Row():
        pause_btn = gr.Button("Pause the queue", elem_id="teacher-pause")
        resume_btn = gr.Button("Resume the queue", elem_id="teacher-resume")
    jobs = gr.Dataframe(headers=COLUMNS, label="Every user's jobs (newest first)", interactive=False, wrap=True, max_height=320, elem_id="teacher-jobs")
    with gr.Row(equal_height=True):
        picked = gr.Dropdown(label="Job", choices=[], value=None, allow_custom_value=True, scale=3, elem_id="teacher-job")
        up_btn = gr.Button("Move up", scale=1, elem_id="teacher-promote")
        cancel_btn = gr.Button("Cancel", variant="stop", scale=1, elem_id="teacher-cancel")
    message = gr.Markdown(elem_id="teacher-message")
    memory = gr.LinePlot(x="time", y="GiB", color="job", title="Memory in use per job (GPU, or resident CPU memory without a GPU)", height=300,
                         label="Memory", show_label=False, elem_id="teacher-memory", y_axis_format=".2f")
    with gr.Group(elem_id="teacher-rules"):
        gr.Markdown("**Class rules** (0 = no limit; teachers' own jobs are not held to the waiting limit)")
        with gr.Row():
            rule_inputs = [gr.Number(label=RULE_LABELS[key], value=0, minimum=0, precision=None if key == "max_minutes" else 0,
                                     elem_id=f"teacher-{key.replace('_', '-')}") for key in RULES]
        save_btn = gr.Button("Save the class rules", elem_id="teacher-save-rules")
    with gr.Group(elem_id="teacher-class-recipe"):
        gr.Markdown("**Class recipe**: students start from it, and cannot change what you lock")
        locks = gr.CheckboxGroup(choices=list(classroom.LOCKABLE), value=["model.name", "train.max_steps"], label="Lock for students", elem_id="teacher-locks")
        with gr.Row():
            use_btn = gr.Button("Use the current form's recipe as the class recipe", variant="primary", elem_id="teacher-use-recipe")
            clear_btn = gr.Button("Remove the class recipe", elem_id="teacher-clear-recipe")
        saved_md = gr.Markdown(elem_id="teacher-class-locks")
        saved_yaml = gr.Code(label="Saved class recipe", language="yaml", interactive=False, lines=8, max_lines=20, elem_id="teacher-class-yaml")
    timer = gr.Timer(POLL_S, active=False)  # ticks only on a teacher's page: load switches it on

    def views(picked_id, request):
        choices = job_choices(ctx, request)
        keep = picked_id if picked_id in [c[1] for c in choices] else None
        return queue_text(ctx, request), jobs_table(ctx, request), gr.update(choices=choices, value=keep), series_plot(memory_frame(ctx, request))

    def on_load(request: gr.Request):
        if not ctx.shared or not ctx.is_teacher(ctx.user(request)):  # the single local user has no class to run
            return gr.update(visible=False), gr.Timer(active=False), *[gr.update()] * (7 + len(RULES))
        text, yaml_text, keys = class_recipe_view(ctx, request)
        return (gr.update(visible=True), gr.Timer(active=True), *views(None, request), *rule_fields(ctx.queue.rules()),
                gr.update() if keys is None else gr.update(value=keys), text, yaml_text)

    @shows_errors
    def on_refresh(picked_id, request: gr.Request):
        return views(picked_id, request)

    @shows_errors
    def on_pause(request: gr.Request):
        pause(ctx, request, True)
        return "Queue paused: running jobs go on, no new job starts."

    @shows_errors
    def on_resume(request: gr.Request):
        pause(ctx, request, False)
        return "Queue resumed."

    @shows_errors
    def on_promote(job_id, request: gr.Request):
        return f"Job #{job_id_of(job_id)} moved to position {promote(ctx, request, job_id)}."

    @shows_errors
    def on_cancel(job_id, request: gr.Request):
        status = cancel(ctx, request, job_id)
        done = "cancelled" if status == "stopped" else "asked to stop (it saves a checkpoint first)"
        return f"Job #{job_id_of(job_id)} {done}."

    @shows_errors
    def on_save_rules(max_queued, max_running, max_steps, max_minutes, request: gr.Request):
        return [*rule_fields(save_rules(ctx, request, max_queued, max_running, max_steps, max_minutes)), "Class rules saved."]

    @shows_errors
    def on_use(raw, keys, request: gr.Request):
        set_class_recipe(ctx, request, raw, keys)
        return class_recipe_view(ctx, request)[:2]

    @shows_errors
    def on_clear(request: gr.Request):
        clear_class_recipe(ctx, request)
        return class_recipe_view(ctx, request)[:2]

    shown = [queue_md, jobs, picked, memory]
    quiet = {"api_visibility": "undocumented", "show_progress": "hidden"}
    for button, handler, inputs in ((pause_btn, on_pause, []), (resume_btn, on_resume, []), (up_btn, on_promote, [picked]), (cancel_btn, on_cancel, [picked])):
        button.click(handler, inputs, [message], api_visibility="undocumented").then(on_refresh, [picked], shown, **quiet)
    save_btn.click(on_save_rules, rule_inputs, [*rule_inputs, message], api_visibility="undocumented")
    use_btn.click(on_use, [recipe["recipe_state"], locks], [saved_md, saved_yaml], api_visibility="undocumented")
    clear_btn.click(on_clear, None, [saved_md, saved_yaml], api_visibility="undocumented")
    timer.tick(on_refresh, [picked], shown, **quiet)
    wire_api(ctx)
    return {"load": on_load, "outputs": [tab, timer, *shown, *rule_inputs, locks, saved_md, saved_yaml]}


def wire_api(ctx: Context) -> None:
    """The tab's named API endpoints, each refused to anyone but a teacher."""

    def rules_dict(rules: Rules) -> dict:
        return {"paused": rules.paused, **{key: getattr(rules, key) for key in RULES}, "concurrency": ctx.queue.packer.describe()}

    @shows_errors
    def api_class_rules(request: gr.Request = None) -> dict:
        """The class rules in force (paused, max_queued, max_running, max_steps, max_minutes; None = no limit) and how many jobs run at once (teachers only)."""
        teacher(ctx, request)
        return rules_dict(ctx.queue.rules())

    @shows_errors
    def api_set_class_rules(max_queued: int | None = None, max_running: int | None = None, max_steps: int | None = None, max_minutes: float | None = None,
                            request: gr.Request = None) -> dict:
        """Set all four class limits at once, as the tab's form does (None or 0 = no limit); returns the rules now in force (teachers only)."""
        return rules_dict(save_rules(ctx, request, max_queued, max_running, max_steps, max_minutes))

    @shows_errors
    def api_pause_queue(paused: bool = True, request: gr.Request = None) -> dict:
        """Pause the queue (paused=true: running jobs go on, none starts) or resume it (false); returns the rules (teachers only)."""
        if not isinstance(paused, bool):
            raise StudioError(f"paused must be true or false, got {paused!r}", where="pause_queue", fix="send true to pause, false to resume")
        return rules_dict(pause(ctx, request, paused))

    @shows_errors
    def api_promote_job(job_id: int, request: gr.Request = None) -> int:
        """Move anyone's queued job to the front of the queue; returns its new position (teachers only)."""
        return promote(ctx, request, job_id)

    @shows_errors
    def api_cancel_job(job_id: int, request: gr.Request = None) -> str:
        """Cancel anyone's queued job or stop a running one, noting the teacher; returns its status after it (teachers only)."""
        return cancel(ctx, request, job_id)

    @shows_errors
    def api_class_recipe(request: gr.Request = None) -> dict:
        """The class recipe as YAML text ("" when none) and its locked keys with their values (teachers only)."""
        teacher(ctx, request)
        saved = classroom.load(ctx.home)
        return {"recipe_yaml": dump_recipe(saved.recipe) if saved else "", "locked": saved.locked if saved else {}}

    @shows_errors
    def api_set_class_recipe(recipe_yaml: str, locked: list[str] | None = None, request: gr.Request = None) -> dict:
        """Save a recipe given as YAML text as the class recipe, locking the given keys (model.name, train.max_steps, data.max_length) for students (teachers only)."""
        teacher(ctx, request)
        saved = set_class_recipe(ctx, request, recipe_data(recipe_yaml, where="set_class_recipe"), locked or [])
        return {"locked": saved.locked}

    gr.api(api_class_rules, api_name="class_rules")
    gr.api(api_set_class_rules, api_name="set_class_rules")
    gr.api(api_pause_queue, api_name="pause_queue")
    gr.api(api_promote_job, api_name="promote_job")
    gr.api(api_cancel_job, api_name="cancel_job")
    gr.api(api_class_recipe, api_name="class_recipe")
    gr.api(api_set_class_recipe, api_name="set_class_recipe")
