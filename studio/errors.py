"""The one error type a user sees: what went wrong, where, and what to do about it."""

from __future__ import annotations


class StudioError(Exception):
    """A failure the user can fix. The CLI prints it without a traceback and exits non-zero.

    `what` says what went wrong, `where` points at the file, line or key, `fix` says what to do.
    """

    exit_code = 2

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.format())

    def format(self) -> str:
        """Render the error as the lines the CLI prints."""
        lines = [f"error: {self.what}"]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The error as a JSON-ready dict, for `--json` output."""
        return {"error": self.what, "where": self.where, "fix": self.fix}


class Interrupted(StudioError):
    """Training stopped by the user (Ctrl-C or the UI's stop button); the run is resumable."""

    exit_code = 130
