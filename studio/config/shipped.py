"""What ships with the studio: its recipes and the example datasets they train on.

Both are package data (`studio.recipes` and `studio.examples`, mapped from the repository's top-level
`recipes/` and `examples/` folders), found through importlib.resources, so they are the same files in a
checkout, an editable install and an installed wheel. A shipped recipe names its data relative to its
own folder (`../../examples/...`), which holds in every one of those layouts.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from studio.config.schema import path_exists

DEMO_RECIPE = "smollm2/135m-qlora"  # the recipe `studio demo` and the UI start from


def recipes_dir() -> Path:
    """The folder of shipped recipes (`<family>/<size>-<method>.yaml`)."""
    return Path(str(files("studio.recipes")))


def examples_dir() -> Path:
    """The folder of shipped example datasets and the scripts that generated them."""
    return Path(str(files("studio.examples")))


def shipped_recipes() -> list[str]:
    """Every shipped recipe's name (`smollm2/135m-qlora`: its path under recipes/ without .yaml), sorted."""
    return sorted(recipe_name(p) for p in recipes_dir().rglob("*.yaml"))


def recipe_name(path: str | Path) -> str | None:
    """The shipped recipe's name of a file under recipes/, or None for a file elsewhere."""
    path, root = Path(path).resolve(), recipes_dir().resolve()
    return path.relative_to(root).with_suffix("").as_posix() if path.is_relative_to(root) else None


def shipped_recipe(name: str) -> Path | None:
    """The file of a shipped recipe named `family/size-method` (a trailing .yaml is accepted), or None."""
    name = name.strip().removesuffix(".yaml")
    if name not in shipped_recipes():
        return None
    return recipes_dir() / f"{name}.yaml"


def find_recipe(source: str | Path) -> Path:
    """The recipe file `source` means: an existing path as given, else a shipped recipe of that name.

    A path that is neither is returned as given, so the caller's "not found" error names what was typed.
    """
    path = Path(source).expanduser()
    return path if path_exists(path) else shipped_recipe(str(source)) or path


def not_found_fix() -> str:
    """The `fix` of a recipe that cannot be found: where to look and which names exist."""
    names = shipped_recipes()
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"check the path, or name a shipped recipe ({shown}); `studio recipes` lists them all"


__all__ = ["DEMO_RECIPE", "examples_dir", "find_recipe", "not_found_fix", "recipes_dir", "shipped_recipe", "shipped_recipes"]
