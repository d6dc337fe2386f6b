"""What every tab shares: the studio home, the job queue, the accounts, and who is asking."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StudioError
from ..jobs import JobQueue
from .workspace import LOCAL_USER, Account, check_user, workspace

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
DEMO_RECIPE = "smollm2/135m-qlora.yaml"


def recipes_root() -> Path:
    """The shipped recipes folder (next to the package in a checkout, else ./recipes)."""
    here = Path(__file__).resolve().parents[2] / "recipes"
    return here if here.is_dir() else Path.cwd() / "recipes"


def shipped_recipes() -> list[str]:
    """Every recipe file under recipes/, as paths relative to it, sorted."""
    root = recipes_root()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml")) if root.is_dir() else []


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
                found += [str(p.resolve()) for p in sorted(root.iterdir()) if (p / "recipe.yaml").exists()]
        return list(dict.fromkeys(found))

    def may_open(self, request, run_dir: str) -> bool:
        """Whether the user may read this run directory."""
        return bool(run_dir) and run_dir in self.run_dirs(request)


def recipe_data(recipe_yaml: str, where: str = "<yaml>") -> dict:
    """Validated recipe data (the form's recipe state) from YAML text, or a StudioError."""
    from ..recipe_io import recipe_from_text

    return recipe_from_text(recipe_yaml, where=where).to_yaml_dict()


def downloadable(path: Path, name: str | None = None) -> str:
    """Copy a file into a fresh temp folder Gradio may serve, and return the copy's path."""
    folder = Path(tempfile.mkdtemp(prefix="studio-ui-"))
    target = folder / (name or path.name)
    shutil.copyfile(path, target)
    return str(target)
