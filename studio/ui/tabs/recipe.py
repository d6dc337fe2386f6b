"""The Recipe tab: the schema-generated form, live validation, YAML and command preview, memory estimate.

On a shared server a student's form starts from the teacher's class recipe (studio.ui.classroom), its locked
fields read-only, and the form checks the class's locks and step cap as it validates; the Train tab checks them
again on the server when the job is queued.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from studio.config.load import load_recipe, recipe_from_text
from studio.config.schema import Recipe
from studio.config.shipped import DEMO_RECIPE, recipe_name, shipped_recipe, shipped_recipes
from studio.config.validate import validate_recipe
from studio.config.yaml_text import MAX_RECIPE_BYTES, dump_recipe
from studio.errors import StudioError
from studio.memory.formula import estimate
from studio.memory.gpus import DEFAULT_GPU, parse_gpu
from studio.ui import classroom, model_picker
from studio.ui.access import check_name, check_recipe_paths, safe_path
from studio.ui.context import Context, served
from studio.ui.errors import help_error, shows_errors
from studio.ui.form import (
    FieldSpec,
    field_errors,
    form_fields,
    override_args,
    recipe_to_values,
    section_of,
    to_widget,
    values_to_raw,
)
from studio.ui.rewards import build_reward_picker, resolved_rewards, wire_reward_picker

OPEN_SECTIONS = ("model", "method", "lora", "data", "train")
DEFAULT_GPU_GIB = parse_gpu(DEFAULT_GPU)
REWARDS_KEY, REWARD_FILE_KEY = "grpo.rewards", "grpo.reward_file"  # the fields the rewards picker fills and reads
CELL_TYPES = {"int": "number", "float": "number", "checkbox": "bool"}  # a table cell's Dataframe type by its field's kind
MayRun = Callable[[str | None], str | None] | None  # the reward file the UI may import for grpo.reward_file (Context.reward_file)
ClassCheck = Callable[[Recipe], None] | None  # raises a StudioError for a recipe the class's rules refuse (classroom.check_job)
LOCKED_INFO = "locked by your teacher: the class recipe sets it"


def make_widget(spec: FieldSpec, value: Any = None):
    """The Gradio component for one schema field: label = dotted key, info = the field's docstring; it shows
    `value` (a widget value, as `to_widget` gives it), else the schema default."""
    shown = to_widget(spec, spec.default) if value is None else value
    common = {"label": spec.key, "info": spec.info, "value": shown, "elem_id": field_id(spec.key)}
    if spec.kind == "dropdown":
        return gr.Dropdown(choices=list(spec.choices), **common)
    if spec.kind == "checkbox":
        return gr.Checkbox(**common)
    if spec.kind in ("int", "float") and spec.optional:
        # gr.Number cannot be empty (the browser sends 0), so optional numbers are text: empty = None.
        return gr.Textbox(max_lines=1, placeholder="empty = none", **common)
    if spec.kind == "int":
        return gr.Number(precision=0, **common)
    if spec.kind == "float":
        return gr.Number(**common)
    if spec.kind == "table":
        # A Dataframe has no help text under it: the picker above the table explains it (build_reward_picker).
        del common["info"]
        return gr.Dataframe(headers=[c.key for c in spec.columns], datatype=[CELL_TYPES.get(c.kind, "str") for c in spec.columns], type="array",
                            interactive=True, column_count=len(spec.columns), wrap=True, **common)
    return gr.Textbox(max_lines=1, **common)


def section_id(section: str) -> str:
    """The page element id of a form section's accordion: `section-grpo`."""
    return "section-" + section


def field_id(key: str) -> str:
    """The page element id of a form field: `field-lora-rank` for lora.rank."""
    return "field-" + key.replace(".", "-")


def check_form_error(raw: dict, may_run: MayRun = None, class_check: ClassCheck = None) -> tuple[Recipe | None, StudioError | None]:
    """Validate form data: the Recipe and None, or None and the StudioError. A grpo recipe's rewards are resolved as
    training resolves them, with the reward file `may_run` allows (Context.reward_file; any file when None);
    `class_check` (a student's class rules) may refuse the recipe as well."""
    try:
        recipe = validate_recipe(raw, where="form")
        if recipe.method == "grpo":
            check_rewards(recipe, may_run)
        if class_check is not None:
            class_check(recipe)
        return recipe, None
    except StudioError as exc:
        return None, exc


