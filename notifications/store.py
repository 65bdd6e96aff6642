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
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from notifications.rules import Draft, choose_channels
from platereg.plate_rows import state_columns

#: A plate's state first (read by ``platereg.plate_rows.state_from_row``), then its key.
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


#: What a claimed delivery carries: its notice and the owner's webhook URL (one query).
_CLAIMED_COLUMNS = (
    "t.notice_id, t.channel, t.attempts, n.kind, n.plate_key, n.owner_id, n.language, "
    "n.channels, n.context, n.recipient, n.created_at, p.webhook_url"
)


async def claim_due(conn: asyncpg.Connection, limit: int, lease: float) -> list:
    """Take up to ``limit`` due deliveries for ``lease`` seconds (a crashed dispatcher's
    come back then), with what sending them needs, in one statement."""
    return await conn.fetch(
        f"""WITH due AS (
                SELECT notice_id, channel FROM notice_dispatch
                WHERE state = 'pending' AND next_at <= now()
                ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED),
            t AS (
                UPDATE notice_dispatch d SET next_at = now() + make_interval(secs => $2),
                       attempts = d.attempts + 1, updated_at = now()
                FROM due WHERE d.notice_id = due.notice_id AND d.channel = due.channel
                RETURNING d.notice_id, d.channel, d.attempts, d.next_at)
            SELECT {_CLAIMED_COLUMNS} FROM t JOIN notices n USING (notice_id)
            LEFT JOIN owner_preferences p ON p.owner_id = n.owner_id
            ORDER BY t.next_at""", limit, lease)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One finished attempt; ``retry_in`` for a retry, ``fallback`` the channel tried next."""

    notice_id: uuid.UUID
    channel: str
    attempt: int
    outcome: str                       # sent, retry, failed
    status_code: int | None = None
    error: str | None = None
    retry_in: float | None = None
    fallback: str | None = None


async def record_attempts(conn: asyncpg.Connection, attempts: Sequence[Attempt]) -> None:
    """Store attempts, move their deliveries' state and start fallbacks: one statement
    (so one transaction) for the whole batch."""
    if not attempts:
        return
    falls = [a for a in attempts if a.fallback is not None]
    await conn.execute(
        """WITH a AS (
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::int[],
                                    $6::text[], $7::float8[])
                   WITH ORDINALITY AS a(notice_id, channel, attempt, outcome, status_code,
                                        error, retry_in, ord)),
           logged AS (
               INSERT INTO notice_deliveries (notice_id, channel, attempt, outcome,
                                              status_code, error)
               SELECT notice_id, channel, attempt, outcome, status_code, error
               FROM a ORDER BY ord),
           moved AS (
               UPDATE notice_dispatch d
               SET state = CASE WHEN a.outcome = 'retry' THEN 'pending' ELSE a.outcome END,
                   next_at = CASE WHEN a.outcome = 'retry'
                                  THEN now() + make_interval(secs => a.retry_in)
                                  ELSE d.next_at END,
                   updated_at = now()
               FROM a WHERE d.notice_id = a.notice_id AND d.channel = a.channel)
           INSERT INTO notice_dispatch (notice_id, channel, state)
           SELECT n, c, CASE WHEN c = 'paper' THEN 'print' ELSE 'pending' END
           FROM unnest($8::uuid[], $9::text[]) AS f(n, c)
           ON CONFLICT DO NOTHING""",
        [a.notice_id for a in attempts], [a.channel for a in attempts],
        [a.attempt for a in attempts], [a.outcome for a in attempts],
        [a.status_code for a in attempts], [a.error for a in attempts],
        [a.retry_in or 0.0 for a in attempts],
        [a.notice_id for a in falls], [a.fallback for a in falls])


async def store_tokens(conn: asyncpg.Connection,
                       tokens: Sequence[tuple[str, str, uuid.UUID]],
                       created_at: dt.datetime, expires_at: dt.datetime) -> None:
    """Sign-in tokens ``(token_hash, owner_id, notice_id)``, one statement for all."""
    if tokens:
        await conn.execute(
            "INSERT INTO owner_tokens (token_hash, owner_id, notice_id, created_at, expires_at) "
            "SELECT h, o, n, $4, $5 FROM unnest($1::text[], $2::text[], $3::uuid[]) "
            "AS t(h, o, n)", [t[0] for t in tokens], [t[1] for t in tokens],
            [t[2] for t in tokens], created_at, expires_at)


async def print_queue(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime) -> list:
    """Letters queued in [start, end) and not printed yet, locked until the caller commits."""
    return await conn.fetch(
        """SELECT d.notice_id, n.kind, n.plate_key, n.language, n.context, n.recipient,
                  n.created_at
           FROM notice_dispatch d JOIN notices n USING (notice_id)
           WHERE d.state = 'print' AND d.queued_at >= $1 AND d.queued_at < $2
           ORDER BY d.queued_at, d.notice_id FOR UPDATE OF d""", start, end)
