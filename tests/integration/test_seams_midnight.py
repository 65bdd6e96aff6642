"""Expiry at midnight in the registry's time zone, through the real moving parts.

The registry's clock (``platereg.clock.Clock``) is injected into the consumer,
``run_sweeper`` and the API, and moved across midnight in Pacific/Kiritimati
(UTC+14), where the local date and the UTC date differ for most of the day: a
plate expiring "today" must stay valid until local midnight and be expired
right after it, in the API, in the status outbox and on ``plates.status``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import orjson
import pytest
from api_helpers import bearer, pq, role_keys, running_api, served_registry

from platereg.clock import Clock
from registry.consumer.expiry import run_sweeper
from schemas import topics as contract
from tests.integration.consumer_support import (
    consumer_running,
    encoded,
    event,
    produce,
    wait_offsets,
)
from tests.integration.kafka_support import read_topic
from tests.integration.seam_support import wait_for, wait_relayed

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Pacific/Kiritimati")
DAY = dt.date(2026, 3, 10)     # EXP1 expires on DAY; EXP0 expired the day before


def _local(day: dt.date, hour: int, minute: int = 0, second: float = 0) -> dt.datetime:
    whole = int(second)
    return dt.datetime(day.year, day.month, day.day, hour, minute, whole,
                       int((second - whole) * 1e6), tzinfo=TZ)


def _issued(subject: str, time: dt.datetime, expires_on: dt.date) -> dict:
    return event("plate.issued", subject, time.astimezone(dt.UTC), {
        "plate_class": "passenger", "expires_on": expires_on.isoformat(),
        "vehicle": {"vin": "VMID", "make": "Mazda", "model": "3", "year": 2022,
                    "colour": "grey"},
        "owner": {"owner_id": "own-mid", "name": "Mid Night"}})


async def _statuses(pool: asyncpg.Pool, key: str) -> list[str]:
    rows = await pool.fetch("SELECT view FROM status_changes WHERE plate_key = $1 ORDER BY seq",
                            key)
    return [r["view"]["status"] for r in rows]


async def test_midnight_in_the_registry_zone_expires_through_sweeper_api_and_topic(
        topics, pool: asyncpg.Pool) -> None:
    settings = topics.model_copy(update={"timezone": "Pacific/Kiritimati"})
    clock = Clock()
    keys = await role_keys(pool)
    enf = bearer(keys["enforcement"])
    stop = asyncio.Event()
    async with consumer_running(settings, clock=clock), running_api(settings,
                                                                    clock=clock) as api:
        # Both plates issued the day before DAY (local): both valid then.
        clock.set(_local(DAY - dt.timedelta(days=1), 9))
        ends = await produce(settings, encoded([
            _issued("CA-NU/EXP0", clock.now() - dt.timedelta(hours=1), DAY - dt.timedelta(1)),
            _issued("CA-NU/EXP1", clock.now() - dt.timedelta(hours=1), DAY)]))
        await wait_offsets(pool, settings, ends)
        assert await _statuses(pool, "CA-NU/EXP0") == ["valid"]
        # Two seconds before midnight at the end of DAY; the UTC date is DAY too (10:00 UTC).
        clock.set(_local(DAY, 23, 59, 58))
        sweeper = asyncio.create_task(run_sweeper(settings, stop, check_every=0.05,
                                                  clock=clock))
        try:
            # the sweep at start records EXP0 (expired since DAY began), not EXP1
            await wait_for(lambda: _has(pool, "CA-NU/EXP0", ["valid", "expired"]),
                           "the start-up sweep to expire EXP0")
            r = await api.client.post("/v1/plates/query", json=pq("CA-NU", "EXP1"), headers=enf)
            assert (r.json()["status"], r.json()["flags"]) == ("valid", [])
            assert await _statuses(pool, "CA-NU/EXP1") == ["valid"]
            # Local midnight passes; in UTC it is still DAY (10:00), nowhere near midnight.
            clock.set(_local(DAY + dt.timedelta(days=1), 0, 0, 1))
            assert clock.now().astimezone(dt.UTC).date() == DAY
            await wait_for(lambda: _has(pool, "CA-NU/EXP1", ["valid", "expired"]),
                           "the sweeper to notice the new day")
            r = await api.client.post("/v1/plates/query", json=pq("CA-NU", "EXP1"), headers=enf)
            assert (r.json()["status"], r.json()["flags"]) == ("expired", ["expired"])
            await wait_relayed(pool, settings)
        finally:
            stop.set()
            await sweeper
        # each expiry recorded once, however often the sweeper looked
        assert await _statuses(pool, "CA-NU/EXP0") == ["valid", "expired"]
        assert await _statuses(pool, "CA-NU/EXP1") == ["valid", "expired"]
        hot = (await api.client.get("/v1/hotlist", params={"purpose": "testing"},
                                    headers=enf)).json()["entries"]
        assert {e["plate"] for e in hot} == {"EXP0", "EXP1"}
    messages = await read_topic(settings, settings.topic(contract.STATUS))
    by_key: dict[bytes, list[str]] = {}
    for m in messages:
        by_key.setdefault(m.key, []).append(orjson.loads(m.value)["status"])
    assert by_key == {b"CA-NU/EXP0": ["valid", "expired"], b"CA-NU/EXP1": ["valid", "expired"]}


async def _has(pool: asyncpg.Pool, key: str, statuses: list[str]) -> bool:
    return await _statuses(pool, key) == statuses


async def test_a_served_api_reads_the_day_from_the_registry_zone_and_clock(
        settings, pool: asyncpg.Pool, tmp_path) -> None:
    """``platereg serve registry`` with the test-only clock offset, each side of local
    midnight in a zone behind UTC (Pacific/Pago_Pago, UTC-11)."""
    zone = ZoneInfo("Pacific/Pago_Pago")
    await pool.execute(
        "INSERT INTO plates (plate_key, jurisdiction, plate, issued, plate_class, expires_on,"
        " vehicle, owner_id, owner, suspension_reasons, stolen, cancelled, last_event_time,"
        " last_event_id, event_count) VALUES ('CA-NU/PAGO1', 'CA-NU', 'PAGO1', true,"
        " 'passenger', $1, '{}', 'o', '{\"owner_id\": \"o\", \"name\": \"N\"}', '{}', false,"
        " false, now(), 'e1', 1)", DAY)
    enf = bearer((await role_keys(pool))["enforcement"])
    seen = []
    for local in (dt.datetime(2026, 3, 10, 23, 0, tzinfo=zone),      # 10:00 UTC on 3-11
                  dt.datetime(2026, 3, 11, 0, 30, tzinfo=zone)):     # 11:30 UTC on 3-11
        offset = (local - dt.datetime.now(dt.UTC)).total_seconds()
        env = {"PLATEREG_TIMEZONE": "Pacific/Pago_Pago",
               "PLATEREG_CLOCK_OFFSET_SECONDS": str(offset)}
        with served_registry(str(tmp_path / "api.log"), env=env) as served:
            r = await asyncio.to_thread(httpx.post, f"{served.url}/v1/plates/query",
                                        headers=enf, json=pq("CA-NU", "PAGO1"))
            seen.append(r.json()["status"])
    # the UTC date is the 11th both times: only the registry's zone tells them apart
    assert seen == ["valid", "expired"]
