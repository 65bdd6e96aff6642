"""The transactional-outbox relay: rows committed with a change go to Kafka after commit.

An outbox is a table that a service writes in the same transaction as the
change it describes; this module publishes its rows to a topic, keyed, and
marks them done only after the broker acknowledged them (the producer uses
acks=all), so a crash in between publishes them again (at least once).

- Order: rows are read in the outbox's order and sent by one publisher; each
  row goes to the partition aiokafka's public ``DefaultPartitioner`` chooses
  for its key (the same as ``producer.send`` would), one record batch per
  partition in row order, so the messages of one key keep their order.
- One leader: a relay works only while it holds a PostgreSQL session advisory
  lock (released by the server if the process dies); other processes stand
  by and take over.
- Two ways to mark rows done: a cursor over a sequence column
  (:class:`CursorOutbox`, for append-only logs that readers also page through)
  or a ``published_at`` column (:class:`FlagOutbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from platereg.db import connect
from platereg.kafka import AUTHORIZATION_ERRORS, make_producer
from platereg.logging import get_logger
from platereg.process import wait
from platereg.settings import Settings

log = get_logger(__name__)

BATCH = 1000
#: Big enough for any message the registry consumer fetches (max_partition_fetch_bytes).
MAX_REQUEST_SIZE = 16 * 1024 * 1024
_PARTITIONER = DefaultPartitioner()


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One message to publish; ``ref`` is the outbox row it came from (id or seq)."""

    ref: Any
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()

    def size(self) -> int:
        return (len(self.key or b"") + len(self.value or b"")
                + sum(len(k) + len(v) for k, v in self.headers))


class Outbox(Protocol):
    """What the relay needs of an outbox."""

    @property
    def name(self) -> str: ...

    def topic(self, settings: Settings) -> str: ...

    async def pending(self, conn: asyncpg.Connection, settings: Settings,
                      limit: int) -> list[OutboxRecord]: ...

    async def done(self, conn: asyncpg.Connection, settings: Settings,
                   records: Sequence[OutboxRecord]) -> None: ...

    def oversize(self, record: OutboxRecord) -> OutboxRecord | None:
        """A replacement for a record larger than the producer may send (None: skip it)."""
        ...


@dataclass(frozen=True)
class CursorOutbox:
    """Rows of ``table`` after a cursor in ``relay_cursors`` (by ``seq_column``)."""

    name: str
    table: str
    seq_column: str
    columns: str                                   # SQL select list besides the seq
    topic_name: str                                # contract topic name (prefix added)
    to_record: Callable[[asyncpg.Record], OutboxRecord]
    on_oversize: Callable[[OutboxRecord], OutboxRecord | None] | None = None

    def topic(self, settings: Settings) -> str:
        return settings.topic(self.topic_name)

    def cursor_name(self, settings: Settings) -> str:
        return f"{self.name}:{self.topic(settings)}"

    async def pending(self, conn: asyncpg.Connection, settings: Settings,
                      limit: int) -> list[OutboxRecord]:
        name = self.cursor_name(settings)
        await conn.execute(
            "INSERT INTO relay_cursors (name) VALUES ($1) ON CONFLICT DO NOTHING", name)
        cursor = await conn.fetchval("SELECT last_seq FROM relay_cursors WHERE name = $1", name)
        rows = await conn.fetch(
            f"SELECT {self.seq_column}, {self.columns} FROM {self.table} "
            f"WHERE {self.seq_column} > $1 ORDER BY {self.seq_column} LIMIT $2", cursor, limit)
        return [self.to_record(r) for r in rows]

    async def done(self, conn: asyncpg.Connection, settings: Settings,
                   records: Sequence[OutboxRecord]) -> None:
        await conn.execute(
            "UPDATE relay_cursors SET last_seq = $2, updated_at = now() WHERE name = $1",
            self.cursor_name(settings), records[-1].ref)

    def oversize(self, record: OutboxRecord) -> OutboxRecord | None:
        return self.on_oversize(record) if self.on_oversize else None


@dataclass(frozen=True)
class FlagOutbox:
    """Rows of ``table`` whose ``published_column`` is NULL, in ``order_by`` order."""

    name: str
    table: str
    id_column: str
    id_type: str                                   # SQL array type of the ids, e.g. bigint[]
    columns: str
    topic_name: str
    to_record: Callable[[asyncpg.Record], OutboxRecord]
    order_by: str = ""
    published_column: str = "published_at"
    on_oversize: Callable[[OutboxRecord], OutboxRecord | None] | None = None
    extra_where: str = field(default="")

    def topic(self, settings: Settings) -> str:
        return settings.topic(self.topic_name)

    async def pending(self, conn: asyncpg.Connection, settings: Settings,
                      limit: int) -> list[OutboxRecord]:
        where = f"{self.published_column} IS NULL" + (
            f" AND {self.extra_where}" if self.extra_where else "")
        rows = await conn.fetch(
            f"SELECT {self.id_column}, {self.columns} FROM {self.table} WHERE {where} "
            f"ORDER BY {self.order_by or self.id_column} LIMIT $1", limit)
        return [self.to_record(r) for r in rows]

    async def done(self, conn: asyncpg.Connection, settings: Settings,
                   records: Sequence[OutboxRecord]) -> None:
        await conn.execute(
            f"UPDATE {self.table} SET {self.published_column} = now() "
            f"WHERE {self.id_column} = ANY($1::{self.id_type})", [r.ref for r in records])

    def oversize(self, record: OutboxRecord) -> OutboxRecord | None:
        return self.on_oversize(record) if self.on_oversize else None


