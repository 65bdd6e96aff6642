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
import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

import asyncpg

from platereg.clock import Clock
from platereg.db import create_pool
from platereg.logging import get_logger
from platereg.metrics import EXPIRY_SWEEP_LAST_RUN
from platereg.settings import Settings
from registry import store
from registry.batch import StatusChange, state_shape_problem, status_change, view_of
from registry.domain import PlateState, state_from_row, today_in

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
        rows = await store.expiry_candidates(conn, today)
        if rows:
            pairs = _usable(rows)
            changes = expiry_changes(pairs, today, now)
            await store.insert_status_changes(conn, changes)
            await store.mark_expired(conn, [s.plate_key for s, _ in pairs],
                                     [s.expires_on for s, _ in pairs])
    # Committed: the alert compares this with Prometheus's time, so real time, not ``now``.
    EXPIRY_SWEEP_LAST_RUN.set_to_current_time()
    if rows:
        log.info("expiry sweep", day=today.isoformat(), checked=len(rows), changes=len(changes))
    return len(changes)


async def run_sweeper(settings: Settings, stop: asyncio.Event,
                      wakeup: asyncio.Event | None = None, check_every: float = 30.0,
                      clock: Clock | None = None) -> None:
    """Sweep at start and whenever the registry's date (by ``clock``, default the
    settings' clock) changes; retry on errors."""
    clock = clock or Clock.from_settings(settings)
    pool: asyncpg.Pool | None = None
    swept_for: dt.date | None = None
    try:
        while not stop.is_set():
            now = clock.now()
            today = today_in(settings.tz, now)
            if today != swept_for:
                try:
                    if pool is None:
                        pool = await create_pool(settings.dsn(), min_size=1, max_size=1,
                                                 retry_for=2)
                    async with pool.acquire() as conn:
                        if await sweep(conn, settings.tz, now) and wakeup is not None:
                            wakeup.set()
                    swept_for = today
                except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                        asyncpg.InternalClientError) as exc:   # server gone mid-operation
                    log.warning("expiry sweep failed; retrying", error=type(exc).__name__)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), check_every if swept_for == today else 5)
    finally:
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 2)
