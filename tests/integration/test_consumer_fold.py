"""The registry consumer against the real broker and PostgreSQL: fold, duplicates, late events."""

from __future__ import annotations

import random

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from tests.integration.consumer_support import (
    consumer_running,
    encoded,
    produce,
    random_events,
    reference_fold,
    stored_plates,
    unique_first,
    wait_offsets,
)

pytestmark = pytest.mark.integration


async def test_events_in_any_order_fold_like_the_reference(topics, pool: asyncpg.Pool) -> None:
    rng = random.Random(7)
    plates = [f"CA-ON/P{i}" for i in range(12)]
    events = random_events(rng, plates, 400)
    async with consumer_running(topics, max_records=50):
        ends = await produce(topics, encoded(events))
        await wait_offsets(pool, topics, ends)
    assert await stored_plates(pool) == reference_fold(events)
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == len(events)
