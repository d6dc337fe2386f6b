"""The app builds and serves; its API answers through gradio_client; hosts, auth and workspaces are guarded."""

import os
import socket
from types import SimpleNamespace

import gradio as gr
import httpx
import pytest
from helpers import network_audit

from studio.config.shipped import DEMO_RECIPE
from studio.errors import StudioError
from studio.ui.access import check_name, check_user, safe_path, workspace
from studio.ui.accounts import authenticator, hash_password, load_accounts
from studio.ui.app import build_app, check_host, launch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_build_app_returns_blocks_with_the_demo_recipe(tmp_path):
    app = build_app(home=tmp_path)
    assert isinstance(app, gr.Blocks)
    widgets = app.studio_widgets
    assert widgets["model.name"].value == "bundled:smollm2-135m-instruct"
    assert widgets["train.max_steps"].value == "24" and widgets["lora.rank"].value == 16 and widgets["data.max_length"].value == 256
    assert (tmp_path / "jobs.sqlite3").exists()


def test_launch_serves_and_the_api_answers(tmp_path):
    from gradio_client import Client

    port = free_port()
    # A whole UI session (launch, page load, API calls) stays on loopback: nothing leaves the machine.
    with network_audit() as outward:
        app = launch(port=port, home=tmp_path, block=False)
        try:
            page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
            assert page.status_code == 200 and "Adapter Studio" in page.text
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            assert DEMO_RECIPE in client.predict(api_name="/list_recipes")
            assert client.predict("lora: {rank: 16}", api_name="/validate_recipe") == "valid"
            error = client.predict("lora: {rank: 0}", api_name="/validate_recipe")
            assert "lora.rank" in error and "greater than or equal to 1" in error
            memory = client.predict("model: {name: Qwen/Qwen2.5-0.5B-Instruct}", 4.0, api_name="/estimate_memory")
            assert memory["peak_gib"] == pytest.approx(sum(memory["breakdown"].values())) and memory["fits"] in (True, False)
            with pytest.raises(StudioError, match="cannot serve"):  # the same port twice is a StudioError
                launch(port=port, home=tmp_path / "other", block=False)
        finally:
            app.close()
            app.studio_context.queue.close()
    assert outward == []


def test_non_local_host_needs_auth(tmp_path, monkeypatch):
    monkeypatch.delenv("STUDIO_UI_AUTH", raising=False)
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "studio-home"))  # no users file of the developer's
    with pytest.raises(StudioError, match="without authentication"):
        launch(host="0.0.0.0", port=free_port(), home=tmp_path, block=False)
    for host in ("127.0.0.1", "localhost"):
        check_host(host, [])
    auth = tmp_path / "auth.txt"
    auth.write_text(f"# workshop\nann:{hash_password('s3cret')}\nteach:{hash_password('x')}:teacher\n")
    accounts = load_accounts(auth)
    check_host("0.0.0.0", accounts)
    check = authenticator(accounts)
    assert check("ann", "s3cret") and not check("ann", "wrong") and not check("nobody", "s3cret")
    assert [a.teacher for a in accounts] == [False, True]
    monkeypatch.setenv("STUDIO_UI_AUTH", f"bob:{hash_password('pw')}")
    assert load_accounts(None)[0].user == "bob"
    auth.write_text("ann:not-a-hash\n")
    with pytest.raises(StudioError, match="malformed password hash"):
        load_accounts(auth)


def test_workspace_names_cannot_escape(tmp_path):
    root = workspace(tmp_path, "ann")
    assert root == tmp_path / "workspaces" / "ann" and (root / "uploads").is_dir()
    for bad in ("../x", "a/b", "", ".hidden", "x" * 100, "/abs"):
        with pytest.raises(StudioError):
            check_user(bad)
    for bad in ("../x.jsonl", "a/b.jsonl", "..", ".env", "/etc/passwd"):
        with pytest.raises(StudioError):
            check_name(bad)
    assert check_name("my data.jsonl") == "my data.jsonl"
    for bad in ("../../etc/passwd", "/etc/passwd", "uploads/../../x"):
        with pytest.raises(StudioError):
            safe_path(root, bad)
    os.symlink("/etc", root / "uploads" / "link")
    with pytest.raises(StudioError, match="outside"):
        safe_path(root, "uploads/link/passwd")
    assert safe_path(root, "uploads/ok.jsonl") == (root / "uploads" / "ok.jsonl").resolve()


