"""The registry API's queries (thin: SQL in, rows out; rules live in registry.domain).

Plate states are read with ``platereg.plate_rows`` (its column list first in every
select); enforcement queries select ``NULL AS owner``: owner data is not even
read from the database for an enforcement key. asyncpg prepares and caches every
statement per connection, so the hot lookups are prepared statements.

Single lookups on a pool are coalesced (:class:`PlateReader`): the lookups that
arrive in one turn of the event loop become one ``plate_key = ANY($1)``
statement on one connection, so 64 concurrent requests cost a few round trips
and connections instead of 64.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import weakref
from collections.abc import Sequence
from typing import Any

import asyncpg

from platereg.plate_rows import state_columns
from registry.domain import VIEW_PARTS
from schemas.fold import HistoryEvent

ENFORCEMENT_COLUMNS = state_columns(with_owner=False)
FULL_COLUMNS = state_columns()


def _columns(with_owner: bool) -> str:
    return FULL_COLUMNS if with_owner else ENFORCEMENT_COLUMNS


_PLATE = {o: f"SELECT {_columns(o)} FROM plates WHERE plate_key = $1 AND issued"
          for o in (False, True)}
_PLATES = {o: f"SELECT {_columns(o)}, plate_key FROM plates"
              " WHERE plate_key = ANY($1::text[]) AND issued" for o in (False, True)}


async def plate(conn: asyncpg.Pool | asyncpg.Connection, key: str,
                with_owner: bool) -> asyncpg.Record | None:
    """The issued plate with this key, or None (no such plate, or not issued).

    On a pool (one that allows weak references, as ``platereg.db.create_pool``'s
    does) the lookup is coalesced with the others of this loop turn."""
    if isinstance(conn, asyncpg.Pool):
        reader = _reader_of(conn)
        if reader is not None:
            return await reader.plate(key, with_owner)
    return await conn.fetchrow(_PLATE[with_owner], key)


class PlateReader:
    """Coalesces concurrent single lookups on one pool: the keys asked for during one
    loop turn are read with one ``= ANY($1)`` statement (per owner/no-owner column
    set), and each caller gets its own row. While a statement runs, the next turn's
    lookups start the next one (up to the pool's size in flight)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._pending: dict[bool, dict[str, list[asyncio.Future[Any]]]] = {False: {}, True: {}}
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.statements = 0   # statements run (a figure for tests and profiles)

    async def plate(self, key: str, with_owner: bool) -> asyncpg.Record | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[with_owner].setdefault(key, []).append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        for with_owner, waiting in self._pending.items():
            if waiting:
                self._pending[with_owner] = {}
                task = asyncio.get_running_loop().create_task(self._read(with_owner, waiting))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _read(self, with_owner: bool,
                    waiting: dict[str, list[asyncio.Future[Any]]]) -> None:
        self.statements += 1
        try:
            rows = await plates(self.pool, list(waiting), with_owner)
        except BaseException as exc:  # every caller sees the statement's failure
            for futures in waiting.values():
                for future in futures:
                    if future.done():
                        continue
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:             # this task was cancelled (shutdown)
                        future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for key, futures in waiting.items():
            row = rows.get(key)
            for future in futures:
                if not future.done():   # a caller may have gone (client disconnect)
                    future.set_result(row)


_readers: weakref.WeakKeyDictionary[Any, PlateReader] = weakref.WeakKeyDictionary()


def _reader_of(pool: asyncpg.Pool) -> PlateReader | None:
    try:
        reader = _readers.get(pool)
        if reader is None:
            reader = _readers[pool] = PlateReader(pool)
    except TypeError:   # asyncpg's own Pool has __slots__ and no weak references
        return None
    return reader


async def plates(conn: asyncpg.Pool | asyncpg.Connection, keys: Sequence[str],
                 with_owner: bool) -> dict[str, asyncpg.Record]:
    """Issued plates among ``keys`` (one statement), by plate key."""
    rows = await conn.fetch(_PLATES[with_owner], list(keys))
    return {r["plate_key"]: r for r in rows}


_VIEW_SQL = {"smart_plate": "device_id IS NOT NULL", "version": "event_count"}
#: The select list of :func:`view_rows`: ``registry.domain.VIEW_PARTS`` in order (what
#: ``registry.domain.view_from`` takes), then the owner (NULL for enforcement) and the key.
VIEW_COLUMNS = {o: ", ".join([*(_VIEW_SQL.get(p, p) for p in VIEW_PARTS),
                              "owner" if o else "NULL::jsonb AS owner", "plate_key"])
                for o in (False, True)}
_VIEWS = {o: f"SELECT {VIEW_COLUMNS[o]} FROM plates WHERE plate_key = ANY($1::text[])"
             " AND issued" for o in (False, True)}


async def view_rows(conn: asyncpg.Pool | asyncpg.Connection, keys: Sequence[str],
                    with_owner: bool) -> list[asyncpg.Record]:
    """The issued plates among ``keys`` (one statement) as view parts (``VIEW_COLUMNS``):
    only what the view shows, so a batch decodes no timestamps or unused columns."""
    return await conn.fetch(_VIEWS[with_owner], list(keys))


async def events(conn: asyncpg.Pool | asyncpg.Connection, key: str,
                 limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT event_id, type, source, event_time, data, received_at, producer, authtype,"
        " authid FROM plate_events"
        " WHERE plate_key = $1 ORDER BY event_time, event_id, source LIMIT $2",
        key, limit,
    )


async def max_status_seq(conn: asyncpg.Pool | asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT coalesce(max(seq), 0) FROM status_changes")


async def flagged_plates(conn: asyncpg.Pool | asyncpg.Connection, after_key: str | None,
                         today: dt.date, limit: int) -> list[asyncpg.Record]:
    """Plates whose status is not ``valid`` today, in plate-key order after ``after_key``."""
    return await conn.fetch(
        f"SELECT {ENFORCEMENT_COLUMNS}, plate_key FROM plates"
        " WHERE issued AND plate_key > $1"
        " AND (stolen OR cancelled OR cardinality(suspension_reasons) > 0 OR expires_on < $2)"
        " ORDER BY plate_key LIMIT $3",
        after_key or "", today, limit,
    )


async def hotlist_changes(conn: asyncpg.Pool | asyncpg.Connection, after_seq: int,
                          limit: int) -> list[asyncpg.Record]:
    """Status changes after ``after_seq`` into, out of or inside a flagged status."""
    return await conn.fetch(
        "SELECT seq, view, flagged, was_flagged FROM status_changes"
        " WHERE seq > $1 AND (flagged OR was_flagged) ORDER BY seq LIMIT $2",
        after_seq, limit,
    )


async def owner_plates(conn: asyncpg.Pool | asyncpg.Connection, owner_id: str,
                       limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {FULL_COLUMNS} FROM plates WHERE owner_id = $1 AND issued"
        " ORDER BY plate_key LIMIT $2",
        owner_id, limit,
    )


async def owner_notices(conn: asyncpg.Pool | asyncpg.Connection, owner_id: str,
                        limit: int) -> list[dict[str, Any]]:
    """The owner's newest notices, each with its delivery attempts (oldest first)."""
    notices = await conn.fetch(
        "SELECT notice_id, kind, plate_key, owner_id, language, channels, context, created_at"
        " FROM notices WHERE owner_id = $1 ORDER BY created_at DESC, notice_id LIMIT $2",
        owner_id, limit,
    )
    if not notices:
        return []
    deliveries = await conn.fetch(
        "SELECT notice_id, channel, attempt, outcome, status_code, error, at"
        " FROM notice_deliveries WHERE notice_id = ANY($1::uuid[]) ORDER BY at, id",
        [n["notice_id"] for n in notices],
    )
    by_notice: dict[Any, list[asyncpg.Record]] = {}
    for d in deliveries:
        by_notice.setdefault(d["notice_id"], []).append(d)
    return [{"notice": n, "deliveries": by_notice.get(n["notice_id"], [])} for n in notices]


async def preferences(conn: asyncpg.Pool | asyncpg.Connection,
                      owner_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT owner_id, channels, language, updated_at FROM owner_preferences"
        " WHERE owner_id = $1", owner_id,
    )


async def put_preferences(conn: asyncpg.Pool | asyncpg.Connection, owner_id: str,
                          channels: list[str], language: str | None) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO owner_preferences (owner_id, channels, language) VALUES ($1, $2, $3)"
        " ON CONFLICT (owner_id) DO UPDATE SET channels = EXCLUDED.channels,"
        " language = EXCLUDED.language, updated_at = now()"
        " RETURNING owner_id, channels, language, updated_at",
        owner_id, channels, language,
    )


async def audit_entries(conn: asyncpg.Pool | asyncpg.Connection, *, jurisdiction: str | None,
                        plate: str | None, key_id: str | None, owner_id: str | None = None,
                        since: dt.datetime | None, after_id: int, last_id: int,
                        limit: int) -> list[asyncpg.Record]:
    """Audit rows matching every given filter, by id (insertion order), after ``after_id``
    and up to ``last_id``."""
    where = ["id > $1", "id <= $2"]
    args: list[Any] = [after_id, last_id]
    for column, value in (("jurisdiction", jurisdiction), ("plate", plate),
                          ("key_id", key_id), ("owner_id", owner_id)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if since is not None:
        args.append(since)
        where.append(f"at >= ${len(args)}")
    args.append(limit)
    return await conn.fetch(
        "SELECT id, at, key_id, kind, jurisdiction, plate, owner_id, purpose, case_ref, as_at,"
        " result FROM audit_log"
        f" WHERE {' AND '.join(where)} ORDER BY id LIMIT ${len(args)}",
        *args,
    )


async def last_audit_id(conn: asyncpg.Pool | asyncpg.Connection) -> int:
    """The newest audit row's id (0 when there is none)."""
    return await conn.fetchval("SELECT coalesce(max(id), 0) FROM audit_log")


async def histories_until(conn: asyncpg.Pool | asyncpg.Connection, keys: Sequence[str],
                          at: dt.datetime) -> dict[str, list[HistoryEvent]]:
    """The accepted events of each plate with ``time`` at or before ``at``, in fold order
    (an index range scan of ``plate_events_fold_idx`` per plate)."""
    rows = await conn.fetch(
        "SELECT plate_key, event_id, type, event_time, data, source FROM plate_events"
        " WHERE plate_key = ANY($1::text[]) AND event_time <= $2"
        " ORDER BY plate_key, event_time, event_id, source",
        list(keys), at,
    )
    out: dict[str, list[HistoryEvent]] = {}
    for r in rows:
        out.setdefault(r["plate_key"], []).append(HistoryEvent(
            r["event_id"], r["type"], r["event_time"], r["data"] or {}, r["source"]))
    return out
