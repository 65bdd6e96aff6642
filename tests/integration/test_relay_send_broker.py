"""registry.consumer.relay.send_keyed against the real broker: every message lands on the partition
``producer.send`` picks (aiokafka's DefaultPartitioner, murmur2 of the key), in the given
order within each partition, across several record batches."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from platereg.kafka import make_producer
from platereg.outbox import send_keyed
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 5


async def _create_topics(settings, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


def _placement(records) -> dict[int, list[tuple[bytes, bytes]]]:
    out: dict[int, list[tuple[bytes, bytes]]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        out.setdefault(r.partition, []).append((r.key, r.value))
    return out


async def test_send_keyed_matches_send_partitions_and_keeps_order(settings) -> None:
    keyed, plain = (f"{settings.topic_prefix}relay-{n}-{uuid.uuid4().hex[:6]}"
                    for n in ("keyed", "plain"))
    await _create_topics(settings, [keyed, plain])
    messages = [(f"CA-ON/P{i % 23}".encode(), f"value {i:04d} ".encode() * 8)
                for i in range(400)]
    # Small batches: each partition's messages span several record batches.
    producer = make_producer(settings, max_batch_size=1024)
    await producer.start()
    try:
        futures = await send_keyed(producer, keyed, messages)
        await asyncio.gather(*futures)
        sends = [await producer.send(plain, key=k, value=v) for k, v in messages]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    assert len(futures) > PARTITIONS                    # more than one batch per partition

    got = _placement(await read_topic(settings, keyed))
    assert _placement(await read_topic(settings, plain)) == got
    partitioner = DefaultPartitioner()
    every = list(range(PARTITIONS))
    expected: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in messages:
        expected.setdefault(partitioner(key, every, every), []).append((key, value))
    assert got == expected
    assert len(got) > 1