def partition_for(key: bytes | None, partitions: Sequence[int]) -> int:
    """The partition ``producer.send`` picks for ``key`` (aiokafka's DefaultPartitioner)."""
    ordered = sorted(partitions)
    return _PARTITIONER(key, ordered, ordered)


async def send_keyed(producer: AIOKafkaProducer, topic: str,
                     messages: Sequence[tuple[bytes | None, bytes | None]]
                     | Sequence[OutboxRecord]) -> list[asyncio.Future]:
    """Queue messages one record batch per partition, each on its key's partition, in order.

    ``messages`` are (key, value) pairs or :class:`OutboxRecord` (with headers).
    Returns the batches' delivery futures (resolved when the broker acknowledged).
    """
    partitions = sorted(await producer.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes | None, bytes | None, Sequence]]] = {}
    for m in messages:
        key, value, headers = ((m.key, m.value, m.headers) if isinstance(m, OutboxRecord)
                               else (m[0], m[1], ()))
        by_partition.setdefault(partition_for(key, partitions), []).append((key, value, headers))
    futures = []
    for partition, records in by_partition.items():
        batch = producer.create_batch()
        for key, value, headers in records:
            if batch.append(key=key, value=value, timestamp=None,
                            headers=list(headers)) is None:   # full: send, start another
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=list(headers))
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


async def relay_once(conn: asyncpg.Connection, producer: AIOKafkaProducer, settings: Settings,
                     outbox: Outbox, *, limit: int = BATCH,
                     max_request_size: int = MAX_REQUEST_SIZE) -> int:
    """Publish the next pending rows of ``outbox``; mark them done once acknowledged."""
    records = await outbox.pending(conn, settings, limit)
    if not records:
        return 0
    sendable = []
    for r in records:
        if r.size() > max_request_size - 1024:
            replacement = outbox.oversize(r)
            log.warning("outbox record too large to publish", outbox=outbox.name,
                        replaced=replacement is not None)
            if replacement is None:
                continue
            r = replacement
        sendable.append(r)
    if sendable:
        await asyncio.gather(*await send_keyed(producer, outbox.topic(settings), sendable))
    await outbox.done(conn, settings, records)
    return len(records)


# InternalClientError: PostgreSQL went away mid-operation (seen in the e2e test).
RELAY_ERRORS = (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                asyncpg.InternalClientError, KafkaError)


async def run_relay(settings: Settings, outboxes: Sequence[Outbox], stop: asyncio.Event,
                    wakeup: asyncio.Event | None = None, *, lock: tuple[int, int],
                    idle: float = 0.5, max_request_size: int = MAX_REQUEST_SIZE) -> None:
    """Relay ``outboxes`` until ``stop`` while holding the advisory ``lock``; stand by
    while another process holds it."""
    producer: AIOKafkaProducer | None = None
    delay = 0.5
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await connect(settings.dsn(), timeout=10)
            leading = False
            while not stop.is_set():
                if not leading:
                    leading = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *lock)
                    if not leading:
                        await wait(stop, 2.0)
                        continue
                    log.info("relay leading", outboxes=[o.name for o in outboxes])
                if producer is None:
                    producer = make_producer(settings, max_request_size=max_request_size)
                    await producer.start()
                done = 0
                for outbox in outboxes:
                    done += await relay_once(conn, producer, settings, outbox,
                                             max_request_size=max_request_size)
                delay = 0.5
                if done == 0:
                    await wait(stop, idle, wakeup)
        except RELAY_ERRORS as exc:
            if isinstance(exc, AUTHORIZATION_ERRORS):   # waits for an ACL fix, loudly
                log.error("the broker refuses the relay; grant its principal in "
                          "deploy/kafka/acls", error=type(exc).__name__,
                          topics=[o.topic(settings) for o in outboxes])
            else:
                log.warning("relay error; retrying", error=type(exc).__name__)
            if producer is not None and isinstance(exc, KafkaError):
                with contextlib.suppress(Exception):
                    await producer.stop()
                producer = None
            await wait(stop, delay)
            delay = min(delay * 2, 10)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)
    if producer is not None:
        with contextlib.suppress(Exception):
            await producer.stop()
