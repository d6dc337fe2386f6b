"""The house rules that keep the tree readable: no import circle between packages, the kernels never import
the studio, the library never imports its shells, long files say why, and the light commands stay light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHELLS = {"cli", "ui"}


def package_imports() -> dict[str, set[str]]:
    """studio package -> the other studio packages its modules import (lazy imports included)."""
    deps: dict[str, set[str]] = defaultdict(set)
    for path in (REPO / "studio").rglob("*.py"):
        rel = path.relative_to(REPO / "studio").parts
        package = rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("studio."):
                other = node.module.split(".")[1]
                if other != package:
                    deps[package].add(other)
    return deps


def test_no_import_circle_between_packages():
    deps = package_imports()

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in deps.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    circles = sorted(p for p in deps if p in reachable(p))
    assert not circles, {p: sorted(deps[p]) for p in circles}


def test_the_library_never_imports_its_shells():
    deps = package_imports()
    offenders = {p: sorted(deps[p] & SHELLS) for p in deps if p not in SHELLS | {"__init__", "demo"} and deps[p] & SHELLS}
    assert not offenders


def test_the_kernels_never_import_the_studio():
    for path in (REPO / "kernels" / "studio_kernels").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not [n for n in names if n == "studio" or n.startswith("studio.")], path


def test_a_file_over_400_lines_says_why_at_its_top():
    for path in [*(REPO / "studio").rglob("*.py"), *(REPO / "kernels" / "studio_kernels").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            assert "400 lines" in docstring, f"{path.relative_to(REPO)} is over 400 lines and does not say why"


def test_help_and_validate_import_no_torch_or_transformers(tmp_path):
    """The fast-start rule as behaviour: the commands that load no model never import the heavy libraries."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from studio.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    code = main(['validate', 'smollm2/135m-qlora'])\n"
        "    code += main(['recipes'])\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps({'code': code, 'heavy': sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'gradio', 'triton', 'matplotlib') if m in sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "heavy": []}
