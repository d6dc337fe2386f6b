"""The Gradio studio: a thin shell that builds recipes, queues `studio train` subprocesses and reads run directories.

    app.py           build_app / launch: the page, its theme, who may serve where
    context.py       what every tab shares: home, job queue, accounts, who is asking
    tabs/            Recipe, Data, Train, Compare, Export, and Teacher (teachers only)
    form.py          the recipe form generated from the schema, and widget values <-> recipe data
    model_picker.py  the base-model chooser above model.name
    rewards.py       GRPO rewards as the form's picker offers them, resolved (and a reward file imported) once per change
    jobs.py          the persistent job queue that runs training subprocesses; its database in job_table.py
    schedule.py      which queued job starts next (fair share across users), eta.py when each should start
    packing.py       how many run at once: by GPU memory, by CPU cores, or a fixed number
    processes.py     whether a live process is the job the queue started (pid, start time, token)
    rules.py         the class rules (pause, per-user limits, step and time caps); classroom.py the class recipe
    access.py        workspaces and the paths a user may name on a shared server
    accounts.py      logins for a shared studio (scrypt hashes); logins.py their rate limit and session expiry
    errors.py        the one StudioError -> page error adapter
"""
