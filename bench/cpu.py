"""CPU time of the processes a benchmark drives, read from ``/proc/<pid>/stat``.

A server's CPU over a window is the difference of two readings of its process tree: the
process itself, the children it has reaped (``cutime``/``cstime``: PostgreSQL's exited
backends) and the children still alive. A child of the bench process that ran and was
waited for inside the window (``platereg consume registry``) is in ``os.times()``'s
children times.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, *, reaped: bool = False) -> float:
    """CPU seconds (user + system) of ``pid``, with its reaped children's when ``reaped``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, its reaped children and its live descendants."""
    total = process_cpu(pid, reaped=True)
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return total
    for child in children:
        try:
            total += process_cpu(child.pid)
        except (OSError, IndexError):
            pass   # exited meanwhile: its time is in the parent's reaped times
    return total


def waited_children_cpu() -> float:
    """CPU seconds of this process's children that have been waited for."""
    times = os.times()
    return times.children_user + times.children_system


def postgres_pid(work_dir: Path) -> int | None:
    """The postmaster of the bench's embedded PostgreSQL (``<work>/pg``), if it runs here."""
    pid_file = work_dir / "pg" / "pgdata" / "postmaster.pid"
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def broker_pids(work_dir: Path) -> list[int]:
    """The bench's own Apache Kafka nodes (their command line names ``<work>/kafka``)."""
    mark = str(work_dir / "kafka")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "kafka.Kafka" in cmdline and any(mark in arg for arg in cmdline):
            found.append(proc.pid)
    return found


@dataclass
class Meter:
    """CPU seconds of named process trees over a window: :meth:`start`, then :meth:`read`."""

    pids: dict[str, int]
    _start: dict[str, float] = field(default_factory=dict)

    @classmethod
    def servers(cls, work_dir: Path) -> Meter:
        """PostgreSQL and the broker of the bench run, those that run on this machine."""
        pids = {f"broker {i + 1}" if i else "broker": pid
                for i, pid in enumerate(broker_pids(work_dir))}
        pg = postgres_pid(work_dir)
        if pg is not None:
            pids["PostgreSQL"] = pg
        return cls(pids)

    def start(self) -> Meter:
        self._start = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        return self

    def read(self) -> dict[str, float]:
        """CPU seconds of each tree since :meth:`start`."""
        return {name: tree_cpu(pid) - self._start[name] for name, pid in self.pids.items()}
