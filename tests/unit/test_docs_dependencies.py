"""Every library in pyproject.toml is explained in docs/dependencies.md (a row whose first
cell names it), and the page names no library that is not a dependency any more."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "dependencies.md"


def _name(requirement: str) -> str:
    """The distribution name of a requirement string, normalized (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def declared(pyproject: str) -> set[str]:
    project = tomllib.loads(pyproject)["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    return {_name(r) for r in requirements}


def explained(page: str) -> set[str]:
    """Names in the first cell of the page's table rows, as `name`."""
    return {_name(m) for m in re.findall(r"^\| `([^`]+)` \|", page, flags=re.MULTILINE)}


def test_every_dependency_is_explained_and_no_other() -> None:
    deps = declared((ROOT / "pyproject.toml").read_text())
    rows = explained(PAGE.read_text())
    assert not deps - rows, f"add a line to docs/dependencies.md for: {sorted(deps - rows)}"
    assert not rows - deps, f"docs/dependencies.md explains libraries no longer used: " \
                            f"{sorted(rows - deps)}"


def test_the_check_sees_a_missing_line() -> None:
    pyproject = '[project]\ndependencies = ["Foo_Bar[x]>=1", "baz"]\n' \
                '[project.optional-dependencies]\ndev = ["qux<2"]\n'
    assert declared(pyproject) == {"foo-bar", "baz", "qux"}
    assert explained("| `foo-bar` | why |\n| `baz` | why |\n") == {"foo-bar", "baz"}
