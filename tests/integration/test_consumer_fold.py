"""The registry consumer against the real broker and PostgreSQL: fold, duplicates, late events."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from registry.consumer.expiry import sweep
from schemas.fold import today_in
from tests.integration.consumer_support import (
    BASE_TIME,
    consumer_running,
    encoded,
    event,
    merge_ends,
    produce,
    random_event,
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


def _counter(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_same_event_three_times_counts_once_applied_twice_duplicate(
        topics, pool: asyncpg.Pool) -> None:
    ev = event("plate.stolen_reported", "CA-ON/DUP1", BASE_TIME, {"agency": "OPP",
                                                                   "report_id": "r1"})
    before = {o: _counter("platereg_events_total", type="plate.stolen_reported", outcome=o)
              for o in ("applied", "duplicate", "rejected")}
    async with consumer_running(topics, max_records=2):
        ends = await produce(topics, encoded([ev, ev, ev]))
        await wait_offsets(pool, topics, ends)
    after = {o: _counter("platereg_events_total", type="plate.stolen_reported", outcome=o)
             for o in ("applied", "duplicate", "rejected")}
    assert {o: after[o] - before[o] for o in after} == {"applied": 1, "duplicate": 2,
                                                        "rejected": 0}
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == 1
    row = await pool.fetchrow("SELECT stolen, event_count FROM plates")
    assert (row["stolen"], row["event_count"]) == (True, 1)


async def _status_messages(settings, count: int) -> list:
    from tests.integration.kafka_support import read_topic

    return await read_topic(settings, settings.topic("plates.status"), at_least=count)


def _issued(subject: str, time: dt.datetime, expires_on: dt.date) -> dict:
    return event("plate.issued", subject, time, {
        "plate_class": "passenger", "expires_on": expires_on.isoformat(),
        "vehicle": {"vin": "V9", "make": "Ford", "model": "F150", "year": 2021,
                    "colour": "black"},
        "owner": {"owner_id": "o-9", "name": "Private Person"}})


async def test_status_changes_reach_the_feed_in_order_and_expiry_is_recorded_once(
        topics, pool: asyncpg.Pool) -> None:
    tz = topics.tz
    now = dt.datetime.now(dt.UTC)
    today = today_in(tz, now)
    steps = [
        _issued("CA-ON/FEED1", now - dt.timedelta(hours=5), today + dt.timedelta(days=300)),
        event("plate.suspended", "CA-ON/FEED1", now - dt.timedelta(hours=4),
              {"reason": "unpaid_fines"}),
        event("plate.owner_updated", "CA-ON/FEED1", now - dt.timedelta(hours=3),
              {"name": "New Name"}),                          # no change of the view
        event("plate.reinstated", "CA-ON/FEED1", now - dt.timedelta(hours=2), {}),
        _issued("CA-ON/FEED2", now - dt.timedelta(hours=5), today),  # expires tonight
    ]
    async with consumer_running(topics, max_records=1):
        ends: dict[int, int] = {}
        for ev in steps:   # one at a time: each is its own batch
            ends = await merge_ends(ends, await produce(topics, encoded([ev])))
            await wait_offsets(pool, topics, ends)
        # the next day, two sweepers at once: FEED2 became expired, recorded once
        tomorrow = now + dt.timedelta(days=1)
        async with pool.acquire() as c1, pool.acquire() as c2:
            counts = await asyncio.gather(sweep(c1, tz, tomorrow), sweep(c2, tz, tomorrow))
        assert sorted(counts) == [0, 1]
        async with pool.acquire() as c1:
            assert await sweep(c1, tz, tomorrow + dt.timedelta(days=1)) == 0
        messages = await _status_messages(topics, 5)
    feed1 = [orjson.loads(m.value) for m in messages if m.key == b"CA-ON/FEED1"]
    feed2 = [orjson.loads(m.value) for m in messages if m.key == b"CA-ON/FEED2"]
    assert [v["status"] for v in feed1] == ["valid", "suspended", "valid"]
    assert feed1[1]["suspension_reasons"] == ["unpaid_fines"]
    assert [v["status"] for v in feed2] == ["valid", "expired"]
    assert all("owner" not in v and "Private" not in m.value.decode()
               for v, m in zip(feed1 + feed2, messages, strict=False))
    rows = await pool.fetch("SELECT plate_key, flagged, was_flagged FROM status_changes "
                            "ORDER BY seq")
    assert [(r["plate_key"], r["flagged"], r["was_flagged"]) for r in rows
            if r["plate_key"] == "CA-ON/FEED2"] == [("CA-ON/FEED2", False, False),
                                                    ("CA-ON/FEED2", True, False)]


async def test_offsets_stored_past_the_log_end_restart_from_the_beginning(
        topics, pool: asyncpg.Pool) -> None:
    # The registry remembers offsets of a log that no longer exists (broker restarted
    # without its data): the new, shorter log must be read from its beginning.
    await pool.execute(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) "
        "SELECT $1, $2, p, 1000000 FROM generate_series(0, 3) AS p",
        topics.consumer_group, topics.topic("plates.events"))
    rng = random.Random(3)
    events = random_events(rng, [f"CA-BC/R{i}" for i in range(20)], 300)
    ends = await produce(topics, encoded(events))
    async with consumer_running(topics):
        await wait_offsets(pool, topics, ends)
        stored = dict(await pool.fetch("SELECT partition, next_offset FROM consumer_offsets"))
        assert stored == ends      # not 1000000, and not beyond the real end
        assert await stored_plates(pool) == reference_fold(events)
        more = random_events(rng, [f"CA-BC/R{i}" for i in range(20)], 50)
        ends = await merge_ends(ends, await produce(topics, encoded(more)))
        await wait_offsets(pool, topics, ends)
    assert await stored_plates(pool) == reference_fold(events + more)
    assert dict(await pool.fetch("SELECT partition, next_offset FROM consumer_offsets")) == ends


@pytest.fixture
async def live_consumer(topics, pool: asyncpg.Pool):
    async with consumer_running(topics, max_records=16):
        yield topics, pool


_example = iter(range(10**6))


@hyp_settings(max_examples=20, deadline=None, derandomize=False,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), plates=st.integers(1, 4), count=st.integers(1, 40),
       duplicates=st.integers(0, 10), late=st.integers(0, 12))
async def test_property_any_order_duplicates_and_late_events_fold_like_the_reference(
        live_consumer, seed: int, plates: int, count: int, duplicates: int, late: int) -> None:
    settings, pool = live_consumer
    rng = random.Random(seed)
    n = next(_example)
    keys = [f"CA-NS/H{n:05d}{i}" for i in range(plates)]
    events = random_events(rng, keys, count)
    late_events = [random_event(rng, rng.choice(keys),
                                BASE_TIME - dt.timedelta(minutes=rng.randrange(1, 300)))
                   for _ in range(late)]
    for ev in events + late_events:        # ids unique across examples (seeds repeat)
        ev["id"] = f"x{n}-{ev['id']}"
    stream = events + [rng.choice(events) for _ in range(duplicates)]
    rng.shuffle(stream)
    await wait_offsets(pool, settings, await produce(settings, encoded(stream)))
    # late events: older than everything applied so far, sent after it was applied
    again = late_events + [rng.choice(events) for _ in range(duplicates // 2)]
    rng.shuffle(again)
    if again:
        await wait_offsets(pool, settings, await produce(settings, encoded(again)))
    accepted = unique_first(events + late_events)
    stored = {k: v for k, v in (await stored_plates(pool)).items() if k in keys}
    assert stored == reference_fold(accepted)
    ids = await pool.fetchval(
        "SELECT count(*) FROM plate_events WHERE plate_key = ANY($1::text[])", keys)
    assert ids == len(accepted)