def test_users_see_only_their_own_jobs_and_runs(tmp_path):
    from studio.ui.accounts import Account

    app = build_app(home=tmp_path, accounts=[Account("ann", "0" * 64), Account("bob", "0" * 64), Account("teach", "0" * 64, teacher=True)])
    ctx = app.studio_context
    ann, bob, teach = (SimpleNamespace(username=u) for u in ("ann", "bob", "teach"))
    job = ctx.queue.enqueue("ann", tmp_path / "r.yaml", ctx.workspace(ann) / "runs" / "one")
    assert [j.id for j in ctx.visible_jobs(ann)] == [job.id]
    assert ctx.visible_jobs(bob) == []
    assert [j.id for j in ctx.visible_jobs(teach)] == [job.id]
    assert ctx.may_open(ann, job.run_dir) and not ctx.may_open(bob, job.run_dir)
    assert ctx.user(None) == "local" and ctx.shared


def test_every_named_api_endpoint_answers(finished_job, tiny_raw, tiny_data, tmp_path):
    """gradio_client against a launched app: every api_name at least once (the queue is not started, so a
    queued job waits instead of training; the trained tiny run is copied into the user's workspace)."""
    import shutil
    import zipfile

    import yaml
    from gradio_client import Client

    from studio.config.validate import validate_recipe
    from studio.config.yaml_text import dump_recipe

    run_dir = tmp_path / "home" / "workspaces" / "local" / "runs" / "api-run"
    shutil.copytree(finished_job.run_dir, run_dir, ignore=shutil.ignore_patterns("merged", "merge.json"))
    recipe_yaml = dump_recipe(validate_recipe(tiny_raw))
    port = free_port()
    app = launch(port=port, home=tmp_path / "home", block=False, start_queue=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
        expected = {"/list_recipes", "/resume_job", "/list_jobs", "/validate_recipe", "/estimate_memory", "/inspect_data", "/start_training", "/job_status", "/compare", "/check_forgetting", "/merge", "/adapter_zip", "/merged_zip", "/export", "/report",
                    "/class_rules", "/set_class_rules", "/pause_queue", "/promote_job", "/cancel_job", "/class_recipe", "/set_class_recipe"}
        assert named == expected
        assert DEMO_RECIPE in client.predict(api_name="/list_recipes")
        assert client.predict(recipe_yaml, api_name="/validate_recipe") == "valid"
        assert client.predict(recipe_yaml, 8.0, api_name="/estimate_memory")["fits"] is True

        report = client.predict(str(tiny_data), recipe_yaml, "auto", "", 0, api_name="/inspect_data")
        assert "24 rows" in report["summary"] and "class='eos'" in report["sample_html"] and "<svg" in report["histogram_svg"]

        job_id = client.predict(recipe_yaml, "queued-run", api_name="/start_training")
        assert str(job_id) in str(client.predict(api_name="/list_jobs"))
        status = client.predict(job_id, api_name="/job_status")
        assert status["status"] == "queued" and status["position"] == 1 and status["run_dir"].endswith("/runs/queued-run") and status["metrics"] == []
        with pytest.raises(Exception, match="lora.rank"):
            client.predict(yaml.safe_dump({**tiny_raw, "lora": {**tiny_raw["lora"], "rank": 0}}), "bad", api_name="/start_training")

        base, adapter = client.predict(str(run_dir), "add 1 and 1", 8, api_name="/compare")
        assert base.strip() and adapter.strip()
        parity, merged, size = client.predict(str(run_dir), api_name="/merge")
        assert "✓ passed" in parity and merged == str(run_dir / "merged") and "Merged model size" in size
        def downloaded(result) -> str:  # a file output sent as gr.update(value=..., visible=True) arrives as a dict
            return result["value"] if isinstance(result, dict) else result

        with zipfile.ZipFile(downloaded(client.predict(str(run_dir), api_name="/adapter_zip"))) as archive:
            assert "adapter_config.json" in archive.namelist()
        with zipfile.ZipFile(downloaded(client.predict(str(run_dir), api_name="/merged_zip"))) as archive:
            assert "merged/model.safetensors" in archive.namelist()
        assert (tmp_path / "home" / "workspaces" / "local" / "exports" / "api-run-merged.zip").exists()
        with pytest.raises(Exception, match="pick one of your runs"):  # a run outside the user's workspace
            client.predict(finished_job.run_dir, api_name="/merge")
        frame, page = client.predict(str(run_dir), api_name="/report")
        assert "id='report-frame'" in frame and "sandbox" in frame and (run_dir / "report.html").exists()
        assert "<h2>Serving consistency</h2>" in open(downloaded(page), encoding="utf-8").read()
        with pytest.raises(Exception, match="pick one of your runs"):
            client.predict(finished_job.run_dir, api_name="/report")
    finally:
        app.close()
        app.studio_context.queue.close()
