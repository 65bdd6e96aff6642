"""The notice scheduler: renewal reminders and ``expired`` notices, once each.

A run on the registry's ``today`` (``PLATEREG_TIMEZONE``) reads only the
plates whose window opened since the last finished run (an index range on
``plates.expires_on``) and the plates the registry consumer queued because
their expiry or cancellation changed; it never reads every plate. Notices are
created with ``ON CONFLICT DO NOTHING`` against a unique (plate, expires_on,
window) key, so several scheduler replicas never make one twice. The clock is
injected so that tests can move it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter

import asyncpg

from notifications import rules, store
from platereg import metrics
from platereg.clock import Clock
from platereg.db import OUTAGE_ERRORS, LazyPool
from platereg.logging import get_logger
from platereg.plate_rows import state_from_row
from platereg.process import repeat
from platereg.settings import Settings
from schemas.fold import today_in

log = get_logger(__name__)

RUN_NAME = "scheduler"
RECHECK_BATCH = 5000


def _drafts(rows: list, today: dt.date, days: list[int]) -> list[rules.Draft]:
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["plate_key"] in seen:
            continue
        seen.add(r["plate_key"])
        draft = rules.window_draft(state_from_row(r), today, days)
        if draft is not None:
            out.append(draft)
    return sorted(out, key=lambda d: d.plate_key)   # one insert order: no deadlocks


async def run_once(conn: asyncpg.Connection, settings: Settings, now: dt.datetime) -> Counter:
    """One scheduler run at ``now``; returns the notices created per kind."""
    today = today_in(settings.tz, now)
    days = settings.renewal_reminder_days
    created: Counter = Counter()
    async with conn.transaction():
        dates = rules.due_dates(await store.last_day(conn, RUN_NAME), today, days)
        rows = await store.plates_expiring_on(conn, dates)
        created += await store.insert_drafts(conn, _drafts(rows, today, days), now)
        await store.set_last_day(conn, RUN_NAME, today)
    while True:
        async with conn.transaction():
            rows = await store.take_rechecks(conn, RECHECK_BATCH)
            created += await store.insert_drafts(conn, _drafts(rows, today, days), now)
        if len(rows) < RECHECK_BATCH:
            break
    for kind, n in created.items():
        metrics.NOTICES.labels(kind).inc(n)
    metrics.NOTICE_SCHEDULER_LAST_RUN.set(time.time())
    log.info("notice scheduler run", day=today.isoformat(), dates=len(dates),
             created=sum(created.values()))
    return created


async def run_scheduler(settings: Settings, stop: asyncio.Event, *,
                        clock: Clock | None = None, every: float = 30.0,
                        wakeup: asyncio.Event | None = None) -> None:
    """Run every ``every`` seconds until ``stop``; sets ``wakeup`` when it made notices.

    ``clock`` (default: the settings' registry clock) says what "now" is."""
    clock = clock or Clock.from_settings(settings)
    db = LazyPool(settings.dsn())

    async def run_now() -> None:
        async with db.connection() as conn:
            if await run_once(conn, settings, clock.now()) and wakeup is not None:
                wakeup.set()

    try:
        await repeat(run_now, stop, every=every, retry_every=every, on=OUTAGE_ERRORS,
                     message="notice scheduler run failed; retrying")
    finally:
        await db.close()
