"""Helpers of the end-to-end fault test (tests/integration/test_e2e_faults.py) and
``make soak``: the system's processes as restartable OS processes, the kill schedule, a
watch on the broker cluster (partition leaders, under-replicated partitions), a timeline
of throughput and lag, and the figures table and plot (the SMTP catcher and the HTTP
sinks are tests/integration/notices_support.py's)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from aiokafka import TopicPartition

from devtools.embedded import free_port
from platereg.kafka import make_admin, make_consumer
from platereg.settings import Settings


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

def kill_schedule(seed: int, kinds: Iterable[str]) -> Iterator[str]:
    """The order in which a run SIGKILLs its processes, from the seed alone: rounds, each
    every kind once in an order drawn by a generator of its own (shared with neither the
    traffic nor the reader, so no timing moves it). Two rounds kill every kind twice."""
    rng = random.Random(f"e2e kill schedule {seed}")
    kinds = sorted(kinds)
    while True:
        round_ = list(kinds)
        rng.shuffle(round_)
        yield from round_


class ClusterWatch:
    """The broker cluster as its clients see it, through the admin API: the leader of each
    partition of ``topic``, sampled every ``every`` seconds, and under-replicated
    partitions. A request that fails (a broker down or frozen) is made again with a new
    client. A leader change (a failover) counts once every answer has named the new
    leader for ``settle`` seconds: a node that was frozen answers from its stale metadata
    for a moment after it wakes, naming itself."""

    def __init__(self, settings: Settings, topic: str, started: float,
                 every: float = 0.5, settle: float = 1.0) -> None:
        self.settings, self.topic, self.started = settings, topic, started
        self.every, self.settle = every, settle
        self.leaders: dict[int, int] = {}                    # partition -> settled leader
        self.changes: list[tuple[float, int, int, int]] = []  # seconds, partition, from, to
        self._new: dict[int, tuple[int, float]] = {}          # partition -> (leader, since)
        self._admin: Any = None

    async def describe(self, topics: list[str] | None = None, timeout: float = 60) -> list:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._admin is None:
                    self._admin = make_admin(self.settings, request_timeout_ms=2000)
                    await asyncio.wait_for(self._admin.start(), 5)
                return await asyncio.wait_for(self._admin.describe_topics(topics), 5)
            except Exception:   # noqa: BLE001 - a broker down: another client, another node
                await self.close()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None

    async def observe(self) -> dict[int, int]:
        """One sample; returns the settled leaders."""
        [described] = await self.describe([self.topic])
        now = time.monotonic()
        for p in described["partitions"]:
            partition, leader = p["partition"], p["leader"]
            if leader < 0:
                continue                         # no leader for the moment
            settled = self.leaders.setdefault(partition, leader)
            if leader == settled:
                self._new.pop(partition, None)
                continue
            named, since = self._new.get(partition, (leader, now))
            since = since if named == leader else now
            self._new[partition] = (leader, since)
            if now - since >= self.settle:
                self.changes.append((since - self.started, partition, settled, leader))
                self.leaders[partition] = leader
                del self._new[partition]
        return dict(self.leaders)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    await self.observe()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.every)
        finally:
            await self.close()

    async def busiest(self, window: float = 1.0) -> tuple[int, int]:
        """The partition that grew most in ``window`` seconds, and by how many records."""
        tps = [TopicPartition(self.topic, p) for p in sorted(await self.observe())]
        consumer = make_consumer(self.settings)
        await consumer.start()
        try:
            before = await consumer.end_offsets(tps)
            await asyncio.sleep(window)
            after = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        grown = {tp.partition: after[tp] - before[tp] for tp in tps}
        partition = max(grown, key=lambda p: (grown[p], -p))
        return partition, grown[partition]

    async def under_replicated(self) -> int:
        """Partitions of every topic whose in-sync replicas are fewer than their replicas."""
        return sum(len(p["isr"]) < len(p["replicas"])
                   for t in await self.describe() for p in t["partitions"])

    async def wait_leader_moved(self, partition: int, away_from: int,
                                timeout: float = 60) -> int:
        """Until ``partition`` is led by a broker other than ``away_from``; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = (await self.observe()).get(partition)
            if leader is not None and leader != away_from:
                return leader
            await asyncio.sleep(0.2)
        raise AssertionError(f"partition {partition} still led by broker {away_from} "
                             f"after {timeout}s")

    async def wait_in_sync(self, timeout: float = 120) -> None:
        """Until every answer for ``settle`` seconds has no partition of any topic
        under-replicated (a node just woken may answer from stale metadata)."""
        deadline = time.monotonic() + timeout
        since = None
        while since is None or time.monotonic() - since < self.settle:
            count = await self.under_replicated()
            since = (since or time.monotonic()) if count == 0 else None
            assert count == 0 or time.monotonic() < deadline, (
                f"{count} partitions under-replicated after {timeout}s")
            await asyncio.sleep(0.2)


