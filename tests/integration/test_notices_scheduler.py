"""The notice scheduler over a simulated year, with a clock the test moves.

Plates are issued, renewed, suspended and cancelled through the registry
consumer's own batch transaction (``apply_batch``) on the real PostgreSQL;
the scheduler runs once per simulated day, except during an outage.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import Counter

import asyncpg
import pytest

from notifications import scheduler
from platereg import metrics
from platereg.settings import Settings
from tests.integration.notices_support import apply_events, event, issued, owner

pytestmark = pytest.mark.integration

WINDOWS = (60, 30, 7, -1)
D0 = dt.date(2027, 1, 1)
OUTAGE = range(150, 190)                        # simulated days the scheduler is down


def noon(settings: Settings, day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), settings.tz)


def expected_notices(phases: list[tuple[dt.date, dt.date, dt.date | None]],
                     run_days: list[dt.date]) -> dict[tuple[dt.date, int], dt.date]:
    """(expires_on, window) -> the day its notice is due: the first run day at or past
    expires_on - window while the plate has that expiry and is not cancelled, when that
    window is the nearest one open on that day."""
    out: dict[tuple[dt.date, int], dt.date] = {}
    for expires, valid_from, valid_until in phases:
        for day in run_days:
            if day < valid_from or (valid_until is not None and day > valid_until):
                continue
            open_now = [w for w in WINDOWS if day >= expires - dt.timedelta(days=w)]
            if open_now and (expires, min(open_now)) not in out:
                out[(expires, min(open_now))] = day
    return out


def plan(rng: random.Random, n: int) -> list[dict]:
    plates = []
    for i in range(n):
        expires = D0 + dt.timedelta(days=rng.randrange(1, 420))
        p = {"subject": f"CA-ON/Y{i:04d}", "expires": expires, "renew": None, "cancel": None,
             "suspended": rng.random() < 0.15,
             "owner": owner(i, language=rng.choice(["en", "fr"]))}
        roll = rng.random()
        if roll < 0.15:       # renewed early, before some windows
            p["renew"] = max(D0, expires - dt.timedelta(days=rng.randrange(1, 50)))
        elif roll < 0.25:     # cancelled before expiry
            p["cancel"] = max(D0, expires - dt.timedelta(days=rng.randrange(1, 80)))
        plates.append(p)
    return plates


def phases_of(p: dict) -> list[tuple[dt.date, dt.date, dt.date | None]]:
    start = D0 - dt.timedelta(days=1)
    if p["renew"] is not None:
        new = p["expires"] + dt.timedelta(days=365)
        return [(p["expires"], start, p["renew"] - dt.timedelta(days=1)), (new, p["renew"], None)]
    if p["cancel"] is not None:
        return [(p["expires"], start, p["cancel"] - dt.timedelta(days=1))]
    return [(p["expires"], start, None)]


async def test_a_simulated_year_sends_each_notice_once_on_its_day(settings: Settings,
                                                                  pool: asyncpg.Pool) -> None:
    rng = random.Random(2027)
    plates = plan(rng, 300)
    start = noon(settings, D0 - dt.timedelta(days=1))
    setup = []
    for p in plates:
        setup.append(issued(p["subject"], p["expires"], start - dt.timedelta(hours=1), p["owner"]))
        if p["suspended"]:
            setup.append(event("plate.suspended", p["subject"], start - dt.timedelta(minutes=30),
                               {"reason": "insurance_lapsed"}, source="/insurance/acme/"))
    await apply_events(pool, settings, setup, start)
    by_day: dict[dt.date, list[dict]] = {}
    for p in plates:
        if p["renew"] is not None:
            by_day.setdefault(p["renew"], []).append(("renew", p))
        if p["cancel"] is not None:
            by_day.setdefault(p["cancel"], []).append(("cancel", p))

    run_days = []
    before = metrics.NOTICES.labels("renewal_reminder")._value.get()
    for k in range(365):
        day = D0 + dt.timedelta(days=k)
        now = noon(settings, day)
        todays = []
        for what, p in by_day.get(day, []):
            when = now - dt.timedelta(hours=2)
            if what == "renew":
                new = (p["expires"] + dt.timedelta(days=365)).isoformat()
                todays.append(event("plate.renewed", p["subject"], when, {"expires_on": new}))
            else:
                todays.append(event("plate.cancelled", p["subject"], when,
                                    {"reason": "surrendered"}))
        if todays:
            await apply_events(pool, settings, todays, now - dt.timedelta(hours=1))
        if k in OUTAGE:
            continue
        run_days.append(day)
        async with pool.acquire() as conn:
            await scheduler.run_once(conn, settings, now)

    rows = await pool.fetch(
        "SELECT plate_key, kind, expires_on, window_days, context, created_at, language "
        "FROM notices WHERE window_days IS NOT NULL")
    got: dict[str, dict[tuple[dt.date, int], dt.date]] = {}
    for r in rows:
        got.setdefault(r["plate_key"], {})
        assert (r["expires_on"], r["window_days"]) not in got[r["plate_key"]], "duplicate"
        got[r["plate_key"]][(r["expires_on"], r["window_days"])] = \
            r["created_at"].astimezone(settings.tz).date()
        assert r["kind"] == ("expired" if r["window_days"] == -1 else "renewal_reminder")
    total = 0
    for p in plates:
        want = expected_notices(phases_of(p), run_days)
        assert got.get(p["subject"], {}) == want, p
        total += len(want)
    assert total == len(rows) > 300
    # Missed windows during the outage gave only the nearest one.
    first_after = D0 + dt.timedelta(days=OUTAGE.stop)
    skipped = [p for p in plates if p["renew"] is None and p["cancel"] is None
               and D0 + dt.timedelta(days=OUTAGE.start) <= p["expires"] - dt.timedelta(days=60)
               and p["expires"] - dt.timedelta(days=30) < first_after]
    assert skipped, "the plan should have plates whose windows fell in the outage"
    for p in skipped:
        assert (p["expires"], 60) not in got.get(p["subject"], {})
    # Reminders of suspended plates name what blocks renewal.
    for r in rows:
        p = next(q for q in plates if q["subject"] == r["plate_key"])
        if r["kind"] == "renewal_reminder":
            assert r["context"].get("blocked_by") == (
                ["insurance_lapsed"] if p["suspended"] else None)
    reminders = sum(1 for r in rows if r["kind"] == "renewal_reminder")
    assert metrics.NOTICES.labels("renewal_reminder")._value.get() - before == reminders
    # The events made their own notices, once each.
    kinds = Counter(await pool.fetchval("SELECT array_agg(kind) FROM notices "
                                        "WHERE window_days IS NULL") or [])
    year_end = D0 + dt.timedelta(days=365)
    assert kinds["renewed"] == sum(1 for p in plates if p["renew"] and p["renew"] < year_end)
    assert kinds["cancelled"] == sum(1 for p in plates if p["cancel"] and p["cancel"] < year_end)
    assert kinds["suspended"] == sum(1 for p in plates if p["suspended"])


async def test_three_schedulers_at_once_make_no_duplicates(settings: Settings,
                                                           pool: asyncpg.Pool) -> None:
    today = dt.date(2027, 6, 1)
    now = noon(settings, today)
    events = [issued(f"CA-QC/Z{i:04d}", today + dt.timedelta(days=(i % 130) - 65),
                     now - dt.timedelta(days=400), owner(i)) for i in range(600)]
    await apply_events(pool, settings, events, now)
    await pool.execute("DELETE FROM notice_rechecks")     # only the date ranges this time

    async def one() -> Counter:
        async with pool.acquire() as conn:
            return await scheduler.run_once(conn, settings, now)

    results = await asyncio.gather(one(), one(), one())
    made = sum(sum(c.values()) for c in results)
    rows = await pool.fetch("SELECT plate_key, expires_on, window_days FROM notices")
    assert len(rows) == made == len({tuple(r) for r in rows})
    # Every plate whose nearest window is open today has exactly one notice.
    # (a first run looks back 61 days for expired plates)
    assert len(rows) == sum(1 for i in range(600) if -61 <= (i % 130) - 65 <= 60)
    async with pool.acquire() as conn:
        assert sum((await scheduler.run_once(conn, settings, now)).values()) == 0


async def test_plates_issued_or_renewed_inside_a_window_are_found_the_same_day(
        settings: Settings, pool: asyncpg.Pool) -> None:
    today = dt.date(2027, 6, 1)
    now = noon(settings, today)
    await apply_events(pool, settings, [
        issued("CA-ON/OLD1", today + dt.timedelta(days=200), now - dt.timedelta(days=9),
               owner(1))], now - dt.timedelta(hours=3))
    async with pool.acquire() as conn:
        await scheduler.run_once(conn, settings, now - dt.timedelta(hours=2))
    assert await pool.fetchval("SELECT count(*) FROM notices") == 0
    # After today's run: a new plate expiring in 20 days, a renewal to 5 days from now.
    await apply_events(pool, settings, [
        issued("CA-ON/NEW1", today + dt.timedelta(days=20), now - dt.timedelta(hours=1),
               owner(2)),
        event("plate.renewed", "CA-ON/OLD1", now - dt.timedelta(hours=1),
              {"expires_on": (today + dt.timedelta(days=5)).isoformat()})], now)
    async with pool.acquire() as conn:
        await scheduler.run_once(conn, settings, now)
    rows = await pool.fetch("SELECT plate_key, window_days FROM notices "
                            "WHERE window_days IS NOT NULL ORDER BY plate_key")
    assert [tuple(r) for r in rows] == [("CA-ON/NEW1", 30), ("CA-ON/OLD1", 7)]
    assert await pool.fetchval("SELECT count(*) FROM notice_rechecks") == 0