def check_rewards(recipe: Recipe, may_run: MayRun = None) -> None:
    """The recipe's rewards resolved (names, options, the reward file); an error names the form field it is about."""
    try:
        resolved_rewards(recipe.grpo.rewards, may_run(recipe.grpo.reward_file) if may_run else recipe.grpo.reward_file)
    except StudioError as exc:
        # resolve names `grpo.rewards[0].args`; the reward file's own errors name the file (and line).
        field = REWARDS_KEY if (exc.where or "").startswith(REWARDS_KEY) else REWARD_FILE_KEY
        raise StudioError(exc.what, where=f"{exc.where or 'form'} (key {field})", fix=exc.fix) from None


def field_updates(specs: list[FieldSpec], errors: dict[str, str], locked: dict | None = None) -> list:
    """One update per form widget: the error under the field (red) where there is one, else its help text. A table
    has no help text (gr.Dataframe takes none): it is only marked, and the status above names it. A key in `locked`
    (a student's class locks) is read-only and says so."""
    def update(spec: FieldSpec, info: str, classes: list[str]):
        if spec.kind == "table":
            return gr.update(elem_classes=classes)
        if spec.key in (locked or {}):
            return gr.update(info=f"⚠ {errors[spec.key]}" if spec.key in errors else LOCKED_INFO, elem_classes=classes + ["locked"], interactive=False)
        return gr.update(info=info, elem_classes=classes)

    return [update(s, f"⚠ {errors[s.key]}", ["field-error"]) if s.key in errors else update(s, s.info, []) for s in specs]


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime: float) -> Recipe:
    return load_recipe(path)


def load_base(path: str | None) -> Recipe | None:
    """The recipe a form was loaded from (for the `--set` diff), or None."""
    if not path or not Path(path).is_file():
        return None
    try:
        return _load_cached(path, Path(path).stat().st_mtime)
    except StudioError:
        return None


def command_for(base_path: str | None, base: Recipe | None, recipe: Recipe) -> str:
    """The `studio train` command that trains what the form shows."""
    shown = (recipe_name(base_path) or base_path) if base_path else "RECIPE.yaml"  # a shipped recipe by its name
    args = override_args(base, recipe)
    return " \\\n    ".join([f"studio train {shown}", *args])


def preview(specs: list[FieldSpec], values: list, base_path: str | None, gpu_gib: float | None, may_run: MayRun = None,
            class_check: ClassCheck = None) -> tuple[str, str, str, str, dict | None]:
    """Status markdown, YAML, command, memory markdown and the valid recipe data (or None) for form values."""
    status, text, cmd, mem, raw, _ = preview_with_errors(specs, values, base_path, gpu_gib, may_run, class_check)
    return status, text, cmd, mem, raw


def preview_with_errors(specs: list[FieldSpec], values: list, base_path: str | None, gpu_gib: float | None, may_run: MayRun = None,
                        class_check: ClassCheck = None) -> tuple[str, str, str, str, dict | None, dict[str, str]]:
    """`preview`, plus the per-field error messages (dotted key -> message; empty when valid). `may_run` and
    `class_check`: as for check_form_error."""
    recipe, error = check_form_error(values_to_raw(specs, values), may_run, class_check)
    if recipe is None:
        errors = field_errors(error, [s.key for s in specs])
        fields = f"  \nsee the field{'s' if len(errors) > 1 else ''} marked ⚠: {', '.join(f'`{k}`' for k in errors)}" if errors else ""
        return f"<div class='studio-error'>\n\n```\n{error.format()}\n```\n</div>{fields}", "", "", "", None, errors
    memory = format_estimate(estimate(recipe, float(gpu_gib or DEFAULT_GPU_GIB)))
    status = f"<span class='studio-ok'>✓ valid</span> — {recipe.method} on `{recipe.model.name}`, rank {recipe.lora.rank}, batch {recipe.train.batch_size} × {recipe.data.max_length} tokens"
    return status, dump_recipe(recipe), command_for(base_path, load_base(base_path), recipe), memory, recipe.to_yaml_dict(), {}


