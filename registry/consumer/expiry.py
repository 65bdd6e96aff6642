"""The daily expiry sweep: record "became expired" in the status outbox, once.

A plate becomes expired by the calendar (in ``PLATEREG_TIMEZONE``), not by an
event, so no consumer batch sees the change. The sweep compares each expired
plate's current enforcement view with the last view recorded for it and
records the difference; a marker per (plate, expires_on) keeps the next sweeps
from looking at it again. The sweep holds the status_changes advisory lock
for its whole transaction, so several sweepers (several consumer processes)
record each change exactly once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

import asyncpg

from platereg.clock import Clock
from platereg.db import OUTAGE_ERRORS, LazyPool
from platereg.logging import get_logger
from platereg.metrics import EXPIRY_SWEEP_LAST_RUN
from platereg.plate_rows import state_from_row
from platereg.process import repeat
from platereg.settings import Settings
from registry.consumer import store
from registry.consumer.batch import StatusChange, state_shape_problem, status_change, view_of
from schemas.fold import PlateState, today_in

log = get_logger(__name__)


def expiry_changes(rows: list[tuple[PlateState, Mapping[str, Any] | None]], today: dt.date,
                   as_of: dt.datetime) -> list[StatusChange]:
    """Pure: the changes to record for (state, last recorded view) pairs."""
    out = []
    for state, last_view in rows:
        change = status_change(last_view, view_of(state, today, as_of), state.plate_key)
        if change is not None:
            out.append(change)
    return out


def _usable(rows: list) -> list[tuple[PlateState, Mapping[str, Any] | None]]:
    """(state, last view) of the candidate rows, without the plates whose stored state
    cannot be used (one bad row must not stop the sweep of every other plate; the
    consumer quarantines such a plate on its next event)."""
    pairs = []
    skipped = 0
    for r in rows:
        state = state_from_row(r)
        if state_shape_problem(state) is not None:
            skipped += 1
            continue
        last_view = r["last_view"]
        pairs.append((state, last_view if isinstance(last_view, Mapping) else None))
    if skipped:
        log.warning("expiry sweep skipped plates whose stored state cannot be used",
                    count=skipped)
    return pairs


async def sweep(conn: asyncpg.Connection, tz: dt.tzinfo, now: dt.datetime | None = None) -> int:
    """One sweep in its own transaction; returns the number of changes recorded."""
    now = now or dt.datetime.now(dt.UTC)
    today = today_in(tz, now)
    changes: list[StatusChange] = []
    async with conn.transaction():
        await conn.execute(store.STATUS_LOCK_SQL)
        sql = store.RegistrySql(conn)
        rows = await sql.expiry_candidates(today)
        if rows:
            pairs = _usable(rows)
            changes = expiry_changes(pairs, today, now)
            await sql.insert_status_changes(changes)
            await sql.mark_expired([s.plate_key for s, _ in pairs],
                                   [s.expires_on for s, _ in pairs])
    # Committed: the alert compares this with Prometheus's time, so real time, not ``now``.
    EXPIRY_SWEEP_LAST_RUN.set_to_current_time()
    if rows:
        log.info("expiry sweep", day=today.isoformat(), checked=len(rows), changes=len(changes))
    return len(changes)


async def run_sweeper(settings: Settings, stop: asyncio.Event,
                      wakeup: asyncio.Event | None = None, check_every: float = 30.0,
                      clock: Clock | None = None, retry_every: float = 5.0) -> None:
    """Sweep at start and whenever the registry's date (by ``clock``, default the
    settings' clock) changes; a failed sweep is tried again every ``retry_every`` s."""
    clock = clock or Clock.from_settings(settings)
    db = LazyPool(settings.dsn())

    async def sweep_now() -> dt.date:
        now = clock.now()
        async with db.connection() as conn:
            if await sweep(conn, settings.tz, now) and wakeup is not None:
                wakeup.set()
        return today_in(settings.tz, now)

    swept_for: dt.date | None = None

    async def sweep_on_a_new_day() -> None:
        nonlocal swept_for
        if today_in(settings.tz, clock.now()) != swept_for:
            swept_for = await sweep_now()

    try:
        await repeat(sweep_on_a_new_day, stop, every=check_every, retry_every=retry_every,
                     on=OUTAGE_ERRORS, message="expiry sweep failed; retrying")
    finally:
        await db.close()
