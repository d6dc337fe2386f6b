"""Users, authentication and per-user workspaces: no user-given name may reach outside its workspace.

A workspace is `home/workspaces/<user>/` with `recipes/`, `uploads/` and `runs/`. The auth file holds
`user:sha256(password)` lines (optionally `:teacher` for an account that sees every user's jobs); the
environment variable STUDIO_UI_AUTH holds the same lines separated by commas or newlines.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import StudioError

LOCAL_USER = "local"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,127}$")
AUTH_ENV = "STUDIO_UI_AUTH"


@dataclass(frozen=True)
class Account:
    """One login: a name, the sha256 hex digest of its password, and whether it sees all users' work."""

    user: str
    sha256: str
    teacher: bool = False


def check_user(user: str) -> str:
    """Return a valid user name or raise StudioError (letters, digits, `_.-`, no path characters)."""
    if not isinstance(user, str) or not _USER_RE.fullmatch(user) or user in (".", ".."):
        raise StudioError(f"invalid user name {user!r}", where="auth", fix="use letters, digits, '_', '.', '-' (at most 64 characters)")
    return user


def check_name(name: str) -> str:
    """Return a plain file name (no folders, no `..`, no leading dot) or raise StudioError."""
    if not isinstance(name, str) or "/" in name or "\\" in name or ".." in name or not _NAME_RE.fullmatch(name):
        raise StudioError(f"invalid file name {name!r}", where="file name", fix="use a plain name of letters, digits, spaces and '_.+-', without folders or '..'")
    return name


def workspace(home: str | Path, user: str) -> Path:
    """The user's workspace folder (created with recipes/, uploads/, runs/)."""
    root = Path(home) / "workspaces" / check_user(user)
    for sub in ("recipes", "uploads", "runs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def safe_path(root: str | Path, name: str) -> Path:
    """root/name, refusing absolute names, `..` and symlinks that lead outside root."""
    if not isinstance(name, str) or not name or "\0" in name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise StudioError(f"path {name!r} is not allowed", where="file name", fix="use a name inside your workspace")
    root = Path(root).resolve()
    target = (root / name).resolve()
    if target == root:  # `.` or `a/..`-free spellings of the root: never hand out the whole workspace
        raise StudioError(f"path {name!r} names the workspace itself", where="file name", fix="name a file inside your workspace")
    if root not in target.parents:
        raise StudioError(f"path {name!r} leads outside the workspace", where="file name", fix="use a name inside your workspace")
    return target


def inside(root: str | Path, path: str | Path) -> bool:
    """Whether path (after resolving symlinks) lies inside root."""
    root, path = Path(root).resolve(), Path(path).resolve()
    return path == root or root in path.parents


def hash_password(password: str) -> str:
    """The sha256 hex digest stored in auth files."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def load_accounts(auth_file: str | Path | None = None) -> list[Account]:
    """Accounts from the auth file, else from $STUDIO_UI_AUTH; an empty list when neither is set."""
    if auth_file:
        path = Path(auth_file)
        if not path.is_file():
            raise StudioError(f"auth file not found: {path}", where="--auth", fix="write lines of `user:sha256-of-password`")
        text, where = path.read_text(encoding="utf-8"), str(path)
    elif os.environ.get(AUTH_ENV):
        text, where = os.environ[AUTH_ENV].replace(",", "\n"), AUTH_ENV
    else:
        return []
    accounts = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) not in (2, 3) or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[1]) or (len(parts) == 3 and parts[2] != "teacher"):
            raise StudioError("auth line must be `user:sha256hex` or `user:sha256hex:teacher`", where=f"{where}:{number}", fix="hash passwords with `printf %s PASSWORD | sha256sum`")
        accounts.append(Account(check_user(parts[0]), parts[1].lower(), len(parts) == 3))
    if not accounts:
        raise StudioError("the auth source has no accounts", where=where, fix="add at least one `user:sha256hex` line")
    return accounts


def authenticator(accounts: list[Account]):
    """A Gradio auth callable (user, password) -> bool that compares password hashes in constant time."""
    table = {a.user: a.sha256 for a in accounts}

    def check(user: str, password: str) -> bool:
        expected = table.get(user)
        return expected is not None and hmac.compare_digest(expected, hash_password(password))

    return check
