"""What every tab shares: the studio home, the job queue, the accounts, and who is asking."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import StudioError
from studio.training.rundir import RECIPE
from studio.ui.access import LOCAL_USER, check_reward_file, check_user, workspace
from studio.ui.accounts import Account
from studio.ui.jobs import Job, JobQueue

MAX_UPLOAD_BYTES = 200 * 1024 * 1024


@dataclass
class Context:
    """State shared by the tabs of one app: home folder, queue, accounts (empty = single local user)."""

    home: Path
    queue: JobQueue
    accounts: list[Account] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        """Whether users log in (a workshop server) rather than one local user."""
        return bool(self.accounts)

    def user(self, request) -> str:
        """The logged-in user of a Gradio request, or the single local user."""
        name = getattr(request, "username", None) if request is not None else None
        return check_user(name) if name else LOCAL_USER

    def is_teacher(self, user: str) -> bool:
        """Teachers (and the single local user) see every user's jobs and runs."""
        if not self.shared:
            return True
        return any(a.user == user and a.teacher for a in self.accounts)

    def reward_file(self, path: str | None) -> str | None:
        """The reward file the UI may import for a recipe's grpo.reward_file (None when it names none): any local file
        for the single local user, as the CLI; on a shared server only one in the rewards folder (check_reward_file)."""
        if not path:
            return None
        return check_reward_file(path) if self.shared else path

    def with_reward_file(self, raw: dict | None) -> dict | None:
        """Recipe data whose grpo.reward_file is the file `reward_file` allows, for the previews that import it."""
        if raw is None or not (raw.get("grpo") or {}).get("reward_file"):
            return raw
        return {**raw, "grpo": {**raw["grpo"], "reward_file": self.reward_file(raw["grpo"]["reward_file"])}}

    def workspace(self, request) -> Path:
        """The asking user's workspace folder."""
        return workspace(self.home, self.user(request))

    def visible_jobs(self, request):
        """Jobs the asking user may see: their own, or all for a teacher."""
        user = self.user(request)
        return self.queue.jobs(None if self.is_teacher(user) else user)

    def run_dirs(self, request) -> list[str]:
        """Run directories the user may open: their jobs' runs, their workspace runs, and ./runs when local."""
        found: list[str] = [j.run_dir for j in self.visible_jobs(request)]
        roots = [self.workspace(request) / "runs"]
        if not self.shared:
            roots.append(Path.cwd() / "runs")
        for root in roots:
            if root.is_dir():
                found += [str(p.resolve()) for p in sorted(root.iterdir()) if (p / RECIPE).exists()]
        return list(dict.fromkeys(found))

    def may_open(self, request, run_dir: str) -> bool:
        """Whether the user may read this run directory."""
        return bool(run_dir) and run_dir in self.run_dirs(request)

    def run_for(self, request, run_dir: str, where: str) -> str:
        """`run_dir` when the asking user may open it, else a StudioError naming the tab's run picker."""
        if not self.may_open(request, run_dir):
            raise StudioError(f"{run_dir!r} is not one of your runs", where=where, fix="pick one of your runs from the Run list")
        return run_dir

    def job_for(self, request, job_id) -> Job:
        """The job with this id when the asking user may see it (their own; any for a teacher), else a StudioError."""
        if job_id in (None, ""):
            raise StudioError("no job selected", where="Train tab: Job", fix="select a job first")
        try:
            job = self.queue.get(int(job_id))
        except (ValueError, TypeError):
            raise StudioError(f"invalid job id {job_id!r}", where="Train tab: Job", fix="pick a job from the list") from None
        user = self.user(request)
        if job.user != user and not self.is_teacher(user):
            raise StudioError("not your job", where=f"job {job.id}", fix="pick one of your own jobs")
        return job


def recipe_data(recipe_yaml: str, where: str = "<yaml>") -> dict:
    """Validated recipe data (the form's recipe state) from YAML text, or a StudioError."""
    from studio.config.load import recipe_from_text

    return recipe_from_text(recipe_yaml, where=where).to_yaml_dict()


def serve_folder() -> Path:
    """A fresh temporary folder for files Gradio may serve (never the workspace itself)."""
    return Path(tempfile.mkdtemp(prefix="studio-ui-"))


def served(path: Path) -> str:
    """A path Gradio may serve for a workspace file: a hard link (else a copy) in a fresh temp folder, so the
    workspace itself never has to be opened to Gradio's file route."""
    link = serve_folder() / path.name
    try:
        os.link(path, link)
    except OSError:
        shutil.copyfile(path, link)
    return str(link)
