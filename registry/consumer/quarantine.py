"""Operator side of quarantined plates: list them, and release one once its stored
history has been repaired.

The registry consumer quarantines a plate whose stored state or history cannot be
folded (``registry.consumer.batch.Unfoldable``): it keeps storing the plate's new events but
leaves its state alone, so one bad row never stops the other plates. Releasing
re-folds the plate from its whole history, writes the state and the status change,
and ends the quarantine; if the history still cannot be folded, the plate stays.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from platereg.db import connect
from platereg.settings import Settings
from registry.consumer import store
from registry.consumer.batch import Unfoldable, fold_history, status_changes
from schemas.fold import today_in
from schemas.plates import InvalidPlate, parse_plate_key


async def list_plates(settings: Settings, *, limit: int = 100) -> list[asyncpg.Record]:
    conn = await connect(settings.dsn())
    try:
        return await store.RegistrySql(conn).list_quarantined(limit)
    finally:
        await conn.close()


@dataclass(frozen=True)
class Released:
    plate_key: str
    released: bool
    message: str


async def release(settings: Settings, keys: list[str]) -> list[Released]:
    """Re-fold each plate from its history; end its quarantine when that works."""
    conn = await connect(settings.dsn())
    try:
        return [await _release_one(conn, settings, key) for key in keys]
    finally:
        await conn.close()


async def _release_one(conn: asyncpg.Connection, settings: Settings, key: str) -> Released:
    try:
        jurisdiction, plate = parse_plate_key(key)
    except InvalidPlate as exc:
        return Released(key, False, str(exc))
    key = f"{jurisdiction}/{plate}"
    async with conn.transaction():
        # Same lock order as the consumer: the quarantine row, then the plate.
        row = await conn.fetchrow(
            "SELECT reason FROM quarantined_plates WHERE plate_key = $1 FOR UPDATE", key)
        if row is None:
            return Released(key, False, "not quarantined")
        sql = store.RegistrySql(conn)
        old = await sql.lock_plates([key])
        history = (await sql.history([key]))[key]
        try:
            state = fold_history(jurisdiction, plate, history)
        except Unfoldable as exc:
            at = f" (event {exc.event_id})" if exc.event_id else ""
            return Released(key, False, f"still cannot be folded: {exc.reason}{at}")
        if history:
            await sql.upsert_plates([state])
            now = dt.datetime.now(dt.UTC)
            changes = status_changes(old, {key: state}, today_in(settings.tz, now), now)
            await sql.insert_status_changes(changes)
        await conn.execute("DELETE FROM quarantined_plates WHERE plate_key = $1", key)
    return Released(key, True, f"released: folded {len(history)} stored event(s)")
