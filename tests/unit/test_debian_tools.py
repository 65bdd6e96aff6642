"""find_or_install: a program on PATH is used as it is; a missing one is installed only
by root with apt-get, and otherwise reported missing (None) without running anything."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from devtools import debian_tools


def test_a_program_on_path_is_returned_without_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("apt-get must not run")

    monkeypatch.setattr(subprocess, "run", no_run)
    assert debian_tools.find_or_install("sh", "dash") == shutil.which("sh")


def test_a_missing_program_is_not_installed_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(debian_tools.os, "geteuid", lambda: 1000)
    assert debian_tools.find_or_install("platereg-no-such-program", "nothing") is None
    assert calls == []


def test_root_updates_once_then_installs_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: calls.append(cmd))
    monkeypatch.setattr(debian_tools.os, "geteuid", lambda: 0)
    monkeypatch.setattr(debian_tools, "_updated", False)
    real_which = shutil.which
    monkeypatch.setattr(debian_tools.shutil, "which",
                        lambda name: "/usr/bin/apt-get" if name == "apt-get" else
                        real_which(name) if name != "promtool-x" else None)
    for _ in range(2):
        assert debian_tools.find_or_install("promtool-x", "prometheus") is None
    verbs = [next(w for w in cmd if w in ("update", "install")) for cmd in calls]
    assert verbs == ["update", "install", "install"]
    assert all(cmd[-1] == "prometheus" for cmd in calls if "install" in cmd)
