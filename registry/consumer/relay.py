"""The registry's outboxes: status_changes -> plates.status, dlq_messages -> plates.events.dlq.

Both are relayed by the generic outbox relay (``platereg.outbox``): at least
once, marked done only after acks=all, in order per key, one leading process
at a time (a PostgreSQL advisory lock; other processes stand by). Status
changes are an append-only log that GET /v1/hotlist also reads, so they are
relayed by cursor; rejections carry a ``published_at`` flag.
"""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import orjson

from platereg.dead_letter import VALUE_OMITTED_HEADER, dlq_headers, headers_of_json, kept_headers
from platereg.logging import get_logger
from platereg.outbox import (
    CursorOutbox,
    FlagOutbox,
    OutboxRecord,
    relay_once,
    run_relay,
    send_keyed,
)
from platereg.settings import Settings
from schemas import topics

log = get_logger(__name__)

__all__ = ["send_keyed", "status_outbox", "dlq_outbox", "run_relays"]

# pg_try_advisory_lock(int, int) keys: a key space apart from the one-bigint locks.
LEADER_LOCK = (0x706C6174, 0x72656C61)  # "plat", "rela"


def _status_record(r: asyncpg.Record) -> OutboxRecord:
    return OutboxRecord(r["seq"], r["plate_key"].encode(), orjson.dumps(r["view"]))


def _dlq_record(r: asyncpg.Record) -> OutboxRecord:
    """The dead-letter copy: the original key, value and headers, then the DLQ headers."""
    return OutboxRecord(r["id"], r["key"], r["value"], [
        *kept_headers(headers_of_json(r["headers"])),
        *dlq_headers(r["reason"], r["detail"], r["topic"], r["partition"], r["kafka_offset"])])


def _dlq_without_value(record: OutboxRecord) -> OutboxRecord:
    # Larger than the producer allows: publish the record without its value, with
    # the contract's `x-dlq-value-omitted: true`, rather than stall the DLQ; the
    # bytes stay in dlq_messages (for `platereg dlq replay`).
    return dataclasses.replace(record, value=None,
                               headers=[*record.headers, (VALUE_OMITTED_HEADER, b"true")])


status_outbox = CursorOutbox(
    name="status", table="status_changes", seq_column="seq", columns="plate_key, view",
    topic_name=topics.STATUS, to_record=_status_record)

dlq_outbox = FlagOutbox(
    name="dlq", table="dlq_messages", id_column="id", id_type="bigint[]",
    columns="topic, partition, kafka_offset, key, value, reason, detail, headers",
    topic_name=topics.DLQ, to_record=_dlq_record, on_oversize=_dlq_without_value)


def status_cursor_name(settings: Settings) -> str:
    return status_outbox.cursor_name(settings)


async def relay_status_once(conn: asyncpg.Connection, producer, settings: Settings) -> int:  # noqa: ANN001
    return await relay_once(conn, producer, settings, status_outbox)


async def relay_dlq_once(conn: asyncpg.Connection, producer, settings: Settings) -> int:  # noqa: ANN001
    return await relay_once(conn, producer, settings, dlq_outbox)


async def run_relays(settings: Settings, stop: asyncio.Event,
                     wakeup: asyncio.Event | None = None, idle: float = 0.5) -> None:
    """Relay both outboxes until ``stop``; stand by while another process leads."""
    await run_relay(settings, [status_outbox, dlq_outbox], stop, wakeup,
                    lock=LEADER_LOCK, idle=idle)
