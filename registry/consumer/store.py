"""SQL of the registry's write side: the consumer, the expiry sweep and the quarantine
commands (asyncpg; the relays are in relay.py).

Each statement is declared once, as a method of :class:`RegistrySql` (one connection,
in the caller's transaction). :class:`SqlStore` adds the source policy and the batch
hook to it: it is the PostgreSQL ``BatchStore`` of
:func:`registry.consumer.apply.apply_batch`, whose protocol is the only other
declaration of these operations (the unit tests hold an in-memory one to it).

Every write is set-based (``unnest`` of arrays): one statement per table per
batch, whatever the batch size. jsonb values travel as text and are cast in
SQL (faster than per-element codecs).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import asyncpg
import orjson

from platereg.dead_letter import DeadLetter, headers_json
from platereg.faults import crash_point
from platereg.plate_rows import state_columns, state_from_row
from platereg.security.policy_store import PolicyCache
from platereg.security.producer_store import ProducerCache, Producers
from registry.consumer.apply import Fenced, QuarantineRow
from registry.consumer.batch import Parsed, StatusChange
from schemas.fold import HistoryEvent, PlateState
from schemas.policy import Policy

# Writers of status_changes take this lock so that seq order = commit order.
STATUS_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('status_changes'))"

_STATE = state_columns()


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class BatchHook(Protocol):
    """Work another service does inside the batch transaction, given the batch's state
    transitions (the plates' states before and after, the new events by plate, the
    re-folded plates' histories); returns counts per kind. The composition root
    (``wiring.cli``) passes the notices' one, so a notice commits with its event."""

    async def __call__(self, conn: asyncpg.Connection, old: Mapping[str, PlateState | None],
                       new_states: Mapping[str, PlateState],
                       by_plate: Mapping[str, Sequence[Parsed]],
                       history: Mapping[str, Sequence[HistoryEvent]],
                       now: dt.datetime) -> Counter: ...


class RegistrySql:
    """The registry's statements on one connection, in the caller's transaction (the
    consumer's batch, the expiry sweep, a quarantine release)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # ----------------------------------------------------------------------- offsets

    async def ensure_offsets(self, group: str, topic: str,
                             initial: Mapping[int, int]) -> dict[int, int]:
        """Create missing offset rows with ``initial`` offsets; return the stored offsets."""
        parts = list(initial)
        await self.conn.execute(
            """INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)
               SELECT $1, $2, p, o FROM unnest($3::int[], $4::bigint[]) AS t(p, o)
               ON CONFLICT DO NOTHING""",
            group, topic, parts, [initial[p] for p in parts],
        )
        rows = await self.conn.fetch(
            """SELECT partition, next_offset FROM consumer_offsets
               WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])""",
            group, topic, parts,
        )
        return {r["partition"]: r["next_offset"] for r in rows}

    async def reset_offset(self, group: str, topic: str, partition: int,
                           expected: int, new: int) -> bool:
        """Compare-and-set one stored offset (used when it lies past the log end)."""
        status = await self.conn.execute(
            """UPDATE consumer_offsets SET next_offset = $5, updated_at = now()
               WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $4""",
            group, topic, partition, expected, new,
        )
        return status.endswith(" 1")

    async def lock_offsets(self, group: str, topic: str,
                           partitions: Sequence[int]) -> dict[int, int]:
        """Lock and read the stored offsets of ``partitions`` (fences concurrent consumers)."""
        rows = await self.conn.fetch(
            """SELECT partition, next_offset FROM consumer_offsets
               WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])
               ORDER BY partition FOR UPDATE""",
            group, topic, list(partitions),
        )
        return {r["partition"]: r["next_offset"] for r in rows}

    async def set_offsets(self, group: str, topic: str,
                          offsets: Mapping[int, int]) -> None:
        """Store the offsets after a batch, only forward: a partition whose stored offset
        is not below the new one (another consumer stored past it, or its row is gone)
        is a fence violation, :class:`Fenced` with the stored offsets, which aborts the
        batch's transaction."""
        crash_point("offsets.store")
        parts = sorted(offsets)
        moved = await self.conn.fetch(
            """UPDATE consumer_offsets AS c SET next_offset = t.o, updated_at = now()
               FROM unnest($3::int[], $4::bigint[]) AS t(p, o)
               WHERE c.consumer_group = $1 AND c.topic = $2 AND c.partition = t.p
                 AND c.next_offset < t.o
               RETURNING c.partition""",
            group, topic, parts, [offsets[p] for p in parts],
        )
        if len(moved) != len(parts):
            raise Fenced(await self.lock_offsets(group, topic, parts))

    # ----------------------------------------------------------------------- events

    async def known_fingerprints(self, ids: Iterable[tuple[str, str]]
                                 ) -> dict[tuple[str, str], str]:
        """(source, id) -> fingerprint of the stored events among ``ids``."""
        pairs = list(set(ids))
        rows = await self.conn.fetch(
            """SELECT e.source, e.event_id, e.fingerprint
               FROM unnest($1::text[], $2::text[]) AS x(s, i)
               JOIN plate_events e ON e.source = x.s AND e.event_id = x.i""",
            [p[0] for p in pairs], [p[1] for p in pairs],
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def insert_events(self, events: Sequence[Parsed]) -> int:
        """Insert new events; returns how many were inserted (fewer means a concurrent writer)."""
        if not events:
            return 0
        status = await self.conn.execute(
            """INSERT INTO plate_events (event_id, plate_key, type, source, event_time, data,
                                         fingerprint, kafka_partition, kafka_offset,
                                         producer, authtype, authid)
               SELECT i, k, t, s, tm, d::jsonb, f, p, o, pr, at, ai
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                           $6::text[], $7::text[], $8::int[], $9::bigint[], $10::text[],
                           $11::text[], $12::text[])
                    AS x(i, k, t, s, tm, d, f, p, o, pr, at, ai)
               ON CONFLICT (source, event_id) DO NOTHING""",
            [e.event_id for e in events], [e.plate_key for e in events],
            [e.type for e in events], [e.source for e in events], [e.time for e in events],
            [orjson.dumps(e.data).decode() if (d := e.data_json) is None else d for e in events],
            [e.fingerprint for e in events],
            [e.partition for e in events], [e.offset for e in events],
            [e.producer for e in events], [e.authtype for e in events],
            [e.authid for e in events],
        )
        return int(status.rsplit(" ", 1)[1])

    async def history(self, keys: Sequence[str]) -> dict[str, list[HistoryEvent]]:
        """Every stored event of these plates (the caller sorts: fold order is Python's)."""
        out: dict[str, list[HistoryEvent]] = {k: [] for k in keys}
        rows = await self.conn.fetch(
            "SELECT plate_key, event_id, type, event_time, data, source FROM plate_events "
            "WHERE plate_key = ANY($1::text[])", list(keys))
        for r in rows:
            out[r["plate_key"]].append(
                HistoryEvent(event_id=r["event_id"], type=r["type"], time=r["event_time"],
                             data=r["data"], source=r["source"]))
        return out

    # ----------------------------------------------------------------------- plates

    async def lock_plates(self, keys: Sequence[str]) -> dict[str, PlateState]:
        """Lock and read the existing plates among ``keys`` (in key order: no deadlocks)."""
        rows = await self.conn.fetch(
            f"SELECT {_STATE} FROM plates WHERE plate_key = ANY($1::text[])"
            " ORDER BY plate_key FOR UPDATE",
            sorted(keys))
        states = (state_from_row(r) for r in rows)
        return {s.plate_key: s for s in states}

    async def upsert_plates(self, states: Sequence[PlateState]) -> set[str]:
        """Write the states; returns the keys that were inserted (not updated; only those
        rows come back)."""
        if not states:
            return set()
        rows = await self.conn.fetch(
            """WITH upserted AS (
               INSERT INTO plates AS p (plate_key, jurisdiction, plate, issued, plate_class,
                   expires_on, vehicle, owner_id, owner, device_id, suspension_reasons, stolen,
                   cancelled, last_event_time, last_event_id, event_count, updated_at)
               SELECT k, j, pl, iss, cls, exp, veh::jsonb, oid, own::jsonb, dev,
                      CASE WHEN sr = '' THEN '{}'::text[] ELSE string_to_array(sr, ',') END,
                      st, ca, lt, li, n, now()
               FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::date[],
                           $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                           $12::bool[], $13::bool[], $14::timestamptz[], $15::text[], $16::int[])
                    AS x(k, j, pl, iss, cls, exp, veh, oid, own, dev, sr, st, ca, lt, li, n)
               ON CONFLICT (plate_key) DO UPDATE SET
                   issued = EXCLUDED.issued, plate_class = EXCLUDED.plate_class,
                   expires_on = EXCLUDED.expires_on, vehicle = EXCLUDED.vehicle,
                   owner_id = EXCLUDED.owner_id, owner = EXCLUDED.owner,
                   device_id = EXCLUDED.device_id, suspension_reasons = EXCLUDED.suspension_reasons,
                   stolen = EXCLUDED.stolen, cancelled = EXCLUDED.cancelled,
                   last_event_time = EXCLUDED.last_event_time,
                   last_event_id = EXCLUDED.last_event_id, event_count = EXCLUDED.event_count,
                   updated_at = now()
               RETURNING plate_key, (xmax = 0) AS inserted)
               SELECT plate_key FROM upserted WHERE inserted""",
            [s.plate_key for s in states], [s.jurisdiction for s in states],
            [s.plate for s in states], [s.issued for s in states],
            [s.plate_class for s in states], [s.expires_on for s in states],
            [_json(s.vehicle) for s in states], [s.owner_id for s in states],
            [_json(s.owner) for s in states], [s.device_id for s in states],
            [",".join(s.suspension_reasons) for s in states],
            [s.stolen for s in states], [s.cancelled for s in states],
            [s.last_event_time for s in states], [s.last_event_id for s in states],
            [s.event_count for s in states],
        )
        return {r[0] for r in rows}

    # ----------------------------------------------------------------------- outboxes

    async def insert_status_changes(self, changes: Sequence[StatusChange]) -> None:
        """Record changes under the status_changes lock (held to commit: seq = commit order)."""
        if not changes:
            return
        await self.conn.execute(STATUS_LOCK_SQL)
        await self.conn.execute(
            """INSERT INTO status_changes (plate_key, view, flagged, was_flagged)
               SELECT k, v::jsonb, f, w
               FROM unnest($1::text[], $2::text[], $3::bool[], $4::bool[]) WITH ORDINALITY
                    AS x(k, v, f, w, n)
               ORDER BY n""",
            [c.plate_key for c in changes], [orjson.dumps(c.view).decode() for c in changes],
            [c.flagged for c in changes], [c.was_flagged for c in changes],
        )

    async def insert_dlq(self, letters: Sequence[DeadLetter]) -> None:
        """Record rejections (the records as consumed, and why) for the DLQ relay."""
        if not letters:
            return
        await self.conn.execute(
            """INSERT INTO dlq_messages (topic, partition, kafka_offset, key, value, reason, detail,
                                         headers)
               SELECT tp, p, o, k, v, r, d, h::jsonb
               FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[], $5::bytea[],
                           $6::text[], $7::text[], $8::text[]) AS x(tp, p, o, k, v, r, d, h)
               ON CONFLICT (topic, partition, kafka_offset) DO NOTHING""",
            [d.topic for d in letters], [d.partition for d in letters],
            [d.offset for d in letters], [d.key for d in letters], [d.value for d in letters],
            [d.reason for d in letters], [d.detail for d in letters],
            [headers_json(d.original_headers) for d in letters],
        )

    # ----------------------------------------------------------------------- expiry

    async def expiry_candidates(self, today: dt.date) -> list:
        """Issued plates expired by ``today`` not yet marked for their current expiry date,
        with the last view recorded for each."""
        return await self.conn.fetch(
            f"SELECT {_STATE}, (SELECT s.view FROM status_changes s"
            " WHERE s.plate_key = p.plate_key ORDER BY s.seq DESC LIMIT 1) AS last_view"
            """ FROM plates p WHERE p.issued AND p.expires_on < $1
                  AND NOT EXISTS (SELECT 1 FROM expiry_marks m
                                  WHERE m.plate_key = p.plate_key AND m.expires_on = p.expires_on)
                  ORDER BY p.plate_key""",
            today)

    async def mark_expired(self, keys: Sequence[str],
                           dates: Sequence[dt.date | None]) -> None:
        await self.conn.execute(
            """INSERT INTO expiry_marks (plate_key, expires_on)
               SELECT * FROM unnest($1::text[], $2::date[]) ON CONFLICT DO NOTHING""",
            list(keys), list(dates))

    # ----------------------------------------------------------------------- quarantine

    async def lock_quarantined(self, keys: Sequence[str]) -> set[str]:
        """The quarantined plates among ``keys``, share-locked to the end of the transaction
        (a concurrent ``platereg quarantine release`` waits for this batch, or this batch
        for it)."""
        rows = await self.conn.fetch(
            "SELECT plate_key FROM quarantined_plates WHERE plate_key = ANY($1::text[])"
            " ORDER BY plate_key FOR SHARE", sorted(keys))
        return {r[0] for r in rows}

    async def quarantine(self, rows: Sequence[QuarantineRow]) -> None:
        """Quarantine plates; a plate already in quarantine keeps its first reason and counts
        the held events."""
        if not rows:
            return
        await self.conn.execute(
            """INSERT INTO quarantined_plates AS q (plate_key, reason, event_id, held_events)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
               ON CONFLICT (plate_key) DO UPDATE SET
                   held_events = q.held_events + EXCLUDED.held_events, updated_at = now()""",
            [r.plate_key for r in rows], [r.reason for r in rows], [r.event_id for r in rows],
            [r.held_events for r in rows])

    async def list_quarantined(self, limit: int = 100) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            "SELECT plate_key, reason, event_id, held_events, quarantined_at, updated_at"
            " FROM quarantined_plates ORDER BY quarantined_at, plate_key LIMIT $1", limit)


class SqlStore(RegistrySql):
    """:class:`registry.consumer.apply.BatchStore` in PostgreSQL: the statements of
    :class:`RegistrySql` on the batch's connection, the source policy and the
    registered producers as of this transaction, and ``hook`` run on the same connection
    (so the notices commit, or roll back, with the batch's events and offsets)."""

    def __init__(self, conn: asyncpg.Connection, policies: PolicyCache | None = None, *,
                 hook: BatchHook, producers: ProducerCache | None = None) -> None:
        super().__init__(conn)
        self.policies = policies or PolicyCache()
        self.producer_cache = producers or ProducerCache()
        self.hook = hook

    async def source_policy(self) -> Policy:
        return await self.policies.current(self.conn)

    async def producers(self) -> Producers:
        return await self.producer_cache.current(self.conn)

    async def record_notices(self, old: Mapping[str, PlateState | None],
                             new_states: Mapping[str, PlateState],
                             by_plate: Mapping[str, Sequence[Parsed]],
                             history: Mapping[str, Sequence[HistoryEvent]],
                             now: dt.datetime) -> Counter:
        return await self.hook(self.conn, old, new_states, by_plate, history, now)
