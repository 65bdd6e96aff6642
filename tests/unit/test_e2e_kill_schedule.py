"""The end-to-end fault test's kill schedule: from the seed alone, every kind twice in the
first two rounds (tests/integration/e2e_support.py)."""

from __future__ import annotations

import itertools
import random
from collections import Counter

from tests.integration.e2e_support import kill_schedule

KINDS = ["consumer", "relay", "ingest-api", "registry-api", "scheduler", "dispatcher"]


def _first(seed: int, n: int) -> list[str]:
    return list(itertools.islice(kill_schedule(seed, KINDS), n))


def test_two_rounds_kill_every_kind_twice() -> None:
    for seed in range(1, 50):
        assert Counter(_first(seed, 2 * len(KINDS))) == dict.fromkeys(KINDS, 2)


def test_the_schedule_is_the_seed_s_alone() -> None:
    first = _first(7, 40)
    random.seed(123)                      # a generator someone else shares moves ...
    random.random()
    assert _first(7, 40) == first         # ... and the schedule does not
    # nor the order the processes were listed in
    assert list(itertools.islice(kill_schedule(7, reversed(KINDS)), 40)) == first
    assert len({tuple(_first(seed, 12)) for seed in range(1, 6)}) == 5   # seeds differ
