"""Regression test of 48a7333: a fenced batch must not lose the records of a batch
already fetched for the consumer's other partitions.

When a batch is fenced (another consumer stored its partitions' offsets first)
``RegistryConsumer`` bumps its generation, so a batch fetched before the fence
(for other partitions) is dropped as stale. Those records must be fetched
again: every owned partition re-seeks to where it stands. Before the fix only
the fenced partitions re-seeked, and the dropped records were skipped.

The scenario is driven step by step through the consumer's own methods with the
real broker and database: one consumer owns all partitions; it fetches a batch
for partition P and then a batch for partition Q (pending, as in the parse
pipeline); another consumer applies P's records first; the first consumer's P
batch is fenced, its Q batch is dropped; then it runs on to the log end. Every
event must be applied exactly once.
"""

from __future__ import annotations

import random
import time

import asyncpg
import pytest
from aiokafka import TopicPartition

from platereg.kafka import make_consumer
from registry.consumer.loop import RegistryConsumer
from tests.integration.consumer_support import (
    encoded,
    produce,
    random_events,
    reference_fold,
    stored_plates,
)
from wiring.cli import batch_hook

pytestmark = pytest.mark.integration


async def stored_offsets(pool: asyncpg.Pool, consumer: RegistryConsumer) -> dict[int, int]:
    rows = await pool.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 "
        "AND topic = $2", consumer.group, consumer.topic)
    return {r["partition"]: r["next_offset"] for r in rows}


async def fetch_from(consumer: RegistryConsumer, tp: TopicPartition, max_records: int) -> list:
    """Records of one partition only (getmany waits for them; no sleep)."""
    assert consumer.consumer is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = await consumer.consumer.getmany(tp, timeout_ms=1000, max_records=max_records)
        if got.get(tp):
            return got[tp]
    raise AssertionError(f"no records fetched from partition {tp.partition}")


async def run_to_end(consumer: RegistryConsumer, pool: asyncpg.Pool,
                     ends: dict[int, int]) -> None:
    """The consumer's fetch-and-apply steps until the stored offsets reach the log ends."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stored = await stored_offsets(pool, consumer)
        if all(stored.get(p, 0) >= o for p, o in ends.items()):
            return
        records, generation = await consumer._fetch(200)
        if records:
            await consumer._handle(*consumer._start_parse(records, generation))
    raise AssertionError(f"consumer did not reach the log ends: stored "
                         f"{await stored_offsets(pool, consumer)}, ends {ends}")


async def test_a_batch_dropped_after_a_fence_is_fetched_again(
        topics, pool: asyncpg.Pool) -> None:
    events = random_events(random.Random(48), [f"CA-MB/R{i:03d}" for i in range(80)], 800)
    ends = await produce(topics, encoded(events))
    assert len(ends) >= 2, ends
    p, q = sorted(ends, key=lambda part: ends[part], reverse=True)[:2]
    a = RegistryConsumer(topics, batch_hook=batch_hook())
    a.pool = pool
    a.consumer = make_consumer(topics)
    await a.consumer.start()
    try:
        tps = [TopicPartition(a.topic, part) for part in range(4)]
        a.consumer.assign(tps)
        await a._assigned(tps)
        assert a.positions == dict.fromkeys(range(4), 0)
        # A fetches a batch for P, then (pipelined) a partial batch for Q
        p_batch = a._start_parse(await fetch_from(a, tps[p], 100), a.generation)
        q_records = await fetch_from(a, tps[q], 20)
        q_batch = a._start_parse(q_records, a.generation)
        assert len(q_records) < ends[q]
        # another consumer (the partition's new owner) applies P's records first
        b = RegistryConsumer(topics, batch_hook=batch_hook())
        b.pool, b.consumer, b.positions = pool, a.consumer, {p: 0}
        await b._handle(*b._start_parse(p_batch[0], b.generation))
        p_next = p_batch[0][-1].offset + 1
        assert (await stored_offsets(pool, a))[p] == p_next
        # A's P batch is fenced; its Q batch, fetched before the fence, is dropped
        await a._handle(*p_batch)
        assert a.positions[p] == p_next
        await a._handle(*q_batch)
        assert (await stored_offsets(pool, a))[q] == 0
        # ... and Q's records are fetched again: A runs on to the log ends
        await run_to_end(a, pool, ends)
    finally:
        await a.consumer.stop()
    assert await stored_offsets(pool, a) == {part: ends.get(part, 0) for part in range(4)}
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == len(events)
    assert await stored_plates(pool) == reference_fold(events)
