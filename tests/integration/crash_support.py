"""Helpers of the crash tests: what a crash may not leave behind, counted in the database.

* :func:`watch_offsets` records every change of a stored offset (a trigger on
  ``consumer_offsets``, in the test's own database); :func:`backward_moves` counts those
  that moved an offset back.
* :func:`uncovered_events` counts the stored events, by (source, id), whose Kafka record
  lies at or past its partition's stored offset: records the consumer will read again
  although their events are already applied (the duplicate check would hide them).
* :func:`figures` prints one line of a crash test's figures (events, kills, restarts,
  violations), the line the report quotes.
"""

from __future__ import annotations

import asyncpg

from platereg.settings import Settings
from schemas import topics

WATCH_SQL = """
CREATE TABLE IF NOT EXISTS test_offset_moves (
    id bigserial PRIMARY KEY, partition int NOT NULL, old bigint NOT NULL, new bigint NOT NULL);
CREATE OR REPLACE FUNCTION test_offset_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_offset_moves (partition, old, new)
    VALUES (NEW.partition, OLD.next_offset, NEW.next_offset);
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS test_offset_moved ON consumer_offsets;
CREATE TRIGGER test_offset_moved AFTER UPDATE OF next_offset ON consumer_offsets
    FOR EACH ROW EXECUTE FUNCTION test_offset_moved();
"""


async def watch_offsets(pool: asyncpg.Pool) -> None:
    await pool.execute(WATCH_SQL)


async def backward_moves(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM test_offset_moves WHERE new < old")


async def offset_moves(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM test_offset_moves")


async def uncovered_events(pool: asyncpg.Pool, settings: Settings) -> int:
    """Distinct (source, id) of stored events not covered by the stored offsets."""
    return await pool.fetchval(
        """SELECT count(DISTINCT (e.source, e.event_id)) FROM plate_events e
           LEFT JOIN consumer_offsets o ON o.consumer_group = $1 AND o.topic = $2
                 AND o.partition = e.kafka_partition
           WHERE o.next_offset IS NULL OR e.kafka_offset >= o.next_offset""",
        settings.consumer_group, settings.topic(topics.EVENTS))


async def stored_offsets(pool: asyncpg.Pool, settings: Settings) -> dict[int, int]:
    rows = await pool.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1"
        " AND topic = $2", settings.consumer_group, settings.topic(topics.EVENTS))
    return {r["partition"]: r["next_offset"] for r in rows}


def figures(test: str, **values: object) -> str:
    """``crash figures <test>: events=... kills=... restarts=... violations=...`` (printed;
    ``pytest -s`` shows it)."""
    line = f"crash figures {test}: " + " ".join(f"{k}={v}" for k, v in values.items())
    print(line)
    return line
