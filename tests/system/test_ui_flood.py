"""A flood on one `studio ui`: 20 logged-in users, one of whom submits 20 jobs; the others' first jobs start before
the flooder's third (fair share, issue 16).

One launched UI with a users file of 20 students and a teacher. Two teachers' jobs hold both slots (the GPU is
busy, which is when order matters); then the flooder submits 20 jobs through the API, and the 19 others one each, all
at once. The teacher's jobs end, and the queue drains. The jobs are stand-ins for `studio train` (a short sleep):
what is under test is the order the queue starts them in, through the real API and the real worker thread.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import helpers
import yaml

from studio.ui.access import workspace
from studio.ui.accounts import hash_password
from studio.ui.jobs import FINAL

USERS = 20
FLOOD = 20
SLOTS = 2


def password(user: str) -> str:
    return f"pw-{user}-long"


def test_a_flood_of_jobs_waits_its_turn(tiny_llama_dir, tiny_data, tmp_path, monkeypatch, record_property):
    from gradio_client import Client

    from studio.ui.app import launch

    home = tmp_path / "home"
    users = [f"user{i:02d}" for i in range(USERS)]
    flooder, others = users[0], users[1:]
    auth = tmp_path / "users"
    holders = [f"teach{k}" for k in range(SLOTS)]  # one job each: a user runs one job at a time on a shared server
    auth.write_text("".join(f"{u}:{hash_password(password(u))}\n" for u in users) + "".join(f"{t}:{hash_password(password(t))}:teacher\n" for t in holders))
    recipes = {}
    for user in [*users, *holders]:  # on a shared server, data and local models must live in the user's workspace
        uploads = workspace(home, user) / "uploads"
        model = shutil.copytree(tiny_llama_dir, uploads / "tiny-llama")
        data = shutil.copy(tiny_data, uploads / "train.jsonl")
        recipes[user] = yaml.safe_dump(helpers.recipe_dict(model, data, tmp_path / "unused", train={"max_steps": 1, "save_steps": 1}))
    release = tmp_path / "release"

    def stand_in(job):
        """The teacher's jobs hold a slot until `release` exists; every other job sleeps 50 ms."""
        if job.user in holders:
            return helpers.hold_until(release)
        return [sys.executable, "-c", "import time; time.sleep(0.05)"]

    monkeypatch.chdir(tmp_path)
    port = helpers.free_port()
    url = f"http://127.0.0.1:{port}/"
    app = launch(port=port, auth_file=auth, home=home, block=False, concurrency=SLOTS)
    queue = app.studio_context.queue
    queue.command = stand_in
    queue.poll_s = 0.05
    queue.set_rules(max_queued=FLOOD)  # the class allows the flooder's 20 (the shared default is 10)
    try:
        clients = {u: Client(url, auth=(u, password(u)), verbose=False) for u in [*users, *holders]}
        holds = [clients[t].predict(recipes[t], "hold", api_name="/start_training") for t in holders]
        deadline = time.time() + 60
        while any(queue.get(h).status != "running" for h in holds):
            assert time.time() < deadline, [queue.get(h) for h in holds]
            time.sleep(0.05)

        submitted: dict[str, list[int]] = {u: [] for u in users}
        errors: list[BaseException] = []
        barrier = threading.Barrier(USERS)

        def submit(user):
            try:
                barrier.wait(timeout=60)
                for k in range(FLOOD if user == flooder else 1):
                    submitted[user].append(clients[user].predict(recipes[user], f"job-{k}", api_name="/start_training"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=submit, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        assert len(submitted[flooder]) == FLOOD and all(len(submitted[u]) == 1 for u in others)
        # While the slots are held, each user sees where their job stands: the flooder's third waits behind everyone's first.
        third = submitted[flooder][2]
        listed = {j["id"]: j for j in clients[flooder].predict(api_name="/list_jobs")}
        assert listed[third]["position"] >= len(others) + 2, listed[third]
        release.touch()
        deadline = time.time() + 300
        while not all(j.status in FINAL for j in queue.jobs()):
            assert time.time() < deadline, [(j.id, j.status) for j in queue.jobs()]
            time.sleep(0.1)
        jobs = {j.id: j for j in queue.jobs()}
        assert all(j.status == "done" for j in jobs.values()), [(j.id, j.status, Path(j.log_path).read_text()[-300:]) for j in jobs.values() if j.status != "done"]
        flood_starts = sorted(jobs[i].started for i in submitted[flooder])
        firsts = {u: jobs[submitted[u][0]].started for u in others}
        late = [u for u, t in firsts.items() if t >= flood_starts[2]]
        order = [j.user for j in sorted(jobs.values(), key=lambda j: j.started)]
        record_property("flooder_jobs_before_last_other_first", sum(t < max(firsts.values()) for t in flood_starts))
        assert not late, f"started after the flooder's third: {late}; start order {order}"
        # Each user's first job started before the flooder's second, even: the flooder had already had a turn.
        assert max(firsts.values()) < flood_starts[1], order
        # And no two jobs of the flooder ran at once (one running job per user on a shared server).
        spans = sorted((jobs[i].started, jobs[i].finished) for i in submitted[flooder])
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    finally:
        release.touch()
        app.close()
        queue.close()
