"""Logins for a shared studio: accounts from an auth file (or $STUDIO_UI_AUTH) and the check Gradio calls.

The auth file holds `user:sha256(password)` lines (optionally `:teacher` for an account that sees every
user's jobs); STUDIO_UI_AUTH holds the same lines separated by commas or newlines.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

from studio.errors import StudioError
from studio.ui.access import check_user

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
AUTH_ENV = "STUDIO_UI_AUTH"


@dataclass(frozen=True)
class Account:
    """One login: a name, the sha256 hex digest of its password, and whether it sees all users' work."""

    user: str
    sha256: str
    teacher: bool = False


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
