"""The registry's clock jumping back an hour and forward a day (an NTP step), and back.

One ``Clock`` is shared by everything that reads the registry's time, running in this
process as in production: the consumer (its batches' "now"), the expiry sweep, the
notice scheduler and the registry API; the notices relay and dispatcher deliver to a
real HTTP gateway; PostgreSQL keeps its own time. The clock goes through five phases, in
the registry's time zone, D being today:

====  ===================  ==================================================
phase the registry's clock what happens
====  ===================  ==================================================
A     D 12:00              plates applied; what is due on D is done
B     D 11:00 (back 1 h)   the same day again: nothing new is due
C     D+1 11:00 (+1 day)   what is due on D+1 is done
D     D 12:00 (back 1 day) the day undone, as an NTP correction would
E     D+1 12:00            the real next day arrives
====  ===================  ==================================================

What "correct" means here, checked after every phase:

* expiry: no plate becomes expired twice (at most one ``status_changes`` row saying
  ``expired`` per plate, one ``expiry_marks`` row per plate and expiry date), and
  none before its day: the plate expiring at the end of D is recorded in phase C, not
  in A or B, and nothing is recorded again in D or E;
* notices: none made before its day (the 60-day reminder of a plate expiring on D+61
  and the ``expired`` notice of the plate expiring on D exist from phase C only), none
  made twice (the whole run makes exactly the four window notices due), and each sent
  exactly once: one ``sent`` delivery, one request at the gateway per notice;
* audit: each read is one row whose ``at`` is the real time of the read, not the
  registry's clock (the database refuses a row far ahead of its own clock, so a clock
  set forward must not stamp the trail), and whose ``recorded_at`` is the database's own
  time: both within the read's real time whatever the registry's clock says.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter

import asyncpg
import pytest
from api_helpers import bearer, role_keys, running_api
from notices_support import http_sink, issued, notices_running, owner
from prometheus_client import REGISTRY

from notifications.scheduler import run_scheduler
from platereg.clock import Clock
from registry.consumer.expiry import run_sweeper
from tests.integration.consumer_support import (
    consumer_running,
    encoded,
    produce,
    wait_offsets,
)
from tests.integration.crash_support import figures
from tests.integration.seam_support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SWEEP_GAUGE = "platereg_expiry_sweep_last_run_timestamp_seconds"


def instant(day: dt.date, hour: int, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tz).astimezone(dt.UTC)


async def test_clock_back_an_hour_and_forward_a_day_keeps_expiry_notices_and_audit_right(
        topics, pool: asyncpg.Pool) -> None:
    started = time.monotonic()
    tz = topics.tz
    d0 = dt.datetime.now(tz).date()
    phases = {"A": instant(d0, 12, tz), "B": instant(d0, 11, tz),
              "C": instant(d0 + dt.timedelta(days=1), 11, tz), "D": instant(d0, 12, tz),
              "E": instant(d0 + dt.timedelta(days=1), 12, tz)}
    clock = Clock()
    clock.set(phases["A"])
    expiring = {"CA-ON/CLKX0": d0 - dt.timedelta(days=1),    # expired already on D
                "CA-ON/CLKX1": d0,                           # expired from D+1
                "CA-ON/CLKR61": d0 + dt.timedelta(days=61),  # 60-day reminder on D+1
                "CA-ON/CLKV": d0 + dt.timedelta(days=400)}   # nothing due
    events = [issued(key, expires, phases["A"] - dt.timedelta(hours=3),
                     owner(40 + i, email=False, phone=True))
              for i, (key, expires) in enumerate(expiring.items())]
    keys = await role_keys(pool)
    reads: list[tuple[str, dict, dt.datetime, dt.datetime]] = []
    history: dict[str, dict] = {}

    async def db_now() -> dt.datetime:
        return await pool.fetchval("SELECT clock_timestamp()")

    async with http_sink() as sink:
        settings = topics.model_copy(update={
            "sms_gateway_url": sink.url + "/sms", "notice_http_timeout_seconds": 2.0,
            "notice_retry_initial_seconds": 0.05, "notice_retry_max_seconds": 0.2})
        stop = asyncio.Event()
        loops: list[asyncio.Task] = []
        try:
            async with consumer_running(settings, clock=clock), notices_running(settings), \
                    running_api(settings, clock=clock) as api:
                ends = await produce(settings, encoded(events))
                await wait_offsets(pool, settings, ends)
                for name, at in phases.items():
                    moved = time.time()
                    moved_db = await db_now()
                    clock.set(at)
                    if not loops:   # the sweep's first run (at its start) sees the plates
                        loops += [asyncio.create_task(run_sweeper(
                            settings, stop, check_every=0.1, clock=clock, retry_every=0.5)),
                            asyncio.create_task(run_scheduler(settings, stop, clock=clock,
                                                              every=0.1))]

                    async def settled(moved=moved, moved_db=moved_db, name=name) -> bool:
                        ran = await pool.fetchval(
                            "SELECT last_run_at FROM notice_scheduler_runs")
                        swept = REGISTRY.get_sample_value(SWEEP_GAUGE) or 0
                        # B keeps the date: the sweep has nothing to look at again
                        return (ran is not None and ran > moved_db
                                and (name == "B" or swept > moved))

                    await wait_for(settled, f"the sweep and the scheduler in phase {name}")

                    async def delivered() -> bool:
                        return not await pool.fetchval(
                            "SELECT count(*) FROM notices n WHERE NOT EXISTS (SELECT 1 FROM"
                            " notice_deliveries d WHERE d.notice_id = n.notice_id"
                            " AND d.outcome = 'sent')")

                    await wait_for(delivered, f"the notices of phase {name} delivered")
                    before = await db_now()
                    r = await api.client.post("/v1/plates/query", headers=bearer(
                        keys["enforcement"]), json={"jurisdiction": "CA-ON", "plate": "CLKX1",
                                                    "purpose": "traffic_stop"})
                    assert r.status_code == 200, r.text
                    reads.append((name, r.json(), before, await db_now()))
                    history[name] = await snapshot(pool)
        finally:
            stop.set()
            await asyncio.gather(*loops)
        requests = Counter(r.headers["idempotency-key"] for r in sink.requests)

    expired_changes = {k: v["expired_changes"] for k, v in history["E"].items()}
    # expiry: once, on its day
    assert expired_changes == {"CA-ON/CLKX0": 1, "CA-ON/CLKX1": 1, "CA-ON/CLKR61": 0,
                               "CA-ON/CLKV": 0}
    for name in ("A", "B"):
        assert history[name]["CA-ON/CLKX1"]["expired_changes"] == 0, name
    for name in ("C", "D", "E"):
        assert history[name]["CA-ON/CLKX1"]["expired_changes"] == 1, name
    assert await pool.fetchval("SELECT count(*) FROM expiry_marks") == 2
    assert await pool.fetchval(
        "SELECT count(*) FROM (SELECT plate_key, expires_on FROM expiry_marks"
        " GROUP BY 1, 2 HAVING count(*) > 1) x") == 0
    # notices: on their day, once, sent once
    windows = {name: sorted(n for k in h.values() for n in k["window_notices"])
               for name, h in history.items()}
    assert windows["A"] == windows["B"] == ["CA-ON/CLKX0:expired",
                                            "CA-ON/CLKX1:renewal_reminder:7"]
    assert windows["C"] == windows["D"] == windows["E"] == sorted([
        "CA-ON/CLKX0:expired", "CA-ON/CLKX1:renewal_reminder:7", "CA-ON/CLKX1:expired",
        "CA-ON/CLKR61:renewal_reminder:60"])
    notices = await pool.fetch("SELECT notice_id FROM notices")
    sent = await pool.fetch("SELECT notice_id, count(*) AS n FROM notice_deliveries"
                            " WHERE outcome = 'sent' GROUP BY notice_id")
    assert len(notices) == 4 and {r["notice_id"] for r in sent} == {
        r["notice_id"] for r in notices} and all(r["n"] == 1 for r in sent)
    assert requests == {f"{r['notice_id']}:sms": 1 for r in notices}
    # audit: one row per read, stamped with the real time and the database's own time
    rows = await pool.fetch("SELECT at, recorded_at, result FROM audit_log ORDER BY id")
    assert len(rows) == len(reads) == 5
    for (name, view, before, after), row in zip(reads, rows, strict=True):
        assert before <= row["at"] <= after, (name, row, before, after)
        assert row["result"] == view["status"] == (
            "expired" if name in ("C", "E") else "valid"), name
        assert before <= row["recorded_at"] <= after, (name, row, before, after)
    figures("clock_jumps", phases="A:+0,B:-1h,C:+1d,D:-1d,E:+1d", plates=len(expiring),
            notices=len(notices), sent=sum(requests.values()),
            expired_changes=sum(expired_changes.values()), reads=len(rows),
            violations=0, seconds=round(time.monotonic() - started))


async def snapshot(pool: asyncpg.Pool) -> dict[str, dict]:
    """Per plate: the status changes saying ``expired`` and the window notices made."""
    out: dict[str, dict] = {}
    for key in await pool.fetch("SELECT plate_key FROM plates"):
        plate = key["plate_key"]
        out[plate] = {
            "expired_changes": await pool.fetchval(
                "SELECT count(*) FROM status_changes WHERE plate_key = $1"
                " AND view->>'status' = 'expired'", plate),
            "window_notices": [
                f"{plate}:{r['kind']}" + (f":{r['window_days']}" if r["window_days"] >= 0
                                          else "")
                for r in await pool.fetch(
                    "SELECT kind, window_days FROM notices WHERE plate_key = $1"
                    " AND window_days IS NOT NULL", plate)]}
    return out
