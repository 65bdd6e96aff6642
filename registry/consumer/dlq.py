"""Operator side of the dead-letter records: list them, replay them to plates.events."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from platereg.db import connect
from platereg.dead_letter import headers_of_json
from platereg.kafka import make_producer
from platereg.settings import Settings
from schemas import topics


async def list_rejections(settings: Settings, *, reason: str | None = None, limit: int = 50,
                          include_replayed: bool = False) -> list[asyncpg.Record]:
    conn = await connect(settings.dsn())
    try:
        return await conn.fetch(
            """SELECT id, topic, partition, kafka_offset, reason, detail, received_at,
                      published_at, replayed_at, purged_at
               FROM dlq_messages
               WHERE ($1::text IS NULL OR reason = $1) AND ($2 OR replayed_at IS NULL)
               ORDER BY id DESC LIMIT $3""",
            reason, include_replayed, limit)
    finally:
        await conn.close()


async def replay(settings: Settings, *, ids: Sequence[int] = (), reason: str | None = None) -> int:
    """Re-produce the chosen records (original key, bytes and headers) to plates.events,
    then mark them replayed. At least once: a crash before the mark replays them again,
    and the registry counts the second copy as a duplicate. Nothing is signed anew: a
    record passes only with its producer's own signature (a rejection for
    ``unauthorized_source`` replays after the producer is registered, or its secret
    restored, never by laundering). Records whose bytes ``platereg purge`` removed (past
    PLATEREG_DEAD_LETTER_RETENTION_DAYS) are left out."""
    conn = await connect(settings.dsn())
    producer = make_producer(settings, max_request_size=8 * 1024 * 1024)
    try:
        rows = await conn.fetch(
            """SELECT id, key, value, headers FROM dlq_messages
               WHERE (id = ANY($1::bigint[]) OR ($2::text IS NOT NULL AND reason = $2
                      AND replayed_at IS NULL)) AND purged_at IS NULL
               ORDER BY id""",
            list(ids), reason)
        if not rows:
            return 0
        await producer.start()
        topic = settings.topic(topics.EVENTS)
        futures = [await producer.send(topic, key=r["key"], value=r["value"],
                                       headers=headers_of_json(r["headers"])) for r in rows]
        for fut in futures:
            await fut
        await conn.execute("UPDATE dlq_messages SET replayed_at = now() WHERE id = ANY($1)",
                           [r["id"] for r in rows])
        return len(rows)
    finally:
        await producer.stop()
        await conn.close()
