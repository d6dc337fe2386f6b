"""Accounts of a shared studio: salted scrypt hashes, the `studio users` command, login lockout and session expiry."""

import asyncio
import hashlib
import io
import json
import os
import stat
import subprocess
import sys

import gradio as gr
import helpers
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from studio.cli import main
from studio.errors import StudioError
from studio.ui.accounts import AUTH_ENV, Account, authenticator, hash_password, load_accounts, parse_hash, verify_password
from studio.ui.logins import IN_FLIGHT_WAIT_S, LoginGuard, LoginLimiter, SessionTokens

OLD = hashlib.sha256(b"oldpassword").hexdigest()  # the unsalted format older studios wrote


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_ambient_accounts(monkeypatch, tmp_path):
    """Neither the developer's $STUDIO_UI_AUTH nor their users file may leak into these tests."""
    monkeypatch.delenv(AUTH_ENV, raising=False)
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "studio-home"))


# --- hashes --------------------------------------------------------------------------------------------------

def test_hash_round_trip_salt_and_wrong_password():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$16384$8$1$") and ":" not in first
    assert first != second  # a fresh salt each time: equal passwords do not give equal lines
    assert verify_password(first, "correct horse") and verify_password(second, "correct horse")
    assert not verify_password(first, "correct horsE") and not verify_password(first, "")
    n, r, p, salt, key = parse_hash(first)
    assert (n, r, p, len(salt), len(key)) == (16384, 8, 1, 16, 32)


