"""Every Prometheus metric of the contract (section 6), defined once.

Every metric is in prometheus_client's default registry (code and tests read values
there), but no process serves that registry: each long-running process serves on
``/metrics`` only the families it moves (the tuples at the end, e.g.
:data:`REGISTRY_API`), with the process and runtime collectors, through
:func:`exposition`. No ``_created`` series: :func:`prometheus_client.disable_created_metrics`
is called on import (Prometheus does not use them; they double the series of a counter).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()


class BatchHistogram(Collector):
    """An unlabelled histogram fed many amounts at once: one increment per bucket and one of
    the sum per call, instead of one locked update per amount.

    Exposed through prometheus_client's public custom-collector API (the same
    ``_bucket``/``_count``/``_sum`` series as a ``Histogram``, without ``_created``).
    """

    def __init__(self, name: str, documentation: str, *, buckets: Sequence[float],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = [float(b) for b in buckets]
        if self._bounds[-1] != math.inf:
            self._bounds.append(math.inf)
        self._counts = [0] * len(self._bounds)   # per bucket, not cumulative
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe(self, amount: float) -> None:
        self.observe_many((amount,))

    def observe_many(self, amounts: Iterable[float]) -> None:
        counts = [0] * len(self._bounds)
        total = 0.0
        bounds = self._bounds
        for a in amounts:
            counts[bisect_left(bounds, a)] += 1
            total += a
        with self._lock:
            for i, n in enumerate(counts):
                self._counts[i] += n
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip(self._bounds, counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                    sum_value=total)


EVENTS = Counter(
    "platereg_events", "Plate events consumed by the registry.", ["type", "outcome"]
)
DLQ = Counter("platereg_dlq", "Messages sent to the dead-letter topic.", ["reason"])
#: Plates put in quarantine because their stored state or history cannot be folded
#: (their later events count in ``platereg_events_total{outcome="quarantined"}``).
QUARANTINED_PLATES = Counter(
    "platereg_quarantined_plates", "Plates quarantined: stored history that cannot be folded."
)
APPLY_LATENCY = BatchHistogram(
    "platereg_event_apply_latency_seconds",
    "Kafka record timestamp to database commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge("platereg_consumer_lag", "Messages behind the log end.", ["partition"])
LOOKUPS = Counter("platereg_lookups", "Plate lookups.", ["kind", "result", "purpose"])
HTTP_DURATION = Histogram(
    "platereg_http_request_duration_seconds",
    "HTTP request duration by route template.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
AUDIT_BACKLOG = Gauge("platereg_audit_backlog", "Audit rows waiting to be written.")
AUDIT_OLDEST = Gauge("platereg_audit_oldest_unwritten_seconds",
                     "Age of the oldest audit row not yet written (0: none waiting).")
AUDIT_WRITE_FAILURES = Counter("platereg_audit_write_failures",
                               "Failed audit writes (their reads answered 503), by exception "
                               "type.", ["error"])
AUDIT_REFUSED = Counter("platereg_audit_refused",
                        "Reads refused with 503 because their audit rows could not be written "
                        "(the queue full, or the write failed).")
REPLICA_LAG = Gauge("platereg_replica_lag_seconds",
                    "How far a read replica is behind the primary at the last check "
                    "(NaN: not measured: unreachable or not a standby).", ["replica"])
REPLICA_SERVING = Gauge("platereg_replica_serving",
                        "1 while a read replica serves the registry API's reads, 0 while it "
                        "is left out (too far behind, unreachable or not a standby).",
                        ["replica"])
AUTH_FAILURES = Counter("platereg_auth_failures", "Requests refused with 401 or 403.",
                        ["reason"])
INGEST_EVENTS = Counter("platereg_ingest_events", "Events through the ingest API.", ["outcome"])
NOTICES = Counter("platereg_notices", "Notices created.", ["kind"])
NOTICE_DELIVERIES = Counter(
    "platereg_notice_deliveries", "Notice delivery attempts.", ["channel", "outcome"]
)
NOTICE_SCHEDULER_LAST_RUN = Gauge(
    "platereg_notice_scheduler_last_run_timestamp_seconds",
    "Unix time the notice scheduler last finished a run.",
)


# Beyond the contract's list, for the alert rules (deploy/prometheus/rules).
EXPIRY_SWEEP_LAST_RUN = Gauge(
    "platereg_expiry_sweep_last_run_timestamp_seconds",
    "Unix time of this process's last completed expiry sweep (0: none yet).",
)


# What each process moves, so what it exports (by the job names of deploy/prometheus).
HTTP_API = (HTTP_DURATION, AUTH_FAILURES)
REGISTRY_API = (*HTTP_API, LOOKUPS, AUDIT_BACKLOG, AUDIT_OLDEST, AUDIT_WRITE_FAILURES,
                AUDIT_REFUSED, REPLICA_LAG, REPLICA_SERVING)
INGEST_API = (*HTTP_API, INGEST_EVENTS)
#: The consumer counts the notices its batches create (the notices hook runs in them).
REGISTRY_CONSUMER = (EVENTS, DLQ, QUARANTINED_PLATES, APPLY_LATENCY, CONSUMER_LAG, NOTICES)
#: The registry consumer's process and ``platereg consume relay`` run the expiry sweep.
EXPIRY_SWEEPER = (EXPIRY_SWEEP_LAST_RUN,)
NOTICE_SCHEDULER = (NOTICES, NOTICE_SCHEDULER_LAST_RUN)
NOTICE_DISPATCHER = (NOTICE_DELIVERIES, DLQ)
#: Every process: its CPU, memory and file descriptors, the Python version and collections.
RUNTIME = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR)


def exported(families: Iterable[Collector]) -> CollectorRegistry:
    """A registry of ``families`` (each once) and :data:`RUNTIME`, for one process's
    ``/metrics``; the collectors stay in the default registry too."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in dict.fromkeys((*RUNTIME, *families)):
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of ``registry`` (what ``/metrics`` answers)."""
    return generate_latest(registry)
