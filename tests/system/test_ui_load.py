"""Load on one `studio ui` (issue 6, "Load"): 20 logged-in users submit 50 real training jobs within seconds.

One launched UI (auth file of 20 users, queue concurrency 2 because this machine has 2 CPU cores and each
tiny `studio train` subprocess costs ~10 CPU-seconds, mostly imports). 20 gradio_client clients, one per
user, in threads, submit 50 one-step jobs on the tiny Llama. Then:

- every job ran exactly once: the queue launched each id once, each ended `done`, each log holds one
  "trained 1 steps", and each run directory holds one adapter and the metrics of one run;
- in queue order: job ids follow enqueue order, start times follow job ids, never more than 2 at once;
- every run directory is complete (recipe.yaml, env.json, data.json, metrics.jsonl, adapter/, README.md);
- each user sees only their own jobs (/list_jobs) and can neither read (/job_status) nor resume another's;
- the UI stays responsive with a full queue: a logged-in page load (GET / and /config) takes under 2 s, and
  the real page in headless Chromium (when /usr/bin/chromium exists) becomes usable; its time is recorded next
  to the same load with an empty queue. The browser runs on this same 2-core machine here, so its rendering
  competes with the two trainings and with anything else on the box; it is bounded by BROWSER_LIMIT_S.

The figures (submission time, drain time, jobs/min, page-load times) go to record_property, to the
assertion messages and to one printed summary line (`pytest -rA` shows it).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import helpers
import httpx
import pytest
import yaml

from studio.ui.access import workspace
from studio.ui.accounts import hash_password
from studio.ui.jobs import FINAL

USERS = 20
JOBS = 50
CONCURRENCY = 2
PAGE_LOAD_LIMIT_S = 2.0  # issue 6: a page load with a full queue stays under 2 s (the server's part: GET / and /config)
BROWSER_LIMIT_S = 10.0  # the page usable in a headless Chromium on this same 2-core box (its rendering competes with 2 trainings)
DRAIN_TIMEOUT_S = 900.0  # 50 jobs x ~10 CPU-seconds at concurrency 2: ~4 min on 2 free cores, ~8 min when the box is shared
RUN_FILES = ("recipe.yaml", "env.json", "data.json", "metrics.jsonl", "README.md", "adapter/adapter_model.safetensors", "adapter/adapter_config.json")


def password(user: str) -> str:
    return f"pw-{user}"


def timed_page_load(url: str, user: str) -> float:
    """Seconds for a logged-in HTTP page load: GET / and GET /config (the login itself is not counted)."""
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("login", data={"username": user, "password": password(user)}).status_code == 200
        start = time.perf_counter()
        page, config = http.get(""), http.get("config")
        elapsed = time.perf_counter() - start
    assert page.status_code == 200 and "Adapter Studio" in page.text, page.status_code
    assert config.status_code == 200 and config.json()["components"]
    return elapsed


def timed_browser_loads(url: str, user: str, profile: Path, times: int = 2) -> list[float]:
    """Seconds from navigation until the page is usable in headless Chromium (already logged in; the browser is warm)."""
    from playwright.sync_api import expect, sync_playwright

    loads = []
    with sync_playwright() as pw:
        context = helpers.launch_chromium(pw, profile)
        try:
            assert context.request.post(url + "login", form={"username": user, "password": password(user)}).ok
            page = context.new_page()
            page.goto(url + "config", wait_until="load")  # warm the browser process itself, not the measurement
            for _ in range(times):
                start = time.perf_counter()
                page.goto(url, wait_until="load")
                # Loaded = the title shows, the form holds the demo recipe and the page's load events have validated it.
                expect(page.locator("#studio-title")).to_be_visible(timeout=30_000)
                expect(page.locator("#field-model-name textarea, #field-model-name input").first).to_have_value("bundled:smollm2-135m-instruct", timeout=30_000)
                expect(page.locator("#recipe-status")).to_contain_text("valid", timeout=30_000)
                loads.append(time.perf_counter() - start)
        finally:
            context.close()
    return loads



def timed_threads(target, users, timeout: float = 120) -> float:
    """Run `target(user)` in one thread per user, all at once; seconds until every thread has finished."""
    start = time.perf_counter()
    threads = [threading.Thread(target=target, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return time.perf_counter() - start

@pytest.mark.load
def test_twenty_users_fifty_jobs(tiny_llama_dir, tiny_data, tmp_path, monkeypatch, record_property):
    from gradio_client import Client

    from studio.ui.app import launch

    home = tmp_path / "home"
    users = [f"user{i:02d}" for i in range(USERS)]
    auth = tmp_path / "auth.txt"
    auth.write_text("".join(f"{u}:{hash_password(password(u))}\n" for u in users))
    recipes = {}
    for user in users:  # on a shared server, data and local models must live in the user's workspace
        uploads = workspace(home, user) / "uploads"
        model = shutil.copytree(tiny_llama_dir, uploads / "tiny-llama")
        data = shutil.copy(tiny_data, uploads / "train.jsonl")
        recipes[user] = yaml.safe_dump(helpers.recipe_dict(model, data, tmp_path / "unused", train={"max_steps": 1, "save_steps": 1}))
    monkeypatch.chdir(tmp_path)  # jobs inherit the cwd; keep the checkout's kernels/ folder off their sys.path

    port = helpers.free_port()
    url = f"http://127.0.0.1:{port}/"
    app = launch(port=port, auth_file=auth, home=home, block=False, concurrency=CONCURRENCY)
    queue = app.studio_context.queue
    launches: Counter = Counter()
    launch_job = queue._launch

    def counting_launch(job):  # every start of a job goes through here: count them
        launches[job.id] += 1
        return launch_job(job)

    queue._launch = counting_launch
    figures: dict[str, float] = {}
    try:
        # 20 users log in at once.
        clients: dict[str, Client] = {}
        errors: list[BaseException] = []

        def login(user):
            try:
                clients[user] = Client(url, auth=(user, password(user)), verbose=False)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        figures["login_s"] = timed_threads(login, users)
        assert not errors and len(clients) == USERS, errors

        if helpers.CHROMIUM.exists():  # the same page load with an empty queue, for comparison
            figures["page_browser_idle_s"] = max(timed_browser_loads(url, users[3], tmp_path / "chromium-profile"))

        # ... and submit 50 jobs: users 0-9 three each, users 10-19 two each, all threads released together.
        share = {u: (3 if i < JOBS - 2 * USERS else 2) for i, u in enumerate(users)}
        assert sum(share.values()) == JOBS
        submitted: dict[str, list[int]] = {u: [] for u in users}
        barrier = threading.Barrier(USERS)

        def submit(user):
            try:
                barrier.wait(timeout=60)
                for k in range(share[user]):
                    submitted[user].append(clients[user].predict(recipes[user], f"load-{k}", api_name="/start_training"))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        figures["submit_s"] = timed_threads(submit, users)
        submit_done = time.time()
        assert not errors, errors
        ids = sorted(j for js in submitted.values() for j in js)
        assert len(ids) == JOBS == len(set(ids)), submitted

        # The queue is full: time page loads while 2 jobs train and the rest wait.
        waiting = sum(j.status == "queued" for j in queue.jobs())
        http_loads = [timed_page_load(url, users[i]) for i in (0, 7, 19)]
        figures["page_http_s"] = max(http_loads)
        if helpers.CHROMIUM.exists():
            browser_loads = timed_browser_loads(url, users[3], tmp_path / "chromium-profile", times=3)
            figures["page_browser_s"] = max(browser_loads)
        figures["queued_during_page_load"] = min(waiting, sum(j.status == "queued" for j in queue.jobs()))

        # Isolation, while the queue is still full: lists, status and resume, across users.
        for user in users:
            listed = clients[user].predict(api_name="/list_jobs")
            assert sorted(j["id"] for j in listed) == sorted(submitted[user]) and {j["user"] for j in listed} == {user}
        for user, other in zip(users, users[1:] + users[:1]):
            for endpoint in ("/job_status", "/resume_job"):
                with pytest.raises(Exception, match="not your job"):
                    clients[user].predict(submitted[other][0], api_name=endpoint)
            status = clients[user].predict(submitted[user][-1], api_name="/job_status")
            assert f"/workspaces/{user}/runs/" in status["run_dir"]

        # Drain: wait for every job to end, sampling the API's latency now and then.
        status_latency = []
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            jobs = queue.jobs()
            if all(j.status in FINAL for j in jobs):
                break
            user = users[len(status_latency) % USERS]
            t0 = time.perf_counter()
            clients[user].predict(submitted[user][0], api_name="/job_status")
            status_latency.append(time.perf_counter() - t0)
            time.sleep(2.0)
        jobs = {j.id: j for j in queue.jobs()}
        first_start = min(j.started for j in jobs.values() if j.started)
        last_end = max((j.finished or 0) for j in jobs.values())
        figures["drain_s"] = last_end - first_start
        figures["end_to_end_s"] = last_end - (submit_done - figures["submit_s"])
        figures["jobs_per_min"] = JOBS / figures["drain_s"] * 60 if figures["drain_s"] > 0 else 0.0
        figures["status_p50_s"] = statistics.median(status_latency) if status_latency else 0.0
        figures["status_max_s"] = max(status_latency, default=0.0)
        figures["job_wall_mean_s"] = statistics.mean(j.finished - j.started for j in jobs.values() if j.started and j.finished)
        summary = ("ui load: {n} jobs from {u} users (concurrency {c}); logins {login_s:.1f} s; submission {submit_s:.2f} s; "
                   "page load with {queued_during_page_load:.0f} queued: http {page_http_s:.3f} s, browser {browser} s (empty queue {browser_idle} s); "
                   "drain {drain_s:.0f} s ({jobs_per_min:.1f} jobs/min, {job_wall_mean_s:.1f} s a job), end to end {end_to_end_s:.0f} s; "
                   "job_status p50 {status_p50_s:.3f} s max {status_max_s:.3f} s; load average {load:.1f}").format(
            n=JOBS, u=USERS, c=CONCURRENCY, load=os.getloadavg()[0], browser=f"{figures['page_browser_s']:.2f}" if "page_browser_s" in figures else "n/a",
            browser_idle=f"{figures['page_browser_idle_s']:.2f}" if "page_browser_idle_s" in figures else "n/a", **figures)
        for key, value in figures.items():
            record_property(key, round(value, 3))
        print("\n" + summary)

        assert figures["submit_s"] < 30, summary
        assert all(j.status in FINAL for j in jobs.values()), f"not drained in {DRAIN_TIMEOUT_S}s: {Counter(j.status for j in jobs.values())}; {summary}"
        assert figures["page_http_s"] < PAGE_LOAD_LIMIT_S, f"{http_loads}; {summary}"
        if "page_browser_s" in figures:
            assert figures["page_browser_s"] < BROWSER_LIMIT_S, f"{browser_loads}; {summary}"
        assert figures["queued_during_page_load"] >= JOBS - 2 * CONCURRENCY - 2, summary

        # Exactly once.
        assert sorted(jobs) == ids
        failed = {j.id: Path(j.log_path).read_text()[-1500:] for j in jobs.values() if j.status != "done"}
        assert not failed, failed
        assert launches == Counter({i: 1 for i in ids}), f"jobs launched more or less than once: {launches}"
        for job in jobs.values():
            assert Path(job.log_path).read_text().count("trained 1 steps") == 1, job

        # In queue order: enqueue order == id order, start order == id order, never more than CONCURRENCY at once.
        order = [jobs[i] for i in ids]
        assert [j.created for j in order] == sorted(j.created for j in order)
        assert [j.started for j in order] == sorted(j.started for j in order), [(j.id, j.started) for j in order]
        assert all(j.created <= j.started <= j.finished for j in order)
        events = sorted([(j.started, 1) for j in order] + [(j.finished, -1) for j in order])
        running = peak = 0
        for _, delta in events:
            running += delta
            peak = max(peak, running)
        assert peak <= CONCURRENCY, f"{peak} jobs ran at once"

        # Complete run directories, each with one adapter and the metrics of one run, in the owner's workspace.
        owner = {i: u for u, js in submitted.items() for i in js}
        for job in order:
            run_dir = Path(job.run_dir)
            assert job.user == owner[job.id] and run_dir.parent == (home / "workspaces" / job.user / "runs").resolve()
            missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
            assert not missing, f"{run_dir} lacks {missing}"
            assert len(list(run_dir.rglob("adapter_model.safetensors"))) == 1 + len(list((run_dir / "checkpoints").glob("checkpoint-*")))
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
            assert [r["step"] for r in records if "train_loss" in r] == [1], records
            assert len(list(run_dir.glob("*.tmp*"))) == 0
            assert json.loads((run_dir / "summary.json").read_text())["steps"] == 1
    finally:
        app.close()
        queue.close()
        for job in queue.jobs():  # never leave a training behind (only the processes this queue started)
            proc = queue._procs.get(job.id)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