def resolve_choice(ctx: Context, request, choice: str) -> Path:
    """The file behind a recipe picker choice: `workspace/<file>`, or a shipped recipe's name."""
    if choice.startswith("workspace/"):
        return safe_path(ctx.workspace(request) / "recipes", choice.removeprefix("workspace/"))
    path = shipped_recipe(choice or "")
    if path is None:
        raise StudioError(f"no shipped recipe named {choice!r}", where="Recipe tab: recipe", fix="pick a recipe from the list")
    return path


def recipe_choices(ctx: Context, request) -> list[str]:
    """Shipped recipes, then the user's saved ones."""
    saved = sorted(p.name for p in (ctx.workspace(request) / "recipes").glob("*.yaml"))
    return shipped_recipes() + [f"workspace/{n}" for n in saved]


def build(ctx: Context) -> dict:
    """Lay out the Recipe tab; return its components for the other tabs."""
    specs = form_fields()
    demo_path = str(shipped_recipe(DEMO_RECIPE))
    demo = load_base(demo_path) or Recipe()
    widgets: dict[str, gr.components.Component] = {}
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row(equal_height=True, elem_id="recipe-picker"):
                picker = gr.Dropdown(choices=shipped_recipes(), value=DEMO_RECIPE, show_label=False, container=False, scale=3, allow_custom_value=False, elem_id="recipe-choice")
                load_btn = gr.Button("Load recipe", scale=1, min_width=100)
                upload = gr.UploadButton("Open YAML…", file_types=[".yaml", ".yml"], scale=1, min_width=100)
            shown = dict(zip([s.key for s in specs], recipe_to_values(specs, demo)))
            for section in dict.fromkeys(section_of(s.key) for s in specs):
                fields = [s for s in specs if section_of(s.key) == section]
                with gr.Accordion(section, open=section in OPEN_SECTIONS, elem_id=section_id(section)):
                    if section == "model":
                        picker_parts = build_model_picker(demo.model.name)
                    for row in field_rows(fields):
                        if row[0].key == REWARDS_KEY:
                            reward_parts = build_reward_picker(ctx, row[0])
                        with gr.Row():
                            for spec in row:
                                widgets[spec.key] = make_widget(spec, shown[spec.key])
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="recipe-status")
            gpu = gr.Number(value=DEFAULT_GPU_GIB, label="GPU memory (GiB)", info="the card you will train on", elem_id="gpu-gib")
            memory = gr.Markdown(elem_id="memory-panel")
            command = gr.Code(label="Equivalent command", language="shell", interactive=False, lines=3)
            yaml_view = gr.Code(label="Recipe YAML", language="yaml", interactive=False, lines=16, max_lines=30, elem_id="recipe-yaml")
            with gr.Row(equal_height=True):
                save_name = gr.Textbox(label="Save as", placeholder="my-recipe", max_lines=1, scale=2)
                save_btn = gr.Button("Save", scale=1)
            saved_file = gr.File(label="Download", interactive=False, visible=False)
    base_path = gr.State(demo_path)
    recipe_state = gr.State(demo.to_yaml_dict())
    inputs = [widgets[s.key] for s in specs]

    # The request comes first: Gradio hands gr.Request only to positional parameters, and the values follow it.
    def refresh(request: gr.Request, *args):
        *values, base, gpu_gib = args
        user = ctx.user(request)
        status, text, cmd, mem, raw, errors = preview_with_errors(specs, list(values), base, gpu_gib, ctx.reward_file, classroom.check_for(ctx, user))
        marks = field_updates(specs, errors, classroom.locks_for(ctx, user))
        if raw is None:  # keep the last valid YAML, command and estimate on screen under the error
            return status, gr.update(), gr.update(), gr.update(), None, *marks
        return status, text, cmd, mem, raw, *marks

    def page_load(request: gr.Request, *args):
        """The form as the page opens: a student of a class with a class recipe starts from it (locked fields
        read-only); everyone else gets the form as it is."""
        try:
            start = classroom.load(ctx.home) if classroom.binds(ctx, ctx.user(request)) else None
        except StudioError:  # a damaged class recipe: the normal form, and the class check says what is wrong
            start = None
        if start is None:
            return refresh(request, *args)
        *_, base, gpu_gib = args
        values = recipe_to_values(specs, start.recipe)
        shown = refresh(request, *values, base, gpu_gib)
        return *shown[:5], *[{**mark, "value": value} for mark, value in zip(shown[5:], values)]

    def keep_locks(request, values: list) -> list:
        # A recipe loaded from a file keeps the teacher's locked values, so a student's form stays trainable.
        locked = classroom.locks_for(ctx, ctx.user(request))
        return [to_widget(spec, locked[spec.key]) if spec.key in locked else value for spec, value in zip(specs, values)]

    outputs = [status, yaml_view, command, memory, recipe_state, *inputs]
    wire_model_picker(ctx, picker_parts, widgets["model.name"])
    wire_reward_picker(ctx, reward_parts, next(s for s in specs if s.key == REWARDS_KEY), widgets[REWARDS_KEY], widgets[REWARD_FILE_KEY])
    gr.on(triggers=[w.change for w in inputs] + [gpu.change], fn=refresh, inputs=inputs + [base_path, gpu], outputs=outputs, trigger_mode="always_last", api_visibility="undocumented", show_progress="hidden")

    def load_choice(choice, request: gr.Request):
        path = resolve_choice(ctx, request, choice)
        recipe = load_recipe(path)
        return [*keep_locks(request, recipe_to_values(specs, recipe)), str(path)]

    def load_upload(file, request: gr.Request):
        path = Path(file)
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise StudioError(f"recipe file is larger than {MAX_RECIPE_BYTES} bytes", where=path.name, fix="a recipe is a short YAML file; check you picked the right one")
        target = safe_path(ctx.workspace(request) / "recipes", check_name(path.name if path.suffix == ".yaml" else path.stem + ".yaml"))
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        recipe = load_recipe(target)
        return [*keep_locks(request, recipe_to_values(specs, recipe)), str(target)]

    def save(name, raw, request: gr.Request):
        if raw is None:
            raise StudioError("the recipe has errors", where="Recipe tab", fix="fix the fields marked ⚠ before saving")
        name = check_name((name or "").strip() or "recipe")
        name = name if name.endswith(".yaml") else name + ".yaml"
        target = safe_path(ctx.workspace(request) / "recipes", name)
        target.write_text(dump_recipe(validate_recipe(raw)), encoding="utf-8")
        return gr.update(value=served(target), visible=True), gr.update(choices=recipe_choices(ctx, request), value=f"workspace/{name}"), str(target)

    def list_choices(request: gr.Request):
        return gr.update(choices=recipe_choices(ctx, request))

    load_btn.click(shows_errors(load_choice), [picker], inputs + [base_path], api_visibility="undocumented")
    upload.upload(shows_errors(load_upload), [upload], inputs + [base_path], api_visibility="undocumented")
    save_btn.click(shows_errors(save), [save_name, recipe_state], [saved_file, picker, base_path], api_visibility="undocumented")
    # "refresh" is what app.load runs: the form as the page opens (page_load); `refresh` itself follows each change.
    return {"widgets": widgets, "specs": specs, "recipe_state": recipe_state, "status": status, "outputs": outputs,
            "refresh": page_load, "inputs": inputs + [base_path, gpu], "picker": picker, "list_choices": list_choices}


