"""The Gradio studio: `build_app` lays out the tabs, `launch` serves them (localhost, or any host with auth).

The UI is a thin shell over the library: it builds recipes, queues `studio train` subprocesses and reads
run directories. State lives in the studio home (workspaces and the job queue), never in the browser.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from studio.config.home import studio_home
from studio.errors import StudioError
from studio.ui.accounts import LOCAL_HOSTS, Account, authenticator, load_accounts
from studio.ui.context import MAX_UPLOAD_BYTES, Context
from studio.ui.jobs import JobQueue
from studio.ui.logins import LoginGuard, LoginLimiter, SessionTokens, threaded
from studio.ui.tabs import compare as compare_tab
from studio.ui.tabs import data as data_tab
from studio.ui.tabs import export as export_tab
from studio.ui.tabs import recipe as recipe_tab
from studio.ui.tabs import teacher as teacher_tab
from studio.ui.tabs import train as train_tab

CSS = """
.studio-error pre, .studio-error code { color: #b42318 !important; white-space: pre-wrap !important; }
.studio-ok { color: #067647; font-weight: 600; }
#memory-panel table { font-size: 0.85em; }
.token-view { font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.7; font-size: 0.9em; }
.token-view .trained { background: #d1fadf; border-radius: 3px; }
.field-error input, .field-error textarea, .field-error .wrap { border-color: #d92d20 !important; box-shadow: 0 0 0 1px #d92d20 !important; }
.field-error .info-text { color: #b42318 !important; font-weight: 600; }
.picker-help p { font-size: 0.85em; margin: 2px 0 6px 0; }
.token-view .eos { background: #fedf89; border: 1px solid #b54708; border-radius: 3px; font-weight: 600; }
.reward-columns { border-collapse: collapse; font-size: 0.85em; }
.reward-columns th, .reward-columns td { border: 1px solid #d0d5dd; padding: 3px 8px; text-align: left; vertical-align: top; }
.field-error table { outline: 1px solid #d92d20; }
"""


# A shared server's class rules until a teacher changes them: one student cannot fill the queue, nor run two jobs at once.
SHARED_RULES = {"max_queued": 10, "max_running": 1}


def ui_home(home: str | Path | None = None) -> Path:
    """Where the UI keeps workspaces and the job queue: `home`, else studio_home()/ui."""
    return Path(home) if home else studio_home() / "ui"


def theme() -> gr.themes.Base:
    """A theme with system fonts only, so the page loads nothing from the internet."""
    return gr.themes.Soft(font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"], font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])


def build_app(home: str | Path | None = None, accounts: list[Account] | None = None, concurrency: int | str = "auto", queue: JobQueue | None = None,
              rules: dict | None = None) -> gr.Blocks:
    """The studio as a gr.Blocks; `app.studio_context` holds its home, job queue and accounts, and
    `app.studio_widgets` maps each recipe key to its form widget.

    The job queue's worker is not started here (`launch` starts it), so building the app has no side effects
    beyond creating the home folder and its database. `concurrency` is "auto" or a number (studio.ui.packing);
    `rules` are class rules to set now (studio.ui.jobs.Rules); with accounts, SHARED_RULES apply where none was saved.
    """
    home = ui_home(home)
    queue = queue or JobQueue(home, concurrency=concurrency, rules=rules, default_rules=SHARED_RULES if accounts else None)
    ctx = Context(home=home, queue=queue, accounts=list(accounts or []))
    with gr.Blocks(title="Adapter Studio", analytics_enabled=False) as app:
        gr.Markdown("## Adapter Studio — LoRA / QLoRA fine-tuning", elem_id="studio-title")
        with gr.Tabs():
            with gr.Tab("Recipe", id="recipe"):
                recipe = recipe_tab.build(ctx)
            with gr.Tab("Data", id="data"):
                data_tab.build(ctx, recipe)
            with gr.Tab("Train", id="train"):
                train = train_tab.build(ctx, recipe)
            with gr.Tab("Compare", id="compare"):
                compare = compare_tab.build(ctx)
            with gr.Tab("Export", id="export"):
                export = export_tab.build(ctx)
            with gr.Tab("Teacher", id="teacher", visible=False) as teacher_box:  # shown by its load, to teachers only
                teacher = teacher_tab.build(ctx, recipe, teacher_box)
        app.load(recipe["refresh"], recipe["inputs"], recipe["outputs"], api_visibility="undocumented", show_progress="hidden")
        app.load(recipe["list_choices"], None, [recipe["picker"]], api_visibility="undocumented", show_progress="hidden")
        app.load(train["refresh"], [train["selected"]], train["views"], api_visibility="undocumented", show_progress="hidden")
        app.load(compare["refresh"], None, compare["outputs"], api_visibility="undocumented", show_progress="hidden")
        app.load(export["refresh"], None, export["outputs"], api_visibility="undocumented", show_progress="hidden")
        app.load(teacher["load"], None, teacher["outputs"], api_visibility="undocumented", show_progress="hidden")
        gr.api(recipe_tab.api_list_recipes, api_name="list_recipes")
        gr.api(recipe_tab.api_validate, api_name="validate_recipe")
        gr.api(recipe_tab.api_estimate_memory, api_name="estimate_memory")
    app.studio_context = ctx
    app.studio_widgets = recipe["widgets"]
    return app


def check_host(host: str, accounts: list[Account]) -> None:
    """Refuse to serve a non-local address without authentication."""
    if host not in LOCAL_HOSTS and not accounts:
        raise StudioError(
            f"refusing to serve on {host} without authentication: anyone on the network could train and read your data",
            where="--host",
            fix="add accounts with `studio users add NAME` (or pass --auth FILE, or set STUDIO_UI_AUTH), or bind 127.0.0.1",
        )


def launch(host: str = "127.0.0.1", port: int = 7860, auth_file: str | Path | None = None, home: str | Path | None = None, block: bool = True,
           concurrency: int | str = "auto", start_queue: bool = True, session_hours: float = 12.0, idle_hours: float = 2.0,
           rules: dict | None = None) -> gr.Blocks:
    """Serve the studio on host:port; any host but localhost needs accounts (auth_file, $STUDIO_UI_AUTH or the users file).

    With accounts, failed logins are rate-limited per user and per address (`app.studio_login_limiter`), and a
    session ends `session_hours` after login or `idle_hours` after its last request (`app.server_app.tokens`).
    With `block=False` it returns the running app at once (tests call `app.close()` when done).
    With `start_queue=False` jobs are queued but not run (tests of the API that must not train).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if not (session_hours > 0 and idle_hours > 0):
        raise StudioError(f"session lifetimes must be positive, got {session_hours} h and {idle_hours} h idle", where="session_hours",
                          fix="pass a number of hours above 0")
    accounts = load_accounts(auth_file)
    check_host(host, accounts)
    app = build_app(home, accounts, concurrency=concurrency, rules=rules)
    if start_queue:
        app.studio_context.queue.start()
    app.queue(default_concurrency_limit=4)
    app.studio_login_limiter = LoginLimiter() if accounts else None
    guard = [Middleware(LoginGuard, limiter=app.studio_login_limiter)] if accounts else []
    try:
        app.launch(
            server_name=host,
            server_port=port,
            auth=threaded(authenticator(accounts)) if accounts else None,  # hashes are slow: off the event loop
            auth_message="Adapter Studio: log in with your workshop account." if accounts else None,
            app_kwargs={"middleware": guard},
            prevent_thread_lock=True,  # the token table is replaced first; block_thread below waits when asked
            max_file_size=MAX_UPLOAD_BYTES,
            show_error=True,
            quiet=not block,
            theme=theme(),
            css=CSS,
            footer_links=["api"],
            run_history=False,
        )
    except OSError as exc:
        app.studio_context.queue.close()
        raise StudioError(f"cannot serve on {host}:{port}: {exc}", where="--port", fix="pick a free port with --port, or stop the program using it") from None
    if accounts:
        tokens = SessionTokens(lifetime_s=session_hours * 3600, idle_s=idle_hours * 3600)
        for token, user in app.server_app.tokens.items():  # none yet, unless a login beat this line
            tokens[token] = user
        app.server_app.tokens = tokens
    if block:
        app.block_thread()
    return app
