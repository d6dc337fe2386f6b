"""The kernels only use Triton API the installed Triton has: every keyword passed to triton.jit, triton.autotune
and triton.Config exists in its signature. GPU machines bring their own Triton (3.6 on common CUDA images,
3.9 pinned here), and a keyword one version lacks fails at import, long before any kernel runs."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

PACKAGE = Path(__file__).resolve().parents[1] / "studio_kernels"
CHECKED = ("jit", "autotune", "Config")


def triton_calls() -> list[tuple[str, str, int]]:
    """(function, keyword, line) for every keyword argument the package passes to triton.jit/autotune/Config."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CHECKED:
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "triton":
                    found += [(node.func.attr, kw.arg, node.lineno) for kw in node.keywords if kw.arg]
    return found


def test_the_scan_sees_the_kernels_calls():
    keywords = {(fn, kw) for fn, kw, _ in triton_calls()}
    assert {("autotune", "configs"), ("autotune", "key"), ("Config", "num_warps")} <= keywords


@pytest.mark.parametrize("fn", CHECKED)
def test_every_keyword_exists_in_the_installed_triton(fn):
    accepted = set(inspect.signature(getattr(triton, fn)).parameters)
    missing = sorted({(kw, line) for name, kw, line in triton_calls() if name == fn and kw not in accepted})
    assert not missing, f"triton {triton.__version__} {fn}() has no {missing}"
