"""observe_many equals observing one by one."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram

from platereg.metrics import observe_many

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _samples(h: Histogram) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value
            for m in h.collect() for s in m.samples if not s.name.endswith("_created")}


def test_observe_many_matches_observe() -> None:
    rng = random.Random(7)
    values = [0.0, 0.005, 0.01, 300.0, 1e6, *BUCKETS,
              *(rng.uniform(0, 400) for _ in range(2000)),
              *(rng.expovariate(10) for _ in range(2000))]
    one = Histogram("one", "one", buckets=BUCKETS, registry=CollectorRegistry())
    many = Histogram("many", "many", buckets=BUCKETS, registry=CollectorRegistry())
    for v in values:
        one.observe(v)
    observe_many(many, values)
    observe_many(many, [])
    a = {(n.replace("one", "x", 1), le): v for (n, le), v in _samples(one).items()}
    b = {(n.replace("many", "x", 1), le): v for (n, le), v in _samples(many).items()}
    assert a.keys() == b.keys()
    for k in a:
        assert math.isclose(a[k], b[k], rel_tol=1e-9), k
