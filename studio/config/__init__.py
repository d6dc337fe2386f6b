"""The recipe: its typed schema, loading it from YAML with `--set` overrides, and what ships with the studio.

    schema.py      the Recipe (pydantic): every knob, its default, its bounds and its docstring
    load.py        load_recipe: a file, a shipped recipe's name or a dict -> a validated Recipe
    validate.py    schema errors as one StudioError with file, line, key and a suggestion
    yaml_text.py   safe YAML reading (line index, no aliases) and dump_recipe
    walker.py      one walk over the schema for the CLI help and the UI form
    shipped.py     the shipped recipes and example datasets (package data)
    home.py        where the studio keeps its files ($STUDIO_HOME)
"""
