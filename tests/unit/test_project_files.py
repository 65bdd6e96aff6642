"""The project's own files: the licence pyproject names, the security policy, and a
changelog in Keep a Changelog form whose latest release is pyproject's version."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_licence_is_the_full_apache_2_text() -> None:
    # The SPDX expression and the file (setuptools' current form: no deprecation warning).
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text) > 10_000   # the whole licence, not a pointer to it


def test_the_security_policy_says_how_to_report_what_is_in_scope_and_when() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    for heading in ("## How to report", "## What is in scope", "## What happens next"):
        assert heading in text
    assert "private vulnerability reporting" in text
    for scope in ("HTTP APIs", "source checks", "Owner data", "deploy files"):
        assert scope in text, scope


def test_the_changelog_starts_at_the_release_in_pyproject() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in text and "semver.org" in text
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", text, re.MULTILINE)
    assert releases and releases[0][0] == PYPROJECT["project"]["version"]
    sections = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert sections[0] == "Unreleased"
    for name in sections:   # each section has its link reference at the end
        assert re.search(rf"^\[{re.escape(name)}\]: https://", text, re.MULTILINE), name
    for kind in re.findall(r"^### (.+)$", text, re.MULTILINE):
        assert kind in ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
    assert "`v0.1.0`" in text and "git tag -a" in text   # the tag scheme