def field_rows(fields: list[FieldSpec]) -> list[list[FieldSpec]]:
    """A section's fields laid out two to a row, in schema order; a table (grpo.rewards) takes a row of its own."""
    rows: list[list[FieldSpec]] = []
    for spec in fields:
        if spec.kind == "table" or not rows or len(rows[-1]) == 2 or rows[-1][0].kind == "table":
            rows.append([spec])
        else:
            rows[-1].append(spec)
    return rows


def build_model_picker(name: str) -> dict:
    """The chooser for model.name (placed at the top of the model section): source, text, button, help."""
    kind = model_picker.kind_of(name)
    with gr.Group(elem_id="model-picker"):
        source = gr.Radio(list(model_picker.KINDS), value=kind, label="Base model from", elem_id="model-source",
                          info="pick where the base model comes from, type it, and press the button to fill model.name")
        with gr.Row(equal_height=True):
            text = gr.Textbox(value=name, show_label=False, container=False, max_lines=1, scale=4, interactive=kind != "bundled demo model",
                              placeholder=model_picker.PLACEHOLDER[kind], elem_id="model-source-text")
            use = gr.Button("Set model.name", scale=1, min_width=160, size="md", elem_id="model-source-use")
    help_md = gr.Markdown(model_picker.HELP[kind], elem_id="model-source-help", elem_classes=["picker-help"])
    return {"source": source, "text": text, "use": use, "help": help_md}


