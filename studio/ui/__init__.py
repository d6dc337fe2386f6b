"""The Gradio studio: a thin shell that builds recipes, queues `studio train` subprocesses and reads run directories.

    app.py           build_app / launch: the page, its theme, who may serve where
    context.py       what every tab shares: home, job queue, accounts, who is asking
    tabs/            Recipe, Data, Train, Compare, Export
    form.py          the recipe form generated from the schema, and widget values <-> recipe data
    model_picker.py  the base-model chooser above model.name
    rewards.py       GRPO rewards as the form's picker offers them, resolved (and a reward file imported) once per change
    jobs.py          the persistent job queue (SQLite) that runs training subprocesses
    access.py        workspaces and the paths a user may name on a shared server
    accounts.py      logins for a shared studio
    errors.py        the one StudioError -> page error adapter
"""
