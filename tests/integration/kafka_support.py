"""Reading a topic back in tests: every record, all partitions, from the beginning."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from platereg.kafka import make_admin, make_consumer
from platereg.settings import Settings
from schemas.topics import EVENTS


async def read_topic(settings: Settings, topic: str | None = None, *, at_least: int = 0,
                     timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` (default: the events topic) up to its end offsets, and at
    least ``at_least`` records (waiting for them until ``timeout``)."""
    topic = topic or settings.topic(EVENTS)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    partitions = await _partitions(settings, topic, deadline)
    consumer = make_consumer(settings, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while True:
            end = await consumer.end_offsets(tps)
            positions = {tp: await consumer.position(tp) for tp in tps}
            if len(records) >= at_least and all(positions[tp] >= end[tp] for tp in tps):
                return records
            assert loop.time() < deadline, (
                f"timed out reading {topic}: {len(records)} records, wanted {at_least}")
            batch = await consumer.getmany(timeout_ms=300)
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()


async def _partitions(settings: Settings, topic: str, deadline: float) -> list[int]:
    """The topic's partition numbers, as the broker describes them."""
    loop = asyncio.get_running_loop()
    admin = make_admin(settings)
    await admin.start()
    try:
        while True:
            [described] = await admin.describe_topics([topic])
            partitions = sorted(p["partition"] for p in described.get("partitions") or ())
            if partitions and not described.get("error_code"):
                return partitions
            assert loop.time() < deadline, f"topic {topic} not found: {described}"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
