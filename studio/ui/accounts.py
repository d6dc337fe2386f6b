"""Logins for a shared studio: accounts from a users file (or $STUDIO_UI_AUTH) and the check Gradio calls.

A users file holds one `user:scrypt$N$r$p$<salt>$<hash>` line per account (salt and hash in base64), with
`:teacher` appended for an account that sees every user's jobs; `studio users add` writes it. The scrypt
parameters travel in each line, so they can be raised later without breaking older lines.
STUDIO_UI_AUTH holds the same lines separated by commas or newlines.

Where accounts come from, first match wins: `--auth FILE`, then $STUDIO_UI_AUTH, then the default users
file (`studio_home()/users`) when it exists; with none of them the studio serves one local user.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from studio.config.home import studio_home
from studio.errors import StudioError
from studio.ui.access import check_user

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
AUTH_ENV = "STUDIO_UI_AUTH"
USERS_FILE = "users"  # in the studio home: the file `studio users` edits and `studio ui` reads by default
TEACHER = "teacher"

# 16 MiB and about 50 ms per hash on one core: slow for a guesser with a stolen file, fast enough for a
# class logging in at once. Raise N here; lines written with smaller values keep verifying.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
# Parameters a line may ask for: bounded, so a mistyped file cannot make one login take minutes or gigabytes.
MAX_N, MAX_R, MAX_P, MAX_MEMORY = 2**20, 32, 16, 2**30
_B64 = r"[A-Za-z0-9+/]+={0,2}"
_SCRYPT_RE = re.compile(rf"scrypt\$(\d+)\$(\d+)\$(\d+)\$({_B64})\$({_B64})")
_OLD_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Account:
    """One login: a name, its salted password hash (`scrypt$N$r$p$salt$hash`), and whether it sees all users' work."""

    user: str
    password_hash: str
    teacher: bool = False


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The salted scrypt string stored in users files; a fresh random salt each call."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, n, r, p, KEY_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


def verify_password(stored: str, password: str) -> bool:
    """Whether password matches a stored scrypt string, compared in constant time; False for a malformed string."""
    try:
        n, r, p, salt, key = parse_hash(stored)
    except ValueError:
        return False
    return hmac.compare_digest(key, _scrypt(password, salt, n, r, p, len(key)))


def parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """(N, r, p, salt, key) of a stored scrypt string; ValueError saying what is wrong with it."""
    match = _SCRYPT_RE.fullmatch(stored)
    if not match:
        raise ValueError("expected scrypt$N$r$p$SALT$HASH with base64 salt and hash")
    n, r, p = (int(v) for v in match.group(1, 2, 3))
    if n < 2 or n & (n - 1) or n > MAX_N:
        raise ValueError(f"scrypt N must be a power of 2 between 2 and {MAX_N}, got {n}")
    if not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
        raise ValueError(f"scrypt r must be 1..{MAX_R} and p 1..{MAX_P}, got r={r} p={p}")
    if _memory(n, r, p) > MAX_MEMORY:
        raise ValueError(f"scrypt N={n} r={r} p={p} would need more than {MAX_MEMORY >> 20} MiB per login")
    try:
        salt, key = (base64.b64decode(v, validate=True) for v in match.group(4, 5))
    except binascii.Error as exc:
        raise ValueError(f"salt or hash is not valid base64 ({exc})") from None
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("salt must be at least 8 bytes and hash at least 16")
    return n, r, p, salt, key


def is_old_hash(field: str) -> bool:
    """Whether a password field is the unsalted sha256 hex digest older studios wrote (refused for serving)."""
    return bool(_OLD_SHA256_RE.fullmatch(field))