def wire_model_picker(ctx: Context, parts: dict, name_widget) -> None:
    """Connect the chooser: picking a source explains it, the button fills model.name, and a model.name typed
    or loaded from a recipe moves the chooser to match."""
    source, text, use, help_md = parts["source"], parts["text"], parts["use"], parts["help"]

    def on_source(kind, current):
        bundled = kind == "bundled demo model"
        value = model_picker.BUNDLED_DEMO_MODEL if bundled else ("" if model_picker.kind_of(current) != kind else current)
        return gr.update(value=value, interactive=not bundled, placeholder=model_picker.PLACEHOLDER[kind]), model_picker.HELP[kind]

    def on_use(kind, typed, request: gr.Request):
        try:
            if "model.name" in classroom.locks_for(ctx, ctx.user(request)):
                raise StudioError("model.name is locked by your teacher", where="model.name", fix="keep the class's base model")
            name = model_picker.model_name_for(kind, typed)
            if ctx.shared and kind in ("local directory", "GGUF file"):
                check_recipe_paths(ctx.workspace(request), Recipe.model_validate({"model": {"name": name}}))
        except StudioError as exc:
            return gr.update(), help_error(exc)
        return name, f"✓ model.name set to `{name}`. " + model_picker.HELP[kind]

    def on_name(name):
        kind = model_picker.kind_of(name)
        return gr.update(value=kind), gr.update(value=name, interactive=kind != "bundled demo model", placeholder=model_picker.PLACEHOLDER[kind])

    source.input(on_source, [source, text], [text, help_md], api_visibility="undocumented", show_progress="hidden")
    use.click(on_use, [source, text], [name_widget, help_md], api_visibility="undocumented", show_progress="hidden")
    text.submit(on_use, [source, text], [name_widget, help_md], api_visibility="undocumented", show_progress="hidden")
    name_widget.change(on_name, [name_widget], [source, text], api_visibility="undocumented", show_progress="hidden")


# --- plain endpoints (also exposed through gr.api) ------------------------------------------------------


def api_list_recipes() -> list[str]:
    """The shipped recipes' names (`smollm2/135m-qlora`)."""
    return shipped_recipes()


def api_validate(recipe_yaml: str) -> str:
    """'valid' or the StudioError text for a recipe given as YAML text."""
    try:
        recipe_from_text(recipe_yaml, where="<yaml>")
    except StudioError as exc:
        return exc.format()
    return "valid"


def api_estimate_memory(recipe_yaml: str, gpu_gib: float = DEFAULT_GPU_GIB) -> dict:
    """The memory estimate (breakdown in GiB, peak_gib, fits) for a recipe given as YAML text."""
    try:
        recipe = recipe_from_text(recipe_yaml, where="<yaml>")
    except StudioError as exc:
        return {"error": str(exc)}
    return estimate(recipe, gpu_gib)


def format_estimate(result: dict) -> str:
    """The estimate as a short markdown table for the UI."""
    if not result.get("known"):
        return f"**Memory estimate:** unknown shape for `{result['model']}` (point model.name at a local folder with config.json)."
    verdict = "fits" if result["fits"] else "does **not** fit"
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in result["breakdown"].items())
    room = f"largest batch that fits: {result['max_batch_size']}, largest max_length: {result['max_length']}"
    return (
        f"**Peak ≈ {result['peak_gib']:.2f} GiB** — {verdict} in {result['gpu_gib']:g} GiB  \n"
        f"{result['params'] / 1e6:,.0f}M params, {result['lora_params'] / 1e6:,.2f}M trainable; shapes from {result['source']}  \n"
        f"{room}\n\n"
        f"| part | GiB |\n|---|---|\n{rows}\n"
    )


__all__ = ["api_estimate_memory", "api_list_recipes", "api_validate", "build", "format_estimate", "make_widget", "preview", "to_widget"]
