"""SQL of the notices: creating them once, the scheduler's reads, dispatch state.

Notices are created with ``ON CONFLICT DO NOTHING`` against two unique keys
(``dedupe_key``, and (plate, expires_on, window) for reminders and expiry), so
concurrent schedulers and redelivered events never make one twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from notifications.rules import Draft, choose_channels
from registry.rows import state_columns

#: A plate's state first (read by ``registry.rows.state_from_row``), then its key.
_PLATE_COLUMNS = state_columns() + ", plate_key"


async def preferences(conn: asyncpg.Connection, owner_ids: Sequence[str]) -> dict[str, Any]:
    rows = await conn.fetch(
        "SELECT owner_id, channels, language, webhook_url FROM owner_preferences "
        "WHERE owner_id = ANY($1::text[])", list(set(owner_ids)))
    return {r["owner_id"]: r for r in rows}


async def insert_drafts(conn: asyncpg.Connection, drafts: Sequence[Draft],
                        now: dt.datetime) -> Counter:
    """Create the notices not made before; returns how many were created per kind."""
    if not drafts:
        return Counter()
    prefs = await preferences(conn, [d.owner_id for d in drafts])
    ids, keys, kinds, plates, owners, langs, chans, ctxs, recips, exps, wins = (
        [] for _ in range(11))
    for d in drafts:
        pref = prefs.get(d.owner_id)
        recipient = dict(d.recipient)
        if pref is not None and pref["language"]:
            recipient["language"] = pref["language"]
        channels = choose_channels(recipient, pref["channels"] if pref else None,
                                   pref["webhook_url"] if pref else None)
        ids.append(uuid.uuid4())
        keys.append(d.dedupe_key)
        kinds.append(d.kind)
        plates.append(d.plate_key)
        owners.append(d.owner_id)
        langs.append("fr" if recipient.get("language") == "fr" else "en")
        chans.append(",".join(channels))
        ctxs.append(orjson.dumps(d.context).decode())
        recips.append(orjson.dumps(recipient).decode())
        exps.append(d.expires_on)
        wins.append(d.window_days)
    rows = await conn.fetch(
        """INSERT INTO notices (notice_id, dedupe_key, kind, plate_key, owner_id, language,
                                channels, context, recipient, expires_on, window_days,
                                created_at)
           SELECT i, k, kd, p, o, l, string_to_array(c, ','), x::jsonb, r::jsonb, e, w, $12
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::text[], $10::date[], $11::int[])
                AS t(i, k, kd, p, o, l, c, x, r, e, w)
           ON CONFLICT DO NOTHING
           RETURNING kind""",
        ids, keys, kinds, plates, owners, langs, chans, ctxs, recips, exps, wins, now)
    return Counter(r["kind"] for r in rows)


async def queue_rechecks(conn: asyncpg.Connection, keys: Sequence[str]) -> None:
    """Plates whose expiry, issue or cancellation changed: the scheduler looks again."""
    if keys:
        await conn.execute(
            "INSERT INTO notice_rechecks (plate_key) SELECT unnest($1::text[]) "
            "ON CONFLICT DO NOTHING", sorted(keys))


# --------------------------------------------------------------------------- scheduler

async def last_day(conn: asyncpg.Connection, name: str) -> dt.date | None:
    return await conn.fetchval(
        "SELECT last_day FROM notice_scheduler_runs WHERE name = $1", name)


async def set_last_day(conn: asyncpg.Connection, name: str, day: dt.date) -> None:
    await conn.execute(
        """INSERT INTO notice_scheduler_runs (name, last_day, last_run_at) VALUES ($1, $2, now())
           ON CONFLICT (name) DO UPDATE SET
               last_day = GREATEST(notice_scheduler_runs.last_day, EXCLUDED.last_day),
               last_run_at = now()""", name, day)


async def plates_expiring_on(conn: asyncpg.Connection, dates: Sequence[dt.date]) -> list:
    """Issued, not cancelled plates expiring on one of ``dates`` (plates_expires_idx),
    share-locked in key order so a renewal committing meanwhile is seen."""
    return await conn.fetch(
        f"SELECT {_PLATE_COLUMNS} FROM plates WHERE issued AND NOT cancelled "
        "AND expires_on = ANY($1::date[]) ORDER BY plate_key FOR SHARE", list(dates))


async def take_rechecks(conn: asyncpg.Connection, limit: int) -> list:
    """Remove up to ``limit`` queued plates (skipping those another run holds) and
    return their current rows (in the caller's transaction)."""
    return await conn.fetch(
        f"""WITH taken AS (
                DELETE FROM notice_rechecks WHERE plate_key IN (
                    SELECT plate_key FROM notice_rechecks ORDER BY plate_key
                    LIMIT $1 FOR UPDATE SKIP LOCKED)
                RETURNING plate_key)
            SELECT {_PLATE_COLUMNS} FROM plates
            WHERE plate_key IN (SELECT plate_key FROM taken)
            ORDER BY plate_key FOR SHARE""", limit)


# --------------------------------------------------------------------------- dispatch

async def notice_rows(conn: asyncpg.Connection | asyncpg.Pool,
                      ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT notice_id, kind, plate_key, owner_id, language, channels, context, recipient, "
        "created_at FROM notices WHERE notice_id = ANY($1::uuid[])", list(ids))
    return {r["notice_id"]: r for r in rows}


async def enqueue(conn: asyncpg.Connection | asyncpg.Pool,
                  items: Sequence[tuple[uuid.UUID, str]]) -> int:
    """Start delivering (notice, channel) pairs not started before."""
    if not items:
        return 0
    status = await conn.execute(
        """INSERT INTO notice_dispatch (notice_id, channel, state)
           SELECT n, c, CASE WHEN c = 'paper' THEN 'print' ELSE 'pending' END
           FROM unnest($1::uuid[], $2::text[]) AS t(n, c)
           WHERE EXISTS (SELECT 1 FROM notices WHERE notice_id = n)
           ON CONFLICT DO NOTHING""",
        [i for i, _ in items], [c for _, c in items])
    return int(status.rsplit(" ", 1)[1])


async def claim_due(conn: asyncpg.Connection, limit: int, lease: float) -> list:
    """Take due deliveries for ``lease`` seconds (a crashed dispatcher's come back)."""
    return await conn.fetch(
        """UPDATE notice_dispatch d SET next_at = now() + make_interval(secs => $2),
                  attempts = d.attempts + 1, updated_at = now()
           WHERE (d.notice_id, d.channel) IN (
               SELECT notice_id, channel FROM notice_dispatch
               WHERE state = 'pending' AND next_at <= now()
               ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING d.notice_id, d.channel, d.attempts""", limit, lease)


async def record_attempt(conn: asyncpg.Connection, notice_id: uuid.UUID, channel: str,
                         attempt: int, outcome: str, status_code: int | None,
                         error: str | None, retry_in: float | None) -> None:
    """Store one attempt and move the delivery's state (one transaction)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO notice_deliveries (notice_id, channel, attempt, outcome, status_code, "
            "error) VALUES ($1, $2, $3, $4, $5, $6)",
            notice_id, channel, attempt, outcome, status_code, error)
        if outcome == "retry":
            await conn.execute(
                "UPDATE notice_dispatch SET next_at = now() + make_interval(secs => $3), "
                "updated_at = now() WHERE notice_id = $1 AND channel = $2",
                notice_id, channel, retry_in or 0.0)
        else:
            await conn.execute(
                "UPDATE notice_dispatch SET state = $3, updated_at = now() "
                "WHERE notice_id = $1 AND channel = $2", notice_id, channel, outcome)


async def print_queue(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime) -> list:
    """Letters queued in [start, end) and not printed yet, locked until the caller commits."""
    return await conn.fetch(
        """SELECT d.notice_id, n.kind, n.plate_key, n.language, n.context, n.recipient,
                  n.created_at
           FROM notice_dispatch d JOIN notices n USING (notice_id)
           WHERE d.state = 'print' AND d.queued_at >= $1 AND d.queued_at < $2
           ORDER BY d.queued_at, d.notice_id FOR UPDATE OF d""", start, end)