def test_parameters_travel_with_the_line():
    stored = hash_password("pw-12345", n=2**10, r=4, p=2)
    assert stored.startswith("scrypt$1024$4$2$") and verify_password(stored, "pw-12345")
    for broken in ("scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44, "scrypt$16384$8$1$!!$AA==", OLD, "", "scrypt$2097152$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA=="):
        assert not verify_password(broken, "pw-12345")


def test_authenticator_checks_users_and_passwords():
    check = authenticator([Account("ann", hash_password("s3cret-ann")), Account("teach", hash_password("teach-pass"), teacher=True)])
    assert check("ann", "s3cret-ann") and check("teach", "teach-pass")
    assert not check("ann", "teach-pass") and not check("nobody", "s3cret-ann")


# --- loading -------------------------------------------------------------------------------------------------

def test_old_sha256_lines_are_refused_with_the_migration_command(tmp_path):
    users = tmp_path / "users"
    users.write_text(f"# workshop\nann:{hash_password('ann-pass-1')}\nbob:{OLD}:teacher\n")
    with pytest.raises(StudioError) as caught:
        load_accounts(users)
    error = caught.value
    assert "unsalted" in error.what and "'bob'" in error.what
    assert error.where == f"{users}:3"
    assert f"studio users passwd bob --file {users}" in error.fix


@pytest.mark.parametrize("line, message", [
    ("ann", "must be `user:HASH`"),
    ("ann:scrypt$16384$8$1$AAAA$BBBB:teacher:x", "must be `user:HASH`"),
    ("ann:{good}:admin", "third field"),
    ("ann:not-a-hash", "malformed password hash"),
    ("ann:scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==", "malformed password hash"),
    ("ann:scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "power of 2"),
    ("../x:{good}", "invalid user name"),
    ("ann:{good}\nann:{good}", "listed twice"),
])
def test_malformed_lines_name_the_file_and_line(tmp_path, line, message):
    users = tmp_path / "users"
    users.write_text("# header\n" + line.format(good=hash_password("whatever-1")) + "\n")
    with pytest.raises(StudioError, match=message) as caught:
        load_accounts(users)
    assert caught.value.where.startswith(f"{users}:") and caught.value.fix


def test_sources_flag_then_environment_then_the_default_users_file(tmp_path, monkeypatch):
    assert load_accounts(None) == []  # nothing set: the single local user
    default = tmp_path / "studio-home" / "users"
    default.parent.mkdir()
    default.write_text(f"dana:{hash_password('dana-pass')}:teacher\n")
    assert [(a.user, a.teacher) for a in load_accounts(None)] == [("dana", True)]
    monkeypatch.setenv(AUTH_ENV, f"eve:{hash_password('eve-pass-1')},fay:{hash_password('fay-pass-1')}")
    assert [a.user for a in load_accounts(None)] == ["eve", "fay"]
    flag = tmp_path / "flag-users"
    flag.write_text(f"gus:{hash_password('gus-pass-1')}\n")
    assert [a.user for a in load_accounts(flag)] == ["gus"]
    monkeypatch.setenv(AUTH_ENV, f"eve:{OLD}")
    with pytest.raises(StudioError, match="unsalted") as caught:
        load_accounts(None)
    assert caught.value.where == f"{AUTH_ENV}:1" and "studio users add eve" in caught.value.fix
    with pytest.raises(StudioError, match="not found"):
        load_accounts(tmp_path / "missing")


# --- the `studio users` command ------------------------------------------------------------------------------

def _users(monkeypatch, capsys, argv, stdin=""):
    """(exit status, stdout, stderr) of `studio users ...` with stdin as a pipe."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["users", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_users_add_list_passwd_remove(tmp_path, monkeypatch, capsys):
    users = tmp_path / "users"
    file = ["--file", str(users)]
    assert _users(monkeypatch, capsys, ["add", "ann", *file], "ann-password\n")[0] == 0
    assert _users(monkeypatch, capsys, ["add", "teach", "--teacher", *file], "teach-password\n")[0] == 0
    text = users.read_text()
    assert "ann-password" not in text and "teach-password" not in text
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    check = authenticator(load_accounts(users))
    assert check("ann", "ann-password") and check("teach", "teach-password") and not check("ann", "teach-password")
    assert [a.teacher for a in load_accounts(users)] == [False, True]

    code, out, _ = _users(monkeypatch, capsys, ["list", *file])
    assert code == 0 and out.splitlines() == ["ann", "teach (teacher)"] and "scrypt" not in out
    code, out, _ = _users(monkeypatch, capsys, ["list", "--json", *file])
    assert json.loads(out)["users"] == [{"user": "ann", "teacher": False, "old_hash": False}, {"user": "teach", "teacher": True, "old_hash": False}]

    users.write_text("# the workshop's accounts\n" + users.read_text().replace("\nteach:", "\n\n# teachers\nteach:"))
    before = users.read_text()
    assert _users(monkeypatch, capsys, ["passwd", "teach", *file], "new-teach-pw\n")[0] == 0
    after = users.read_text()
    assert "# the workshop's accounts\n" in after and "\n\n# teachers\n" in after
    assert before.splitlines()[:-1] == after.splitlines()[:-1]  # only the teacher's line changed
    assert after.splitlines()[-1].endswith(":teacher") and after.splitlines()[-1] != before.splitlines()[-1]
    check = authenticator(load_accounts(users))
    assert check("teach", "new-teach-pw") and not check("teach", "teach-password")

    assert _users(monkeypatch, capsys, ["remove", "ann", *file])[0] == 0
    assert [a.user for a in load_accounts(users)] == ["teach"] and "# the workshop's accounts" in users.read_text()


def test_users_refuses_bad_input_without_a_traceback(tmp_path, monkeypatch, capsys):
    users = tmp_path / "users"
    file = ["--file", str(users)]
    code, _, err = _users(monkeypatch, capsys, ["add", "ann", *file], "short\n")
    assert code == 2 and "at least 8" in err and not users.exists()
    assert _users(monkeypatch, capsys, ["add", "ann", *file], "ann-password\n")[0] == 0
    before = users.read_text()
    for argv, stdin, message in [
        (["add", "ann"], "other-password\n", "already exists"),
        (["passwd", "bob"], "bob-password\n", "no account 'bob'"),
        (["remove", "bob"], "", "no account 'bob'"),
        (["add", "../ann"], "ann-password\n", "invalid user name"),
        (["add", "cat"], "", "no password on stdin"),
    ]:
        code, _, err = _users(monkeypatch, capsys, [*argv, *file], stdin)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
        assert "passwd" in err or message != "already exists"
    assert users.read_text() == before


def test_users_on_a_terminal_asks_twice_without_echo(tmp_path, monkeypatch, capsys):
    import getpass

    users = tmp_path / "users"
    answers = iter(["typed-password", "typed-passwort"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr(sys, "stdin", terminal)
    assert main(["users", "add", "ann", "--file", str(users)]) == 2
    assert "differ" in capsys.readouterr().err and not users.exists()
    answers = iter(["typed-password", "typed-password"])
    assert main(["users", "add", "ann", "--file", str(users)]) == 0
    assert authenticator(load_accounts(users))("ann", "typed-password")


def test_passwd_migrates_an_old_line_and_keeps_the_rest(tmp_path, monkeypatch, capsys):
    users = tmp_path / "users"
    bob = f"bob:{hash_password('bob-password')}"
    users.write_text(f"# old workshop file\nann:{OLD}:teacher\n{bob}\n")
    out = _users(monkeypatch, capsys, ["list", "--file", str(users)])[1]
    assert "ann (teacher)  old unsalted hash" in out
    with pytest.raises(StudioError, match="unsalted"):
        load_accounts(users)
    assert _users(monkeypatch, capsys, ["passwd", "ann", "--file", str(users)], "ann-new-password\n")[0] == 0
    lines = users.read_text().splitlines()
    assert lines[0] == "# old workshop file" and lines[2] == bob and OLD not in users.read_text()
    accounts = load_accounts(users)
    assert [(a.user, a.teacher) for a in accounts] == [("ann", True), ("bob", False)]
    assert authenticator(accounts)("ann", "ann-new-password")


def test_users_add_through_a_pipe_writes_the_default_file(tmp_path):
    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "home")}
    env.pop(AUTH_ENV, None)
    done = subprocess.run([sys.executable, "-m", "studio.cli", "users", "add", "alice"], input="piped-secret\n", check=False, text=True, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    default = tmp_path / "home" / "users"
    assert "piped-secret" not in default.read_text() + done.stdout + done.stderr
    assert stat.S_IMODE(default.stat().st_mode) == 0o600
    done = subprocess.run([sys.executable, "-m", "studio.cli", "users", "add", "bob"], input="tiny\n", check=False, text=True, capture_output=True, env=env, timeout=120)
    assert done.returncode == 2 and "at least 8" in done.stderr and "Traceback" not in done.stderr


# --- the login limiter ---------------------------------------------------------------------------------------

def _fail(limiter, user, address, times):
    for _ in range(times):
        assert limiter.begin(user, address) == 0
        limiter.end(user, address, False)


def test_a_user_is_locked_after_five_failures_for_a_growing_delay():
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    _fail(limiter, "ann", "10.0.0.1", 4)
    assert limiter.retry_after("ann", "10.0.0.1") == 0
    _fail(limiter, "ann", "10.0.0.1", 1)
    assert limiter.begin("ann", "10.0.0.2") == pytest.approx(60)  # the name is locked from every address
    assert limiter.begin("bob", "10.0.0.1") == 0  # but not the address, nor other names
    limiter.end("bob", "10.0.0.1", True)
    clock.now += 61
    _fail(limiter, "ann", "10.0.0.1", 5)
    assert limiter.retry_after("ann", "10.0.0.1") == pytest.approx(120)  # the second lock lasts twice as long
    clock.now += 121 + 15 * 60  # a quiet window forgets the doubling
    _fail(limiter, "ann", "10.0.0.1", 5)
    assert limiter.retry_after("ann", "10.0.0.1") == pytest.approx(60)


def test_a_success_resets_the_user_and_old_failures_expire():
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    _fail(limiter, "ann", "10.0.0.1", 4)
    limiter.begin("ann", "10.0.0.1")
    limiter.end("ann", "10.0.0.1", True)
    _fail(limiter, "ann", "10.0.0.1", 4)
    assert limiter.retry_after("ann", "10.0.0.1") == 0
    clock.now += 15 * 60  # those four are out of the window now
    _fail(limiter, "ann", "10.0.0.1", 4)
    assert limiter.retry_after("ann", "10.0.0.1") == 0
    _fail(limiter, "ann", "10.0.0.1", 1)
    assert limiter.retry_after("ann", "10.0.0.1") > 0


def test_an_address_is_locked_after_twenty_failures_across_names():
    limiter = LoginLimiter(clock=Clock())
    for name in ("a1", "a2", "a3", "a4", "a5"):
        _fail(limiter, name, "10.0.0.9", 4)  # four each: no name reaches its limit
    assert limiter.begin("a6", "10.0.0.9") == pytest.approx(60)
    assert limiter.begin("a1", "10.0.0.8") == 0  # the same names from elsewhere still get through


def test_attempts_in_flight_count_towards_the_limit():
    limiter = LoginLimiter(clock=Clock())
    for _ in range(5):
        assert limiter.begin("ann", "10.0.0.1") == 0
    assert limiter.begin("ann", "10.0.0.1") == IN_FLIGHT_WAIT_S  # a burst cannot outrun the count
    limiter.end("ann", "10.0.0.1", None)  # not a password check: forgotten
    assert limiter.begin("ann", "10.0.0.1") == 0
    class_logins = [f"student{i}" for i in range(30)]
    assert all(limiter.begin(name, "10.0.0.7") == 0 for name in class_logins)  # a class behind one address, all at once
    for name in class_logins[:2]:
        limiter.end(name, "10.0.0.7", False)  # once some fail, the rest in flight count against the address
    assert limiter.begin("student99", "10.0.0.7") == IN_FLIGHT_WAIT_S


# --- the middleware ------------------------------------------------------------------------------------------

def _login_app(limiter, calls):
    async def login(request):
        form = await request.form()
        calls.append(form["username"])
        return JSONResponse({"success": True}) if form["password"] == "right-password" else JSONResponse({"detail": "Incorrect credentials."}, 400)

    async def other(request):
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/login", login, methods=["POST"]), Route("/other", other, methods=["POST"])],
                     middleware=[Middleware(LoginGuard, limiter=limiter)])


def test_the_guard_refuses_a_locked_name_without_calling_the_app():
    calls = []
    limiter = LoginLimiter(clock=Clock())
    app = _login_app(limiter, calls)

    async def scenario():
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            assert (await client.post("/login", data={"username": "ann", "password": "right-password"})).status_code == 200
            for _ in range(5):
                assert (await client.post("/login", data={"username": " ann ", "password": "wrong"})).status_code == 400
            refused = await client.post("/login", files={"username": (None, "ann"), "password": (None, "right-password")})
            other = await client.post("/other", data={"username": "ann", "password": "wrong"})
            bob = await client.post("/login", data={"username": "bob", "password": "right-password"})
            huge = await client.post("/login", data={"username": "bob", "password": "x" * 100_000})
        return refused, other, bob, huge

    refused, other, bob, huge = asyncio.run(scenario())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    assert refused.json()["retry_after_s"] == 60 and "try again in 60 s" in refused.json()["detail"]
    assert calls == ["ann"] + [" ann "] * 5 + ["bob"]  # the refused login never reached the app; the body was replayed intact
    assert other.status_code == 200 and bob.status_code == 200  # other routes and other names pass
    assert huge.status_code == 413


# --- sessions ------------------------------------------------------------------------------------------------

def test_sessions_end_after_their_lifetime_or_when_idle():
    clock = Clock(0.0)
    tokens = SessionTokens(lifetime_s=12 * 3600, idle_s=2 * 3600, clock=clock)
    tokens["t1"] = "ann"
    tokens["t2"] = "bob"
    for hour in range(1, 12):  # used every hour: idle never reached, but the lifetime is
        clock.now = hour * 3600
        assert tokens.get("t1") == "ann" and "t1" in tokens and tokens["t1"] == "ann"
    assert tokens.get("t2") is None and "t2" not in tokens  # unused for more than 2 hours
    clock.now = 12 * 3600
    assert tokens.get("t1") is None and "t1" not in list(tokens.keys())
    with pytest.raises(KeyError):
        tokens["t1"]
    assert tokens.get(None) is None and None not in tokens
    dict.update(tokens, {"t3": "eve"})  # a token that did not come through `[]=` has no issue time: refused
    assert tokens.get("t3") is None


# --- a real launched UI --------------------------------------------------------------------------------------

def test_launched_ui_locks_out_guessing_and_expires_sessions(tmp_path, monkeypatch):
    from studio.ui.app import launch

    users = tmp_path / "users"
    users.write_text(f"ann:{hash_password('ann-password')}\nbob:{hash_password('bob-password')}\n")
    blocked = []
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: blocked.append(type(self.server_app.tokens)))
    port = helpers.free_port()
    app = launch(port=port, auth_file=users, home=tmp_path / "home", block=True, start_queue=False)
    try:
        assert blocked == [SessionTokens]  # block=True still blocks, after the session table is in place
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/", timeout=30) as http:
            assert http.get("gradio_api/login_check").status_code == 401
            for _ in range(5):
                assert http.post("login", data={"username": "ann", "password": "guess"}).status_code == 400
            locked = http.post("login", data={"username": "ann", "password": "ann-password"})
            assert locked.status_code == 429 and "try again" in locked.json()["detail"]
            assert http.get("gradio_api/login_check").status_code == 401

            assert http.post("login", data={"username": "bob", "password": "bob-password"}).status_code == 200
            assert http.get("gradio_api/login_check").status_code == 200 and http.get("config").status_code == 200
            tokens = app.server_app.tokens
            start = tokens.clock()
            tokens.clock = lambda: start + 3 * 3600  # three hours without a request: past the idle lifetime
            assert http.get("gradio_api/login_check").status_code == 401
            assert http.get("config").status_code == 401
    finally:
        app.close()
        app.studio_context.queue.close()
