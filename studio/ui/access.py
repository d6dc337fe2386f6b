"""Who may touch what: per-user workspaces, and the paths a user may name on a shared server.

A workspace is `home/workspaces/<user>/` with `recipes/`, `uploads/` and `runs/`; no user-given name may
reach outside it. On a shared (logged-in) server, recipes may only point at data in the user's workspace
or the shipped examples, and at local models in the workspace (`check_recipe_paths`, `check_data_path`);
and no uploaded code ever runs: a GRPO reward file must be one the server's owner placed in the studio
home's rewards folder (`check_reward_file`).
"""

from __future__ import annotations

import re
from pathlib import Path

from studio.config.home import studio_home
from studio.config.shipped import examples_dir
from studio.errors import StudioError

LOCAL_USER = "local"
REWARDS = "rewards"  # the studio home's folder of reward files a shared server may run
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,127}$")


def check_user(user: str) -> str:
    """Return a valid user name or raise StudioError (letters, digits, `_.-`, no path characters)."""
    if not isinstance(user, str) or not _USER_RE.fullmatch(user) or user in (".", ".."):
        raise StudioError(f"invalid user name {user!r}", where="auth", fix="use letters, digits, '_', '.', '-' (at most 64 characters)")
    return user


def check_name(name: str) -> str:
    """Return a plain file name (no folders, no `..`, no leading dot) or raise StudioError."""
    if not isinstance(name, str) or "/" in name or "\\" in name or ".." in name or not _NAME_RE.fullmatch(name):
        raise StudioError(f"invalid file name {name!r}", where="file name", fix="use a plain name of letters, digits, spaces and '_.+-', without folders or '..'")
    return name


def workspace(home: str | Path, user: str) -> Path:
    """The user's workspace folder (created with recipes/, uploads/, runs/)."""
    root = Path(home) / "workspaces" / check_user(user)
    for sub in ("recipes", "uploads", "runs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def safe_path(root: str | Path, name: str) -> Path:
    """root/name, refusing absolute names, `..` and symlinks that lead outside root."""
    if not isinstance(name, str) or not name or "\0" in name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise StudioError(f"path {name!r} is not allowed", where="file name", fix="use a name inside your workspace")
    root = Path(root).resolve()
    target = (root / name).resolve()
    if target == root:  # `.` or `a/..`-free spellings of the root: never hand out the whole workspace
        raise StudioError(f"path {name!r} names the workspace itself", where="file name", fix="name a file inside your workspace")
    if root not in target.parents:
        raise StudioError(f"path {name!r} leads outside the workspace", where="file name", fix="use a name inside your workspace")
    return target


def inside(root: str | Path, path: str | Path) -> bool:
    """Whether path (after resolving symlinks) lies inside root."""
    root, path = Path(root).resolve(), Path(path).resolve()
    return path == root or root in path.parents


def check_data_path(space: Path, path: str, where: str) -> str:
    """`path` when it lies in the user's workspace or the shipped examples; a StudioError otherwise."""
    if not (inside(space, path) or inside(examples_dir(), path)):
        raise StudioError(f"{where} is outside your workspace", where=where, fix="upload the file in the Data tab")
    return path


def rewards_dir() -> Path:
    """The folder of reward files a shared server may run: `<studio home>/rewards`, filled by the server's owner."""
    return studio_home() / REWARDS


def check_reward_file(path: str) -> str:
    """On a shared server, the reward file a recipe names as the absolute path training will import: it must lie in
    rewards_dir() (a bare name is a file there), since the file runs as code; a StudioError otherwise."""
    folder = rewards_dir()
    target = Path(path).expanduser()
    target = target if target.is_absolute() else folder / target
    if not inside(folder, target) or target.resolve() == folder.resolve():
        raise StudioError(
            "grpo.reward_file is not in this server's rewards folder: on a shared server only rewards shipped with the studio, "
            "or files the server's owner placed in that folder, may run",
            where="grpo.reward_file",
            fix=f"use the shipped rewards (leave grpo.reward_file empty), or ask the server's owner to put your file in {folder} and name it there",
        )
    return str(target.resolve())


def check_recipe_paths(space: Path, recipe):
    """On a shared server: the recipe's data files, a chat template file and any local model must come from
    the user's workspace (or, for data and templates, what ships with the studio), and a reward file from the
    server's rewards folder. Returns the recipe with that reward file's absolute path, the one training imports."""
    from studio.config.schema import names_local_model
    from studio.config.shipped import recipes_dir

    for key in ("path", "val_path", "test_path"):
        value = getattr(recipe.data, key)
        if value:
            check_data_path(space, value, f"data.{key}")
    template = recipe.data.chat_template
    if template and template.endswith(".jinja") and not (inside(space, template) or inside(recipes_dir(), template)):
        raise StudioError("data.chat_template points outside your workspace", where="data.chat_template", fix="upload the template, or paste it inline")
    if names_local_model(recipe.model.name) and not inside(space, Path(recipe.model.name).expanduser()):
        raise StudioError("model.name points outside your workspace", where="model.name", fix="use the bundled model or a hub id")
    if recipe.grpo.reward_file:
        return recipe.model_copy(update={"grpo": recipe.grpo.model_copy(update={"reward_file": check_reward_file(recipe.grpo.reward_file)})})
    return recipe
