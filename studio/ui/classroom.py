"""A class recipe: the recipe a teacher sets for a workshop, with some of its values locked for the students.

A locked value (the base model, the step count, the sequence length) is what keeps thirty jobs on one GPU
predictable: the queue packs jobs by their estimated memory and times them by their steps. Students start
from the class recipe and may change everything else.

Stored in the UI home: `class/recipe.yaml` (the validated recipe, for the students' form) and
`class/locks.json` (each locked key with its value). The check reads locks.json alone, so a reader never
pairs a new recipe with old locks; both files are written atomically.

Pure Python, testable without Gradio. The Train tab calls `check_job` on the server for every student's job,
so neither the form nor the API can queue a recipe that breaks the class's locks or its step cap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.config.load import recipe_from_text
from studio.config.schema import Recipe
from studio.config.validate import validate_recipe
from studio.config.yaml_text import dump_recipe
from studio.errors import StudioError
from studio.training.rundir import write_atomic, write_json

LOCKABLE = ("model.name", "train.max_steps", "data.max_length")
FOLDER = "class"
RECIPE_FILE = "recipe.yaml"
LOCKS_FILE = "locks.json"


@dataclass(frozen=True)
class ClassRecipe:
    """The saved class recipe and the values it locks (key -> value)."""

    recipe: Recipe
    locked: dict[str, Any]


def value_at(recipe: Recipe, key: str) -> Any:
    """The value of a dotted key (`train.max_steps`) in a recipe, as its YAML holds it."""
    node: Any = recipe.to_yaml_dict()
    for part in key.split("."):
        node = node[part]
    return node


def save(home: str | Path, recipe: dict | str | Recipe, locked: list[str] | tuple[str, ...] = ()) -> ClassRecipe:
    """Validate and store the class recipe (the form's recipe data, YAML text or a Recipe) with the keys of
    LOCKABLE it locks; returns what was saved. A StudioError for an invalid recipe or an unknown key."""
    where = "class recipe"
    if isinstance(recipe, str):
        recipe = recipe_from_text(recipe, where=where)
    elif isinstance(recipe, dict):
        recipe = validate_recipe(recipe, where=where)
    elif not isinstance(recipe, Recipe):
        raise StudioError(f"a class recipe must be recipe data or YAML text, got {type(recipe).__name__}", where=where,
                          fix="use the Recipe tab's form, or send the recipe as YAML text")
    if isinstance(locked, str) or not isinstance(locked, (list, tuple)):
        raise StudioError(f"the locked keys must be a list, got {locked!r}", where=f"{where}: locked keys", fix=f"pick some of {list(LOCKABLE)}")
    unknown = [key for key in locked if key not in LOCKABLE]
    if unknown:
        raise StudioError(f"{unknown} cannot be locked", where=f"{where}: locked keys", fix=f"lock only {list(LOCKABLE)}")
    values = {key: value_at(recipe, key) for key in LOCKABLE if key in locked}
    empty = [key for key, value in values.items() if value is None]
    if empty:  # an empty train.max_steps trains by epochs: there is no number to hold students to
        raise StudioError(f"{empty[0]} is empty in this recipe, so there is nothing to lock", where=f"{where} (key {empty[0]})",
                          fix=f"set {empty[0]} in the Recipe tab first, or leave it unlocked")
    folder = Path(home) / FOLDER
    write_atomic(folder / RECIPE_FILE, dump_recipe(recipe))
    write_json(folder / LOCKS_FILE, {"locked": values})
    return ClassRecipe(recipe, values)


def load(home: str | Path) -> ClassRecipe | None:
    """The saved class recipe, or None when the teacher has set none."""
    path = Path(home) / FOLDER / RECIPE_FILE
    if not path.is_file():
        return None
    return ClassRecipe(recipe_from_text(path.read_text(encoding="utf-8"), where=str(path)), locked_values(home))


def clear(home: str | Path) -> None:
    """Remove the class recipe and its locks (students get the normal form again)."""
    folder = Path(home) / FOLDER
    (folder / LOCKS_FILE).unlink(missing_ok=True)
    (folder / RECIPE_FILE).unlink(missing_ok=True)


def locked_values(home: str | Path) -> dict[str, Any]:
    """The locked keys with the values students must keep ({} when nothing is locked)."""
    path = Path(home) / FOLDER / LOCKS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # Refusing every job is safer than letting a damaged file lift the locks unnoticed.
        raise StudioError(f"the class locks cannot be read ({exc})", where=str(path), fix="the teacher saves the class recipe again") from None
    locked = data.get("locked") if isinstance(data, dict) else None
    if not isinstance(locked, dict):
        raise StudioError("the class locks file is damaged", where=str(path), fix="the teacher saves the class recipe again")
    return {key: value for key, value in locked.items() if key in LOCKABLE}


def check_job(home: str | Path, rules, recipe: Recipe) -> None:
    """Refuse (StudioError naming the key) a student's recipe that changes a locked value, or that has no
    train.max_steps or more than the class's cap `rules.max_steps` (a Rules of the job queue; None: no cap)."""
    check_locks(locked_values(home), recipe)
    cap = getattr(rules, "max_steps", None)
    if cap:
        steps = recipe.train.max_steps
        if steps is None:
            raise StudioError(f"this class allows at most {cap} steps per job, and this recipe trains by epochs (train.max_steps is empty)",
                              where="your recipe (key train.max_steps)", fix=f"set train.max_steps to {cap} or fewer")
        if steps > cap:
            raise StudioError(f"train.max_steps is {steps}, above this class's limit of {cap} steps per job",
                              where="your recipe (key train.max_steps)", fix=f"set train.max_steps to {cap} or fewer")


def check_locks(locked: dict[str, Any], recipe: Recipe) -> None:
    """Refuse a recipe whose value of a locked key differs from the teacher's."""
    for key, value in locked.items():
        have = value_at(recipe, key)
        if have != value:
            raise StudioError(f"{key} is locked by your teacher at {value!r}, but this recipe has {have!r}",
                              where=f"your recipe (key {key})", fix=f"set {key} back to {value!r} (reload the page to start from the class recipe)")


def binds(ctx, user: str) -> bool:
    """Whether the class recipe's locks and the class rules bind `user` of a studio Context: a student on a shared
    server (teachers and the single local user are free)."""
    return ctx.shared and not ctx.is_teacher(user)


def locks_for(ctx, user: str) -> dict[str, Any]:
    """The locked values `user` must keep ({} for a teacher, the local user, or a class without locks)."""
    if not binds(ctx, user):
        return {}
    try:
        return locked_values(ctx.home)
    except StudioError:  # a damaged locks file: check_for's check reports it, and the Train tab refuses the job
        return {}


def check_for(ctx, user: str) -> Callable[[Recipe], None] | None:
    """The class's check of a recipe for `user` (check_job with the rules in force), or None when none binds them."""
    if not binds(ctx, user):
        return None
    return lambda recipe: check_job(ctx.home, ctx.queue.rules(), recipe)
