"""`studio users add|passwd|remove|list`: the accounts of a shared studio, kept in a users file.

The file (default `studio_home()/users`, the one `studio ui` reads without --auth) holds one
`user:scrypt$N$r$p$salt$hash[:teacher]` line per account. Edits rewrite only the line they concern:
comments and every other line stay as they were, and the file is replaced atomically with mode 0600.
`passwd` also replaces a line with an old unsalted hash: that is how an old auth file is migrated.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

from studio.errors import StudioError
from studio.training.rundir import write_atomic
from studio.ui.access import check_user
from studio.ui.accounts import TEACHER, Account, account_line, default_users_file, hash_password, is_old_hash, line_name

MIN_PASSWORD = 8
HEADER = "# Adapter Studio accounts, written by `studio users`: one `user:scrypt$N$r$p$salt$hash[:teacher]` line each.\n"


def run_users(args) -> int:
    """Run the `studio users` subcommand named in args.users_command; returns the exit status."""
    path = Path(args.file) if args.file else default_users_file()
    if args.users_command == "list":
        rows = list_users(path)
        print(json.dumps({"file": str(path), "users": rows}) if args.json else format_users(rows, path))
        return 0
    name = _check_name(args.name)
    if args.users_command == "add":
        _refuse_existing(path, name)
        add_user(path, name, read_password(name), teacher=args.teacher)
        print(f"added {name}{' (teacher)' if args.teacher else ''} to {path}")
    elif args.users_command == "passwd":
        _find(read_lines(path), name, path)  # before asking for a password nobody can use
        set_password(path, name, read_password(name))
        print(f"new password for {name} in {path}")
    else:
        remove_user(path, name)
        print(f"removed {name} from {path}")
    return 0


def add_user(path: Path, name: str, password: str, teacher: bool = False) -> None:
    """Append an account to the users file (created when missing); refuses a name already there."""
    _refuse_existing(path, name)
    lines = read_lines(path) or [HEADER]
    if not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines.append(account_line(Account(name, hash_password(check_password(password)), teacher)) + "\n")
    _write(path, lines)


def set_password(path: Path, name: str, password: str) -> None:
    """Replace an account's password hash, keeping its teacher flag; also replaces an old unsalted line."""
    lines = read_lines(path)
    index = _find(lines, name, path)
    teacher = lines[index].strip().split(":")[-1] == TEACHER
    ending = lines[index][len(lines[index].rstrip("\r\n")):]
    lines[index] = account_line(Account(name, hash_password(check_password(password)), teacher)) + ending
    _write(path, lines)


def remove_user(path: Path, name: str) -> None:
    """Delete an account's line from the users file."""
    lines = read_lines(path)
    del lines[_find(lines, name, path)]
    _write(path, lines)


def list_users(path: Path) -> list[dict]:
    """Every account of the file as {user, teacher, old_hash}; never the hashes themselves."""
    rows = []
    for line in read_lines(path):
        name = line_name(line)
        if name is not None:
            fields = line.strip().split(":")
            rows.append({"user": name, "teacher": fields[-1] == TEACHER and len(fields) > 2, "old_hash": len(fields) > 1 and is_old_hash(fields[1])})
    return rows


def format_users(rows: list[dict], path: Path) -> str:
    """The listing for a terminal: one user a line, teachers and lines that need a new password marked."""
    if not rows:
        return f"no accounts in {path}; add one with `studio users add NAME`"
    notes = [(" (teacher)" if r["teacher"] else "") + (f"  old unsalted hash: run `studio users passwd {r['user']} --file {path}`" if r["old_hash"] else "") for r in rows]
    return "\n".join(f"{r['user']}{note}" for r, note in zip(rows, notes))


def read_password(name: str) -> str:
    """The new password: typed twice without echo on a terminal, else the first line of stdin (for scripts)."""
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != first:
            raise StudioError("the two passwords differ", where="password", fix="type the same password twice")
        return check_password(first)
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise StudioError("no password on stdin", where="stdin", fix=f"run it in a terminal, or pipe one line: printf 'PASSWORD\\n' | studio users ... {name}")
    return check_password(line.rstrip("\r\n"))


def check_password(password: str) -> str:
    """Return the password, or raise StudioError when it is shorter than MIN_PASSWORD characters."""
    if len(password) < MIN_PASSWORD:
        raise StudioError(f"the password is {len(password)} characters long; at least {MIN_PASSWORD} are needed", where="password",
                          fix="choose a longer password (a few words are easy to remember)")
    return password


def read_lines(path: Path) -> list[str]:
    """The users file's lines with their endings; [] when the file does not exist yet."""
    if not path.exists():
        return []
    try:
        return path.read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as exc:
        raise StudioError(f"cannot read the users file: {exc}", where=str(path), fix="check the file's permissions and that it is text") from None


def _write(path: Path, lines: list[str]) -> None:
    """Replace the users file atomically (a reader sees the old file or the new one, never half), mode 0600."""
    try:
        write_atomic(path, "".join(lines))  # its temporary file is created 0600 and keeps that mode when renamed
    except OSError as exc:
        raise StudioError(f"cannot write the users file: {exc}", where=str(path), fix="check that its folder exists and is writable by you") from None


def _find(lines: list[str], name: str, path: Path) -> int:
    """Index of the one line of `name`; StudioError when it is missing or listed twice."""
    found = [i for i, line in enumerate(lines) if line_name(line) == name]
    if not found:
        raise StudioError(f"no account {name!r}", where=str(path), fix=f"add it with `studio users add {name}{_file_arg(path)}` (`studio users list` shows the accounts)")
    if len(found) > 1:
        raise StudioError(f"account {name!r} is listed twice (lines {found[0] + 1} and {found[1] + 1})", where=str(path), fix="delete one of the lines by hand")
    return found[0]


def _refuse_existing(path: Path, name: str) -> None:
    if any(line_name(line) == name for line in read_lines(path)):
        raise StudioError(f"account {name!r} already exists", where=str(path), fix=f"change its password with `studio users passwd {name}{_file_arg(path)}`, or pick another name")


def _file_arg(path: Path) -> str:
    return "" if path == default_users_file() else f" --file {path}"


def _check_name(name: str) -> str:
    try:
        return check_user(name)
    except StudioError as exc:
        raise StudioError(exc.what, where="NAME", fix=exc.fix) from None
