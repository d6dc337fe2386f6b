"""`--gpus N`: the recipe overrides that train on N GPUs of this machine (the CLI's flag, and the UI's picker
through it)."""

from __future__ import annotations

from studio.errors import StudioError


def gpus_overrides(recipe_path: str, overrides: list[str], gpus: int | None) -> list[str]:
    """The `--set` overrides that `--gpus N` stands for: N processes on this machine, with strategy ddp
    unless the recipe (or a --set) says fsdp. Applied before validation, so `strategy: fsdp` in a recipe
    plus `--gpus 4` is a valid pair even though fsdp on its own needs more than one process."""
    if gpus is None:
        return list(overrides)
    if gpus < 1:
        raise StudioError(f"--gpus must be at least 1, got {gpus}", where="--gpus", fix="pass the number of GPUs to train on, e.g. --gpus 4")
    from studio.config.load import parse_override
    from studio.config.shipped import find_recipe
    from studio.config.yaml_text import read_recipe_file

    raw, _ = read_recipe_file(find_recipe(recipe_path))
    section = raw.get("distributed") if isinstance(raw, dict) else None
    strategy = section.get("strategy", "none") if isinstance(section, dict) else "none"
    machines = section.get("num_machines", 1) if isinstance(section, dict) else 1
    for item in overrides:
        key, value = parse_override(item)
        if key == "distributed.strategy":
            strategy = value
        if key == "distributed.num_machines":
            machines = value
    if strategy in (None, "none"):
        strategy = "ddp" if gpus > 1 or machines != 1 else "none"
    return [*overrides, f"distributed.num_processes={gpus}", f"distributed.strategy={strategy}"]
