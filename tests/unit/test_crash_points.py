"""The crash points of platereg.faults without killing anything: the n-th time a named
point is reached it sends SIGKILL to its own process, and ``set_offsets`` reaches
``offsets.store`` before it writes (the crash tests run the consumer in a process of its
own, where `make mutate`'s changes do not reach: this is the in-process check); and no
file of the deployment arms a crash point."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from platereg import faults
from registry.consumer import store
from registry.consumer.store import RegistrySql

ROOT = Path(__file__).resolve().parents[2]


class Killed(Exception):
    pass


@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    sent: list[tuple[int, int]] = []

    def kill(pid: int, sig: int) -> None:
        sent.append((pid, sig))
        raise Killed

    monkeypatch.setattr(faults.os, "kill", kill)
    monkeypatch.setattr(faults, "_reached", faults.Counter())
    return sent


def test_a_point_kills_its_process_the_nth_time_it_is_reached(
        monkeypatch: pytest.MonkeyPatch, kills: list[tuple[int, int]]) -> None:
    faults.crash_point("offsets.store")          # unset: nothing
    monkeypatch.setenv(faults.CRASH_ENV, "offsets.store:2")
    faults.crash_point("elsewhere")
    faults.crash_point("offsets.store")
    assert kills == []
    with pytest.raises(Killed):
        faults.crash_point("offsets.store")
    assert kills == [(os.getpid(), signal.SIGKILL)]


class NoConnection:
    async def fetch(self, *args: object) -> list:
        raise AssertionError("set_offsets wrote before its crash point")


async def test_set_offsets_reaches_offsets_store_before_it_writes(
        monkeypatch: pytest.MonkeyPatch, kills: list[tuple[int, int]]) -> None:
    monkeypatch.setenv(faults.CRASH_ENV, "offsets.store")
    assert store.crash_point is faults.crash_point
    with pytest.raises(Killed):
        await RegistrySql(NoConnection()).set_offsets("g", "t", {0: 1})


def test_no_deployment_file_arms_a_crash_point() -> None:
    files = [ROOT / "docker-compose.yml", ROOT / ".env.example",
             *(p for p in sorted((ROOT / "deploy").rglob("*")) if p.is_file())]
    armed = [str(p.relative_to(ROOT)) for p in files
             if faults.CRASH_ENV in p.read_text(errors="replace")]
    assert armed == []
