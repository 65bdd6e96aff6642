"""Every Prometheus metric of the contract (section 6), defined once.

Each long-running process serves the default registry on ``/metrics``; a
process only moves the metrics it owns.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "platereg_events", "Plate events consumed by the registry.", ["type", "outcome"]
)
DLQ = Counter("platereg_dlq", "Messages sent to the dead-letter topic.", ["reason"])
#: Plates put in quarantine because their stored state or history cannot be folded
#: (their later events count in ``platereg_events_total{outcome="quarantined"}``).
QUARANTINED_PLATES = Counter(
    "platereg_quarantined_plates", "Plates quarantined: stored history that cannot be folded."
)
APPLY_LATENCY = Histogram(
    "platereg_event_apply_latency_seconds",
    "Kafka record timestamp to database commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge("platereg_consumer_lag", "Messages behind the log end.", ["partition"])
LOOKUPS = Counter("platereg_lookups", "Plate lookups.", ["kind", "result"])
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
                               "Failed audit writes (retried), by exception type.", ["error"])
AUDIT_REFUSED = Counter("platereg_audit_refused",
                        "Reads refused with 503 because the audit buffer was full.")
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


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """``histogram.observe(a)`` for every ``a`` in ``amounts`` (no exemplars), with one
    increment per bucket and one of the sum instead of one per observation.

    The result is the same as observing one by one (bucket ``i`` counts the amounts
    ``<= bound[i]`` and above the previous bound; the sum adds the amounts). It uses
    the buckets of prometheus_client's unlabelled Histogram; if those are not there
    (another version), it observes one by one.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for a in amounts:
            histogram.observe(a)
        return
    counts = [0] * len(bounds)
    s = 0.0
    for a in amounts:
        counts[bisect_left(bounds, a)] += 1
        s += a
    if not any(counts):
        return
    total.inc(s)
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)