def line_name(line: str) -> str | None:
    """The user name an account line starts with; None for blank lines and comments."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    return line.split(":", 1)[0]


def account_line(account: Account) -> str:
    """The users-file line for an account (without the newline)."""
    return f"{account.user}:{account.password_hash}" + (f":{TEACHER}" if account.teacher else "")


def parse_account(line: str, where: str, fix_old: str) -> Account:
    """One account line as an Account; StudioError at `where` for a malformed line or an old unsalted hash.

    `fix_old` is the migration advice given for an old line (it differs between a file and $STUDIO_UI_AUTH).
    """
    parts = line.strip().split(":")
    if len(parts) == 3 and parts[2] != TEACHER:
        raise StudioError(f"the third field of an account line may only be `{TEACHER}`, got {parts[2]!r}", where=where,
                          fix="write `user:HASH` or `user:HASH:teacher` (`studio users add NAME [--teacher]` writes them)")
    if len(parts) not in (2, 3):
        raise StudioError("an account line must be `user:HASH` or `user:HASH:teacher`", where=where,
                          fix="write lines with `studio users add NAME [--teacher]` rather than by hand")
    try:
        user = check_user(parts[0])
    except StudioError as exc:
        raise StudioError(exc.what, where=where, fix=exc.fix) from None
    if is_old_hash(parts[1]):
        raise StudioError(f"account {user!r} has an old unsalted sha256 password hash, which this studio no longer accepts",
                          where=where, fix=fix_old.format(user=user))
    try:
        parse_hash(parts[1])
    except ValueError as exc:
        raise StudioError(f"account {user!r} has a malformed password hash: {exc}", where=where,
                          fix=f"set its password again with `studio users passwd {user}`") from None
    return Account(user, parts[1], len(parts) == 3)


def default_users_file() -> Path:
    """The users file `studio users` writes and `studio ui` reads without --auth: studio_home()/users."""
    return studio_home() / USERS_FILE


def load_accounts(auth_file: str | Path | None = None) -> list[Account]:
    """Accounts from the auth file, else $STUDIO_UI_AUTH, else the default users file; an empty list when none is set.

    Refuses (StudioError naming the line) malformed lines, names listed twice and old unsalted sha256 lines.
    """
    source = _auth_source(auth_file)
    if source is None:
        return []
    text, where, fix_old = source
    accounts, lines = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if line_name(line) is None:
            continue
        account = parse_account(line, f"{where}:{number}", fix_old)
        if account.user in lines:
            raise StudioError(f"account {account.user!r} is listed twice (lines {lines[account.user]} and {number})",
                              where=f"{where}:{number}", fix="keep one line per user")
        lines[account.user] = number
        accounts.append(account)
    if not accounts:
        raise StudioError("the auth source has no accounts", where=where, fix="add one with `studio users add NAME`")
    return accounts


def _auth_source(auth_file: str | Path | None) -> tuple[str, str, str] | None:
    """(text, where, migration advice) of the first account source that is set, or None."""
    if auth_file:
        path = Path(auth_file)
        if not path.is_file():
            raise StudioError(f"auth file not found: {path}", where="--auth", fix="write it with `studio users add NAME --file FILE`")
        return _read(path), str(path), f"run `studio users passwd {{user}} --file {path}` for each such user"
    if os.environ.get(AUTH_ENV):
        advice = ("write a users file with `studio users add {user} --file FILE` (one per user) and pass it with --auth FILE, "
                  f"or put its lines in {AUTH_ENV}")
        return os.environ[AUTH_ENV].replace(",", "\n"), AUTH_ENV, advice
    path = default_users_file()
    if path.is_file():
        return _read(path), str(path), f"run `studio users passwd {{user}} --file {path}` for each such user"
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudioError(f"cannot read the users file: {exc}", where=str(path), fix="check the file's permissions and that it is text") from None


def authenticator(accounts: list[Account]):
    """A Gradio auth callable (user, password) -> bool checking the salted hash in constant time.

    An unknown user costs one hash as well (against a dummy), so timing does not tell which names exist.
    """
    table = {a.user: a.password_hash for a in accounts}
    dummy = hash_password(secrets.token_hex(16))

    def check(user: str, password: str) -> bool:
        stored = table.get(user)
        matches = verify_password(stored or dummy, password)
        return stored is not None and matches

    return check


def _memory(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2)  # scrypt's working memory in bytes


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # The library refuses more than `maxmem` (32 MiB unless told), so allow what these parameters need.
    data = password.encode("utf-8", "surrogatepass")  # a terminal's undecodable bytes hash instead of crashing
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=_memory(n, r, p) + 2**20)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
