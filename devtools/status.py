"""The status block of ``platereg run``: what the stack is doing, under the banner.

Read from the services' own ``/metrics`` (prometheus_client's text parser) and their
log files (:mod:`devtools.runlogs`): events per second through the registry consumer,
its lag, notices delivered and failed, messages dead-lettered, error lines in the last
minute. In a terminal it is one block that rich's ``Live`` redraws in place (the
banner above it stays on the screen); elsewhere (CI, a pipe) one plain line every few
seconds. The parsing and the text are pure functions; :class:`StatusBoard` does the
reading.
"""

from __future__ import annotations

import time
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from devtools.runlogs import ErrorWindow, LogScanner

#: Seconds over which events per second is averaged.
RATE_WINDOW = 10.0


@dataclass(frozen=True)
class Reading:
    """The counters of one read of every /metrics (None: that service did not answer)."""

    events: float | None = None          # registry consumer: events consumed, any outcome
    lag: float | None = None             # registry consumer: summed over partitions
    dead_lettered: float | None = None   # consumer and dispatcher
    sent: float | None = None            # dispatcher: delivery attempts by outcome
    failed: float | None = None
    retrying: float | None = None
    silent: tuple[str, ...] = ()         # services whose /metrics did not answer


def _sums(text: str) -> dict[tuple[str, str], float]:
    """Sample values summed by (sample name, outcome label or '')."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels.get("outcome", ""))
            out[key] = out.get(key, 0.0) + sample.value
            out[(sample.name, "*")] = out.get((sample.name, "*"), 0.0) + sample.value
    return out


def read_metrics(texts: Mapping[str, str | None]) -> Reading:
    """A :class:`Reading` of the /metrics texts by service name."""
    values: dict[tuple[str, str], float] = {}
    silent = tuple(sorted(name for name, text in texts.items() if text is None))
    for text in texts.values():
        for key, value in _sums(text or "").items():
            values[key] = values.get(key, 0.0) + value

    def get(name: str, outcome: str = "*", service: str | None = None) -> float | None:
        if service is not None and service in silent:
            return None
        return values.get((name, outcome), 0.0)

    consumer, dispatcher = "registry-consumer", "notices-dispatcher"
    deliveries = "platereg_notice_deliveries_total"
    return Reading(events=get("platereg_events_total", service=consumer),
                   lag=get("platereg_consumer_lag", service=consumer),
                   dead_lettered=get("platereg_dlq_total"),
                   sent=get(deliveries, "sent", dispatcher),
                   failed=get(deliveries, "failed", dispatcher),
                   retrying=get(deliveries, "retry", dispatcher), silent=silent)


@dataclass(frozen=True)
class Status:
    reading: Reading
    events_per_second: float | None
    errors: int
    error_services: tuple[str, ...]
    at: str                               # wall-clock time of the reading, HH:MM:SS


def rate(history: deque[tuple[float, float]]) -> float | None:
    """Per second between the oldest and the newest (time, total) of ``history``."""
    if len(history) < 2 or history[-1][0] <= history[0][0]:
        return None
    (t0, v0), (t1, v1) = history[0], history[-1]
    return max(0.0, v1 - v0) / (t1 - t0)


def _n(value: float | None, digits: int = 0) -> str:
    return "?" if value is None else f"{value:,.{digits}f}"


def status_fields(status: Status) -> list[tuple[str, str]]:
    """(label, value) in the order shown."""
    r = status.reading
    errors = str(status.errors)
    if status.error_services:
        errors += f" ({', '.join(status.error_services)})"
    return [("events/s", _n(status.events_per_second, 1)), ("consumer lag", _n(r.lag)),
            ("dead-lettered", _n(r.dead_lettered)), ("notices sent", _n(r.sent)),
            ("failed", _n(r.failed)), ("retrying", _n(r.retrying)),
            ("errors in the last minute", errors)]


def status_line(status: Status) -> str:
    """The plain one-line form (not a terminal)."""
    text = ", ".join(f"{label} {value}" for label, value in status_fields(status))
    silent = f"; no answer from {', '.join(status.reading.silent)}" if status.reading.silent \
        else ""
    return f"status {status.at}: {text}{silent}"


def status_block(status: Status, width: int = 80, command: str = "platereg") -> list[str]:
    """The terminal form: four lines of at most ``width`` columns (a rule, then the
    figures, each in a column of its own so that a redraw does not move them)."""
    f = dict(status_fields(status))
    left, right = f"── status {status.at} ", f" {command} logs -f SERVICE ──"
    rule = left + "─" * max(2, width - len(left) - len(right)) + right
    errors = f"  errors in the last minute: {f['errors in the last minute']}"
    if status.reading.silent:
        errors += f"; no answer from {', '.join(status.reading.silent)}"
    lines = [rule,
             f"  events/s {f['events/s']:>9}   consumer lag {f['consumer lag']:>7}   "
             f"dead-lettered {f['dead-lettered']:>7}",
             f"  notices sent {f['notices sent']:>9}   failed {f['failed']:>7}   "
             f"retrying {f['retrying']:>7}",
             errors]
    return [line[:width] for line in lines]


class StatusBoard:
    """Reads the services' /metrics and log files into a :class:`Status`."""

    def __init__(self, metrics: Mapping[str, str], logs: Path, services: list[str],
                 clock: Callable[[], float] = time.time) -> None:
        self.metrics = dict(metrics)
        self.scanner = LogScanner(logs, services)
        self.window = ErrorWindow()
        self.history: deque[tuple[float, float]] = deque()
        self.clock = clock

    def read(self) -> Status:
        texts = {name: _get(url) for name, url in self.metrics.items()}
        reading = read_metrics(texts)
        now = self.clock()
        if reading.events is not None:
            self.history.append((now, reading.events))
        while len(self.history) > 2 and self.history[0][0] < now - RATE_WINDOW:
            self.history.popleft()
        for service, times in self.scanner.errors(now).items():
            self.window.add(service, times, now)
        errors, services = self.window.count(now)
        return Status(reading, rate(self.history), errors, tuple(services),
                      time.strftime("%H:%M:%S", time.localtime(now)))


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own
            return response.read().decode()
    except (OSError, ValueError):
        return None
