"""Hostile input on plates.notices: the dispatcher dead-letters what it cannot read.

Malformed, oversized and wrong-schema messages are published on the real broker
among notices that applied events made (relayed as in production). Every good
notice is delivered; every bad message is on the dead-letter topic once, with
its original bytes and position and the reason; the dispatcher keeps reading.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import orjson
import pytest

from platereg.dead_letter import VALUE_OMITTED_HEADER
from platereg.kafka import make_producer
from platereg.settings import Settings
from schemas import topics as contract
from tests.integration.kafka_support import read_topic
from tests.integration.notices_support import (
    apply_events,
    event,
    http_sink,
    issued,
    notices_running,
    owner,
    wait_until,
)

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _good_shape(**changes: object) -> bytes:
    message = {"notice_id": str(uuid.uuid4()), "kind": "reinstated", "jurisdiction": "CA-ON",
               "plate": "BAD1", "owner_id": "own-1", "language": "en", "channels": ["sms"],
               "created_at": "2026-01-01T00:00:00Z", "context": {}}
    message.update(changes)
    return orjson.dumps({k: v for k, v in message.items() if v is not None})


#: (bytes, the reason it must be dead-lettered with)
BAD = [
    (b"{not json", "malformed_json"),
    (b"", "malformed_json"),
    (b'{"notice_id": "a", "notice_id": "b"}', "malformed_json"),      # duplicate key
    (b"[1, 2, 3]", "schema_invalid"),
    (_good_shape(kind="party_invite"), "schema_invalid"),
    (_good_shape(channels=None), "schema_invalid"),                    # field missing
    (_good_shape(channels="sms"), "schema_invalid"),
    (_good_shape(notice_id="not-a-uuid"), "schema_invalid"),
    (_good_shape(context={"pad": "x" * 70_000}), "too_large"),
]


async def _publish(settings: Settings, values: list[bytes]) -> None:
    producer = make_producer(settings, max_request_size=1 << 20)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.topic(contract.NOTICES), key=b"CA-ON/BAD1",
                                         value=value)
    finally:
        await producer.stop()


async def _sent(pool: asyncpg.Pool, n: int) -> bool:
    """At least ``n`` SMS notices sent."""
    return n <= await pool.fetchval(
        "SELECT count(*) FROM notice_deliveries WHERE channel = 'sms' AND outcome = 'sent'")


def _plate_events(n: int) -> list[dict]:
    key = f"CA-ON/DLQ{n}"
    return [issued(key, NOW.date() + dt.timedelta(days=300), NOW - dt.timedelta(hours=1),
                   owner(n, email=False, phone=True)),
            event("plate.reinstated", key, NOW - dt.timedelta(minutes=1), {})]


async def test_bad_notice_messages_go_to_the_dlq_once_with_their_reason(
        topics: Settings, pool: asyncpg.Pool) -> None:
    first, second = BAD[: len(BAD) // 2], BAD[len(BAD) // 2:]
    async with http_sink() as sink:
        settings = topics.model_copy(update={"sms_gateway_url": sink.url})
        await _publish(settings, [value for value, _ in first])
        await apply_events(pool, settings, _plate_events(1), NOW)      # relayed after them
        async with notices_running(settings) as dispatcher:
            await wait_until(lambda: _sent(pool, 1), timeout=60, what="the first notice sent")
            # More bad ones, then another good notice behind them.
            await _publish(settings, [value for value, _ in second])
            await apply_events(pool, settings, _plate_events(2), NOW)
            await wait_until(lambda: _sent(pool, 2), timeout=60,
                             what="the notice behind the bad ones sent")
            assert dispatcher.ready                                   # still reading
    assert len(sink.requests) == 2

    dead = await read_topic(settings, settings.topic(contract.DLQ))
    published = {(r.partition, r.offset): r.value
                 for r in await read_topic(settings, settings.topic(contract.NOTICES))}
    # Each bad message once, with its reason and its original bytes (none omitted: the
    # broker takes them back), and nothing else.
    assert sorted((dict(r.headers)["x-dlq-reason"].decode(), r.value) for r in dead) == sorted(
        (reason, value) for value, reason in BAD)
    positions = set()
    for record in dead:
        headers = dict(record.headers)
        assert headers["x-original-topic"] == settings.topic(contract.NOTICES).encode()
        position = (int(headers["x-original-partition"]), int(headers["x-original-offset"]))
        assert published[position] == record.value                  # where it was read
        positions.add(position)
        assert record.key == b"CA-ON/BAD1" and VALUE_OMITTED_HEADER not in headers
        assert headers["x-dlq-detail"] and b"xxxx" not in headers["x-dlq-detail"]
    assert len(positions) == len(BAD)
