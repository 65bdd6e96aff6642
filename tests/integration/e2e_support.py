"""Helpers of the end-to-end fault test (tests/integration/test_e2e_faults.py) and
``make soak``: the system's processes as restartable OS processes, the fault schedule,
a timeline of throughput and lag, and the figures table and plot (the SMTP catcher is
tests/integration/notices_support.py's)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from devtools.embedded import free_port


@dataclass
class Proc:
    """One process of the system: ``platereg ARGV`` restarted with the same arguments.

    ``argv`` may contain ``{port}`` (a fresh free port per incarnation, for metrics)
    and ``env`` is recomputed per incarnation by ``env_for`` (e.g. a moved clock).
    """

    name: str
    argv: tuple[str, ...]
    log_path: Path
    env: dict[str, str]
    env_for: Any = None                       # callable(incarnation) -> extra env
    popen: subprocess.Popen | None = None
    incarnation: int = 0
    port: int | None = None
    kills: int = 0

    def start(self) -> None:
        self.incarnation += 1
        self.port = free_port() if any("{port}" in a for a in self.argv) else None
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        env = {**self.env, **(self.env_for(self.incarnation) if self.env_for else {})}
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {self.name} incarnation {self.incarnation}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "wiring.cli", *argv], env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and its helpers (parse workers), wait until they are gone."""
        assert self.popen is not None
        helpers = []
        with contextlib.suppress(psutil.NoSuchProcess):
            helpers = psutil.Process(self.popen.pid).children(recursive=True)
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(15)
        self.kills += 1
        psutil.wait_procs(helpers, timeout=15)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (a clean stop); SIGKILL after ``timeout``. Returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


# --------------------------------------------------------------------------- faults

@dataclass
class Figures:
    """What happened during a run (printed as a table; plotted with the timeline)."""

    events_sent: int = 0
    valid_events: int = 0
    invalid_events: int = 0
    reads: int = 0
    notices: int = 0
    deliveries: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)   # (seconds, what)
    timeline: list[tuple[float, float, float]] = field(default_factory=list)  # s, applied, lag

    def table(self) -> str:
        rows = [("events sent (both paths)", self.events_sent),
                ("valid events (unique)", self.valid_events),
                ("invalid events", self.invalid_events),
                ("audited reads made", self.reads), ("notices", self.notices),
                ("deliveries seen by the sinks", self.deliveries),
                ("SIGKILLs", sum(self.kills.values())),
                *((f"  {k}", v) for k, v in sorted(self.kills.items())),
                ("PostgreSQL restarts, broker freezes",
                 sum(f[1] in ("PostgreSQL restart", "broker frozen") for f in self.faults)),
                ("violations", len(self.violations))]
        width = max(len(r[0]) for r in rows)
        lines = [f"{name:<{width}}  {value:>10,}" for name, value in rows]
        return "\n".join(lines + [f"  - {v}" for v in self.violations])


async def sample_timeline(pool, figures: Figures, started: float, stop: asyncio.Event,
                          lag_of: Any) -> None:
    """Every second: events applied so far, and the consumer's lag (its own gauge)."""
    while not stop.is_set():
        applied = lag = float("nan")             # a server that is down leaves a gap
        with contextlib.suppress(Exception):
            applied = await pool.fetchval("SELECT count(*) FROM plate_events", timeout=2)
        with contextlib.suppress(Exception):
            lag = await asyncio.wait_for(lag_of(), 2)
        figures.timeline.append((time.monotonic() - started, applied, lag))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def plot(figures: Figures, path: Path) -> None:
    """Throughput (events applied per second) and lag over time, with the faults marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in figures.timeline]
    rate = [0.0] + [(b[1] - a[1]) / max(b[0] - a[0], 1e-6)
                    for a, b in zip(figures.timeline, figures.timeline[1:], strict=False)]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(11, 6))
    ax1.plot(t, rate, color="tab:blue")
    ax1.set_ylabel("events applied / s")
    ax2.plot(t, [s[2] for s in figures.timeline], color="tab:red")
    ax2.set_ylabel("consumer lag (records)")
    ax2.set_xlabel("seconds")
    for when, what in figures.faults:
        colour = "grey" if what.startswith("kill") else "black"
        for ax in (ax1, ax2):
            ax.axvline(when, color=colour, alpha=0.3 if colour == "grey" else 0.8, lw=0.8)
        if colour == "black":
            ax1.annotate(what, (when, ax1.get_ylim()[1]), rotation=90, fontsize=7,
                         va="top", ha="right")
    fig.suptitle("Plate Registry under faults (grey: SIGKILL, black: server faults)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))