@dataclass
class Figures:
    """What happened during a run (printed as a table; plotted with the timeline)."""

    seed: int = 0
    events_sent: int = 0
    valid_events: int = 0
    invalid_events: int = 0
    reads: int = 0
    notices: int = 0
    deliveries: int = 0
    repeats_after_kill: int = 0         # a delivery sent again after its dispatcher died
    repeats_after_retry: int = 0        # ... after an attempt the dispatcher saw fail
    notices_read_again: int = 0         # by the dispatcher, its group's offsets reset
    kills: dict[str, int] = field(default_factory=dict)
    schedule: list[tuple[float, str]] = field(default_factory=list)  # (seconds, kind) killed
    day_moves: int = 0                  # the scheduler killed to move its clock a day on
    postgres_restarts: int = 0
    broker_kills: int = 0
    broker_freezes: int = 0
    broker_restarts: int = 0            # controlled shutdown, then started again
    leader_changes: list[tuple[float, int, int, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)   # (seconds, what)
    timeline: list[tuple[float, float, float]] = field(default_factory=list)  # s, applied, lag

    def table(self) -> str:
        moved = len({c[1] for c in self.leader_changes})
        rows = [("events sent (both paths)", self.events_sent),
                ("valid events (unique)", self.valid_events),
                ("invalid events", self.invalid_events),
                ("audited reads made", self.reads), ("notices", self.notices),
                ("deliveries seen by the sinks", self.deliveries),
                ("  sent again after a dispatcher kill", self.repeats_after_kill),
                ("  sent again after a failed attempt", self.repeats_after_retry),
                ("notices read again by the dispatcher", self.notices_read_again),
                ("SIGKILLs of processes (schedule)", sum(self.kills.values())),
                *((f"  {k}", v) for k, v in sorted(self.kills.items())),
                ("scheduler day moves (SIGKILL too)", self.day_moves),
                ("PostgreSQL restarts", self.postgres_restarts),
                ("broker SIGKILLs (busy leader)", self.broker_kills),
                ("broker freezes (busy leader)", self.broker_freezes),
                ("broker controlled restarts", self.broker_restarts),
                ("leader changes seen (events topic)", len(self.leader_changes)),
                ("  partitions whose leader moved", moved),
                ("violations", len(self.violations))]
        width = max(len(r[0]) for r in rows)
        lines = [f"{name:<{width}}  {value:>10,}" for name, value in rows]
        return "\n".join(lines + [f"  - {v}" for v in self.violations])

    def report(self) -> str:
        """The seed, the kills in the order made, the broker faults, then the table."""
        kills = ", ".join(f"{s:.0f}s {kind}" for s, kind in self.schedule)
        brokers = "; ".join(f"{s:.0f}s {what}" for s, what in self.faults
                            if not what.startswith("kill "))
        changes = ", ".join(f"{s:.0f}s p{p} {a}->{b}" for s, p, a, b in self.leader_changes)
        return (f"seed {self.seed}\nkill schedule (from the seed): {kills}\n"
                f"server faults: {brokers}\nleader changes: {changes or 'none'}\n"
                f"{self.table()}")


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


#: Words of the notes of a server coming back (dotted in the plot, not labelled).
RECOVERED = ("in sync", "PostgreSQL up", "resumed", "failed over")


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
        kill, recovery = what.startswith("kill "), any(w in what for w in RECOVERED)
        for ax in (ax1, ax2):
            ax.axvline(when, color="grey" if kill else "black", alpha=0.3 if kill else 0.8,
                       lw=0.8, ls=":" if recovery else "-")
        if not (kill or recovery):
            ax1.annotate(what, (when, ax1.get_ylim()[1]), rotation=90, fontsize=7,
                         va="top", ha="right")
    fig.suptitle("Plate Registry under faults (grey: SIGKILL, black: server faults, "
                 "dotted: back)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))
