"""Outbox relays: status_changes -> plates.status, dlq_messages -> plates.events.dlq.

At least once and in order: a row is marked done (cursor moved, published_at
set) only after the broker acknowledged it (acks=all), so a crash in between
publishes it again. One relay process at a time does the work: it holds a
PostgreSQL session advisory lock, released by the server if the process dies;
other processes wait as stand-bys. A single publisher keeps each plate's
status messages in seq order (aiokafka keeps per-partition order).
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from platereg.db import _init_connection
from platereg.kafka import make_producer
from platereg.logging import get_logger
from platereg.settings import Settings
from registry import store
from schemas import topics

log = get_logger(__name__)

# pg_try_advisory_lock(int, int) keys: a key space apart from the one-bigint locks.
LEADER_LOCK = (0x706C6174, 0x72656C61)  # "plat", "rela"
BATCH = 1000
#: Big enough for any message the consumer fetches (max_partition_fetch_bytes).
MAX_REQUEST_SIZE = 16 * 1024 * 1024
VALUE_OMITTED_HEADER = "x-dlq-value-omitted"


def status_cursor_name(settings: Settings) -> str:
    return f"status:{settings.topic(topics.STATUS)}"


def dlq_headers(row: asyncpg.Record) -> list[tuple[str, bytes]]:
    return [
        (topics.DLQ_REASON_HEADER, row["reason"].encode()),
        (topics.DLQ_DETAIL_HEADER, row["detail"].encode()),
        (topics.ORIGINAL_TOPIC_HEADER, row["topic"].encode()),
        (topics.ORIGINAL_PARTITION_HEADER, str(row["partition"]).encode()),
        (topics.ORIGINAL_OFFSET_HEADER, str(row["kafka_offset"]).encode()),
    ]


async def send_keyed(producer: AIOKafkaProducer, topic: str,
                     messages: list[tuple[bytes, bytes]]) -> list[asyncio.Future]:
    """Queue keyed messages like ``producer.send`` does, one record batch per partition.

    Each message goes to the partition ``send`` would choose (the producer's own
    partitioner), in the given order; building the batches directly skips
    ``send``'s per-message future and accumulator work. Returns the batches'
    delivery futures.
    """
    await producer.partitions_for(topic)   # metadata, as send() waits for it
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in messages:
        partition = producer._partition(topic, None, key, value, key, value)
        by_partition.setdefault(partition, []).append((key, value))
    futures = []
    for partition, records in by_partition.items():
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:   # full
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


async def relay_status_once(conn: asyncpg.Connection, producer: AIOKafkaProducer,
                            settings: Settings, limit: int = BATCH) -> int:
    """Publish the next status changes after the cursor; returns how many."""
    name = status_cursor_name(settings)
    cursor = await store.relay_cursor(conn, name)
    rows = await store.status_changes_after(conn, cursor, limit)
    if not rows:
        return 0
    topic = settings.topic(topics.STATUS)
    futures = await send_keyed(producer, topic, [(r["plate_key"].encode(), orjson.dumps(r["view"]))
                                                 for r in rows])
    await asyncio.gather(*futures)
    await store.set_relay_cursor(conn, name, rows[-1]["seq"])
    return len(rows)


async def relay_dlq_once(conn: asyncpg.Connection, producer: AIOKafkaProducer,
                         settings: Settings, limit: int = BATCH) -> int:
    """Publish unpublished rejections with the contract headers; returns how many."""
    rows = await store.unpublished_dlq(conn, limit)
    if not rows:
        return 0
    topic = settings.topic(topics.DLQ)
    futures = []
    for r in rows:
        try:
            futures.append(await producer.send(topic, key=r["key"], value=r["value"],
                                               headers=dlq_headers(r)))
        except MessageSizeTooLargeError:
            # Larger than the producer or broker allows: publish the record without
            # its value rather than stall the DLQ; the bytes stay in dlq_messages.
            log.warning("DLQ value too large to publish; sent without it", dlq_id=r["id"])
            futures.append(await producer.send(
                topic, key=r["key"], value=None,
                headers=[*dlq_headers(r), (VALUE_OMITTED_HEADER, b"too large")]))
    await asyncio.gather(*futures)
    await store.mark_dlq_published(conn, [r["id"] for r in rows])
    log.info("rejections published to the DLQ", count=len(rows))
    return len(rows)


async def _wait(stop: asyncio.Event, wakeup: asyncio.Event | None, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if wakeup is not None:
        waiters.append(asyncio.ensure_future(wakeup.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    if wakeup is not None:
        wakeup.clear()


async def run_relays(settings: Settings, stop: asyncio.Event,
                     wakeup: asyncio.Event | None = None, idle: float = 0.5) -> None:
    """Relay both outboxes until ``stop``; stand by while another process leads."""
    producer: AIOKafkaProducer | None = None
    delay = 0.5
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(settings.dsn(), timeout=10)
            await _init_connection(conn)
            leading = False
            while not stop.is_set():
                if not leading:
                    leading = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)",
                                                  *LEADER_LOCK)
                    if not leading:
                        await _wait(stop, None, 2.0)
                        continue
                    log.info("relay leading")
                if producer is None:
                    producer = make_producer(settings, max_request_size=MAX_REQUEST_SIZE)
                    await producer.start()
                done = await relay_status_once(conn, producer, settings)
                done += await relay_dlq_once(conn, producer, settings)
                delay = 0.5
                if done == 0:
                    await _wait(stop, wakeup, idle)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                KafkaError) as exc:
            log.warning("relay error; retrying", error=type(exc).__name__)
            if producer is not None and isinstance(exc, KafkaError):
                with contextlib.suppress(Exception):
                    await producer.stop()
                producer = None
            await _wait(stop, None, delay)
            delay = min(delay * 2, 10)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)
    if producer is not None:
        with contextlib.suppress(Exception):
            await producer.stop()


async def serve_relays(settings: Settings, *, metrics_port: int | None = None) -> int:
    """``platereg consume relay``: the relays and the expiry sweep without the consumer."""
    from platereg.ops_server import OpsServer
    from registry.consumer import Health, install_stop_signals, watch_health
    from registry.expiry import run_sweeper

    stop = asyncio.Event()
    install_stop_signals(stop)
    health = Health()
    health.started = True
    ops = OpsServer(settings.host, settings.consumer_metrics_port if metrics_port is None
                    else metrics_port, health.ready)
    await ops.start()
    wakeup = asyncio.Event()
    tasks = [asyncio.create_task(watch_health(settings, health, settings.dsn(), stop)),
             asyncio.create_task(run_sweeper(settings, stop, wakeup))]
    try:
        await run_relays(settings, stop, wakeup)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ops.stop()
    return 0
