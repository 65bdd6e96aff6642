"""What an owner may see of themselves, read for one ``owner_id`` only: their plates
(with owner data and status), their notices with every delivery attempt, their
preferences, and the access log of their plates.

The access log lists audit rows, newest first, joined to the reading key's name and
role, that are either about the owner's record (``owner_id`` = theirs) or about one of
their plates since it became theirs (the time of its latest ``plate.issued`` or
``plate.transferred`` event) and not about another owner. The owner's own reads
(``key_id`` :data:`SELF_KEY`) and link sign-ins are not listed: only keys are joined.

Audit rows of an owner's own reads: key id :data:`SELF_KEY`, ``owner_id`` set, one row
per plate (kind ``owner_self``) and one per other record read (notices, preferences,
access log), so an operator can see that an owner looked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg

from platereg.plate_rows import state_columns, state_from_row
from registry.domain import full_view

SELF_KEY = "owner"
LINK_KEY = "link"
MAX_PLATES = 1000
_PLATE_COLUMNS = state_columns()


async def plates(pool: asyncpg.Pool, owner_id: str, today: dt.date,
                 now: dt.datetime) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"SELECT {_PLATE_COLUMNS} FROM plates WHERE owner_id = $1 AND issued"
        " ORDER BY plate_key LIMIT $2", owner_id, MAX_PLATES)
    return [full_view(state_from_row(r), today=today, as_of=now) for r in rows]


async def notices(pool: asyncpg.Pool, owner_id: str, limit: int) -> list[dict[str, Any]]:
    """Newest first, each with its delivery attempts (oldest first)."""
    rows = await pool.fetch(
        "SELECT notice_id, kind, plate_key, language, channels, context, created_at"
        " FROM notices WHERE owner_id = $1 ORDER BY created_at DESC, notice_id LIMIT $2",
        owner_id, limit)
    deliveries = await pool.fetch(
        "SELECT notice_id, channel, attempt, outcome, status_code, error, at"
        " FROM notice_deliveries WHERE notice_id = ANY($1::uuid[]) ORDER BY at, id",
        [r["notice_id"] for r in rows]) if rows else []
    by_notice: dict[Any, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_notice.setdefault(d["notice_id"], []).append({
            "channel": d["channel"], "attempt": d["attempt"], "outcome": d["outcome"],
            "status_code": d["status_code"], "error": d["error"], "at": d["at"]})
    out = []
    for r in rows:
        jurisdiction, _, plate = r["plate_key"].partition("/")
        out.append({"notice_id": str(r["notice_id"]), "kind": r["kind"],
                    "jurisdiction": jurisdiction, "plate": plate, "owner_id": owner_id,
                    "language": r["language"], "channels": list(r["channels"]),
                    "created_at": r["created_at"], "context": r["context"] or {},
                    "deliveries": by_notice.get(r["notice_id"], [])})
    return out


def _preferences(owner_id: str, row: Any) -> dict[str, Any]:
    """No row, or a row with no channels (the dispatcher's default): channels null."""
    if row is None:
        return {"owner_id": owner_id, "channels": None, "language": None, "updated_at": None}
    return {"owner_id": owner_id, "channels": list(row["channels"]) or None,
            "language": row["language"], "updated_at": row["updated_at"]}


async def preferences(pool: asyncpg.Pool, owner_id: str) -> dict[str, Any]:
    row = await pool.fetchrow(
        "SELECT channels, language, updated_at FROM owner_preferences WHERE owner_id = $1",
        owner_id)
    return _preferences(owner_id, row)


async def put_preferences(pool: asyncpg.Pool, owner_id: str, channels: list[str] | None,
                          language: str | None) -> dict[str, Any]:
    """Set them; ``channels`` None (stored as no channels) is the dispatcher's default."""
    row = await pool.fetchrow(
        "INSERT INTO owner_preferences (owner_id, channels, language) VALUES ($1, $2, $3)"
        " ON CONFLICT (owner_id) DO UPDATE SET channels = EXCLUDED.channels,"
        " language = EXCLUDED.language, updated_at = now()"
        " RETURNING channels, language, updated_at", owner_id, channels or [], language)
    return _preferences(owner_id, row)


_ACCESS_LOG = """
WITH mine AS (
    SELECT p.jurisdiction, p.plate,
           coalesce((SELECT max(e.event_time) FROM plate_events e
                     WHERE e.plate_key = p.plate_key
                       AND e.type IN ('plate.issued', 'plate.transferred')),
                    '-infinity'::timestamptz) AS since
    FROM plates p WHERE p.owner_id = $1 AND p.issued
), rows AS (
    SELECT a.id FROM audit_log a JOIN mine m
      ON a.jurisdiction = m.jurisdiction AND a.plate = m.plate AND a.at >= m.since
    WHERE a.owner_id IS NULL OR a.owner_id = $1
    UNION
    SELECT a.id FROM audit_log a WHERE a.owner_id = $1
)
SELECT a.at, k.name AS key_name, k.role, a.kind, a.purpose, a.jurisdiction, a.plate
FROM rows JOIN audit_log a USING (id) JOIN api_keys k ON k.key_id = a.key_id
ORDER BY a.at DESC, a.id DESC LIMIT $2
"""


async def access_log(pool: asyncpg.Pool, owner_id: str, limit: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(_ACCESS_LOG, owner_id, limit)
    return [{"at": r["at"], "key_name": r["key_name"], "role": r["role"], "kind": r["kind"],
             "purpose": r["purpose"], "jurisdiction": r["jurisdiction"], "plate": r["plate"]}
            for r in rows]


def self_read_rows(owner_id: str, now: dt.datetime, *, views: Sequence[dict[str, Any]] = (),
                   record: str | None = None) -> list[tuple[Any, ...]]:
    """Audit rows (AUDIT_COLUMNS + owner_id) of one read by the owner themselves."""
    rows: list[tuple[Any, ...]] = [
        (now, SELF_KEY, "owner_self", v["jurisdiction"], v["plate"], None, v["status"],
         owner_id) for v in views]
    if record is not None:
        rows.append((now, SELF_KEY, f"owner_{record}", None, None, None, "read", owner_id))
    return rows


def mint_row(owner_id: str, key_id: str | None, now: dt.datetime) -> tuple[Any, ...]:
    """The audit row of one owner-token mint (by a portal key, or from a sign-in link)."""
    return (now, key_id or LINK_KEY, "owner_session", None, None, None, "minted", owner_id)
