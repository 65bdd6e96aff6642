"""The DLQ relay on the real broker: contract headers, and a value the broker cannot take
back published without it (``x-dlq-value-omitted: true``) instead of stalling the DLQ."""

from __future__ import annotations

import pytest
from ingest_support import header

from platereg.dead_letter import VALUE_OMITTED_HEADER, DeadLetter
from platereg.kafka import make_producer
from platereg.outbox import MAX_REQUEST_SIZE
from registry.consumer import store
from registry.consumer.relay import relay_dlq_once
from schemas import topics as contract
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.integration


async def test_a_value_too_large_to_publish_goes_without_it_and_stalls_nothing(
        topics, pool) -> None:
    events_topic = topics.topic(contract.EVENTS)
    huge = b'{"padding": "' + b"x" * MAX_REQUEST_SIZE + b'"}'
    async with pool.acquire() as conn:
        await store.RegistrySql(conn).insert_dlq([
            DeadLetter(events_topic, 0, 10, b"CA-ON/AAA1", b"{not json", "malformed_json",
                       "not JSON"),
            DeadLetter(events_topic, 1, 11, b"CA-ON/AAA2", huge, "too_large",
                       "value over 64 KiB"),
            DeadLetter(events_topic, 2, 12, None, b'{"type": "x"}', "unknown_type",
                       "type: unknown"),
        ])
        producer = make_producer(topics, max_request_size=MAX_REQUEST_SIZE)
        await producer.start()
        try:
            assert await relay_dlq_once(conn, producer, topics) == 3
            assert await relay_dlq_once(conn, producer, topics) == 0    # all marked published
        finally:
            await producer.stop()

    records = sorted(await read_topic(topics, topics.topic(contract.DLQ)),
                     key=lambda r: int(header(r, "x-original-offset")))
    assert [(r.key, r.value) for r in records] == [
        (b"CA-ON/AAA1", b"{not json"), (b"CA-ON/AAA2", None), (None, b'{"type": "x"}')]
    assert [header(r, VALUE_OMITTED_HEADER) for r in records] == [None, b"true", None]
    omitted = records[1]
    assert {k: v for k, v in omitted.headers if k != VALUE_OMITTED_HEADER} == {
        "x-dlq-reason": b"too_large", "x-dlq-detail": b"value over 64 KiB",
        "x-original-topic": events_topic.encode(), "x-original-partition": b"1",
        "x-original-offset": b"11"}
    # The bytes stay in the database, for `platereg dlq replay`.
    assert await pool.fetchval(
        "SELECT value FROM dlq_messages WHERE kafka_offset = 11") == huge
    assert await pool.fetchval(
        "SELECT count(*) FROM dlq_messages WHERE published_at IS NULL") == 0
