"""BatchHistogram.observe_many exposes what prometheus_client's Histogram does when
observing one by one, through the public collector API (text exposition included)."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from platereg import metrics
from platereg.metrics import BatchHistogram

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {(s.name.replace(name, "x", 1), s.labels.get("le", "")): s.value
            for m in registry.collect() for s in m.samples if not s.name.endswith("_created")}


def test_observe_many_matches_histogram_observe() -> None:
    rng = random.Random(7)
    values = [0.0, 0.005, 0.01, 300.0, 1e6, *BUCKETS,
              *(rng.uniform(0, 400) for _ in range(2000)),
              *(rng.expovariate(10) for _ in range(2000))]
    one_registry, many_registry = CollectorRegistry(), CollectorRegistry()
    one = Histogram("one", "one", buckets=BUCKETS, registry=one_registry)
    many = BatchHistogram("many", "many", buckets=BUCKETS, registry=many_registry)
    for v in values:
        one.observe(v)
    many.observe_many(values[:100])
    many.observe_many([])
    many.observe_many(iter(values[100:-1]))
    many.observe(values[-1])
    a, b = _samples(one_registry, "one"), _samples(many_registry, "many")
    assert a.keys() == b.keys()
    for k in a:
        assert math.isclose(a[k], b[k], rel_tol=1e-9), k
    one_text = generate_latest(one_registry).decode().replace("one", "x")
    many_text = generate_latest(many_registry).decode().replace("many", "x")
    # the same text, but for _created and the last digits of the sum (compared above)
    kept = [line for line in one_text.splitlines() if "_created" not in line
            and not line.startswith("x_sum")]
    assert [line for line in many_text.splitlines() if not line.startswith("x_sum")] == kept


def test_the_apply_latency_histogram_is_served_by_the_default_registry() -> None:
    text = generate_latest().decode()
    assert f"# TYPE {metrics.APPLY_LATENCY.name} histogram" in text
    assert f'{metrics.APPLY_LATENCY.name}_bucket{{le="+Inf"}}' in text
