"""Security: workspace paths cannot escape, users cannot see each other's work, a public bind needs auth,
and the offline path (recipe, data, training, merge) opens no network connection."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import helpers
import pytest

from studio.cli import main
from studio.errors import StudioError
from studio.ui.access import check_name, check_user, inside, safe_path, workspace
from studio.ui.accounts import Account, hash_password

ESCAPES = [
    "../x", "../../etc/passwd", "a/../../x", "uploads/../../bob/uploads/secret.jsonl", "/etc/passwd", "//etc/passwd",
    "..", "../", "a/b/../../../x",
]
ENCODED = ["%2e%2e%2f", "%2e%2e/x", "..%2fx", "%2E%2E%2Fbob", "..%5cx", "%252e%252e%252f", "\u2024\u2024/x"]
BAD_NAMES = ESCAPES + ENCODED + ["", ".", ".hidden", "a/b", "a\\b", "a\0b", "x" * 300, "-rf", "~"]


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "home"
    for user in ("alice", "bob"):
        space = workspace(home, user)
        (space / "uploads" / "secret.jsonl").write_text(f'{{"text": "{user} private"}}\n')
        run = space / "runs" / f"{user}-run"
        run.mkdir()
        (run / "recipe.yaml").write_text("method: lora\n")
    return home


@pytest.mark.parametrize("name", ESCAPES)
def test_safe_path_refuses_escapes(name, home):
    root = workspace(home, "alice")
    with pytest.raises(StudioError) as info:
        safe_path(root, name)
    assert info.value.fix


@pytest.mark.parametrize("name", ENCODED)
def test_url_encoded_names_stay_literal_inside_the_workspace(name, home):
    # Nothing decodes %2e%2e%2f: it is a (strange) file name inside the workspace, never a way out of it.
    root = workspace(home, "alice")
    try:
        target = safe_path(root, name)
    except StudioError:
        return
    assert inside(root, target) and target != root.parent


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:20]))
def test_check_name_refuses_everything_but_plain_names(name):
    with pytest.raises(StudioError):
        check_name(name)


@pytest.mark.parametrize("name", ["data.jsonl", "my recipe.yaml", "run-1", "a+b_c.csv"])
def test_check_name_accepts_plain_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("user", ["../bob", "bob/..", "", ".", "..", "/root", "a b", "a\0", "x" * 65, "%2e%2e"])
def test_check_user_refuses_path_like_names(user):
    with pytest.raises(StudioError):
        check_user(user)


def test_trailing_newline_is_refused_in_user_and_file_names():
    with pytest.raises(StudioError):
        check_user("bob\n")
    with pytest.raises(StudioError):
        check_name("data.jsonl\n")


def test_symlink_out_of_the_workspace_is_refused(home, tmp_path):
    alice, bob = workspace(home, "alice"), workspace(home, "bob")
    (alice / "uploads" / "to-bob").symlink_to(bob / "uploads")
    (alice / "uploads" / "bob-secret.jsonl").symlink_to(bob / "uploads" / "secret.jsonl")
    (alice / "uploads" / "etc").symlink_to("/etc")
    for name in ("uploads/to-bob/secret.jsonl", "uploads/bob-secret.jsonl", "uploads/etc/passwd", "uploads/to-bob"):
        with pytest.raises(StudioError, match="outside the workspace"):
            safe_path(alice, name)
    assert not inside(alice, alice / "uploads" / "bob-secret.jsonl")


def test_very_long_name_stays_inside(home):
    root = workspace(home, "alice")
    target = safe_path(root, "x" * 5000)
    assert inside(root, target)


def test_nul_byte_in_a_path_is_a_studio_error(home):
    with pytest.raises(StudioError):
        safe_path(workspace(home, "alice"), "a\0b")


def _context(home, tmp_path):
    from studio.ui.context import Context
    from studio.ui.jobs import JobQueue

    accounts = [Account("alice", hash_password("a")), Account("bob", hash_password("b")), Account("teach", hash_password("t"), teacher=True)]
    return Context(home=home, queue=JobQueue(home), accounts=accounts)


def _as(user):
    return SimpleNamespace(username=user)


def test_two_users_cannot_see_each_others_runs_or_jobs(home, tmp_path):
    ctx = _context(home, tmp_path)
    try:
        alice_run = str((workspace(home, "alice") / "runs" / "alice-run").resolve())
        bob_run = str((workspace(home, "bob") / "runs" / "bob-run").resolve())
        ctx.queue.enqueue("alice", workspace(home, "alice") / "recipes" / "r.yaml", alice_run)
        ctx.queue.enqueue("bob", workspace(home, "bob") / "recipes" / "r.yaml", bob_run)
        assert alice_run in ctx.run_dirs(_as("alice")) and bob_run not in ctx.run_dirs(_as("alice"))
        assert bob_run in ctx.run_dirs(_as("bob")) and alice_run not in ctx.run_dirs(_as("bob"))
        assert ctx.may_open(_as("alice"), alice_run) and not ctx.may_open(_as("alice"), bob_run)
        assert not ctx.may_open(_as("bob"), alice_run)
        for sneaky in (f"{alice_run}/../../../bob/runs/bob-run", bob_run + "/", "", str(Path(bob_run).parent)):
            assert not ctx.may_open(_as("alice"), sneaky)
        assert {j.user for j in ctx.visible_jobs(_as("alice"))} == {"alice"}
        assert {j.user for j in ctx.visible_jobs(_as("bob"))} == {"bob"}
        assert {j.user for j in ctx.visible_jobs(_as("teach"))} == {"alice", "bob"}
        assert ctx.workspace(_as("alice")) != ctx.workspace(_as("bob"))
        with pytest.raises(StudioError):
            ctx.workspace(_as("../bob"))
        # A user name cannot be used to reach another workspace through the file API either.
        with pytest.raises(StudioError):
            safe_path(ctx.workspace(_as("alice")), "../bob/uploads/secret.jsonl")
    finally:
        ctx.queue.close()


def test_dataset_pick_outside_the_workspace_is_refused_on_a_shared_server(home, tmp_path):
    from studio.ui.tabs.data import check_pick

    ctx = _context(home, tmp_path)
    try:
        mine = workspace(home, "alice") / "uploads" / "secret.jsonl"
        theirs = workspace(home, "bob") / "uploads" / "secret.jsonl"
        assert check_pick(ctx, _as("alice"), str(mine)) == str(mine)
        for path in (str(theirs), f"{mine.parent}/../../bob/uploads/secret.jsonl", "/etc/passwd"):
            with pytest.raises(StudioError, match="outside your workspace"):
                check_pick(ctx, _as("alice"), path)
    finally:
        ctx.queue.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "0", "example.org"])
def test_ui_refuses_a_public_bind_without_auth(host, monkeypatch, tmp_path, capsys):
    import gradio as gr

    import studio.ui.app as app

    monkeypatch.delenv("STUDIO_UI_AUTH", raising=False)
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "studio-home"))  # no users file of the developer's

    def never(*a, **k):
        raise AssertionError("the UI started serving without authentication")

    monkeypatch.setattr(gr.Blocks, "launch", never)
    monkeypatch.setattr(app, "build_app", never)
    assert main(["ui", "--host", host, "--home", str(tmp_path / "ui")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing to serve on {host} without authentication") and "--auth" in err and "Traceback" not in err
    assert not (tmp_path / "ui").exists()


def test_ui_refuses_an_auth_file_without_accounts(monkeypatch, tmp_path, capsys):
    import studio.ui.app as app

    monkeypatch.delenv("STUDIO_UI_AUTH", raising=False)
    monkeypatch.setattr(app, "build_app", lambda *a, **k: pytest.fail("reached build_app"))
    auth = tmp_path / "auth"
    auth.write_text("# nobody\n")
    assert main(["ui", "--host", "0.0.0.0", "--auth", str(auth)]) == 2
    assert "no accounts" in capsys.readouterr().err


# --- offline ------------------------------------------------------------------------------------------------

def test_offline_path_opens_no_connection(monkeypatch, tiny_llama_dir, tiny_data, tmp_path):
    """load_recipe, build data, train two steps, merge: no socket connects anywhere but loopback."""
    from studio.config.load import load_recipe
    from studio.data import build_data
    from studio.export.merge import merge
    from studio.modeling.loading import load_tokenizer
    from studio.training.train import train

    blocked = []
    real_connect, real_create = socket.socket.connect, socket.create_connection

    def connect(self, address, *a, **k):
        if not helpers.is_loopback(address):
            blocked.append(address)
            raise OSError(f"test blocks network connections: {address}")
        return real_connect(self, address, *a, **k)

    def create_connection(address, *a, **k):
        if not helpers.is_loopback(address):
            blocked.append(address)
            raise OSError(f"test blocks network connections: {address}")
        return real_create(address, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    with helpers.network_audit() as outward:
        raw = helpers.recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "run", train={"max_steps": 2, "save_steps": 2})
        path = tmp_path / "offline.yaml"
        import yaml

        path.write_text(yaml.safe_dump(raw))
        recipe = load_recipe(path)
        built = build_data(recipe, load_tokenizer(tiny_llama_dir, recipe))
        assert built.train
        result = train(recipe, progress=False)
        merged = merge(result.run_dir)
        assert merged.merged_dir.exists()
    # outward: non-loopback connects, DNS lookups, urllib requests and datagrams seen by the audit hook.
    assert blocked == [] and outward == [], (blocked, outward)
