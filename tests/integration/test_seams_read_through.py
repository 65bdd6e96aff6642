"""The whole read path: events produced to Kafka, applied by a real ``platereg consume
registry`` process, read back through every registry route and from ``plates.status``.

Nothing is inserted by hand: every answer is compared with the reference fold
(tests/integration/consumer_support.py, written from the contract) and with
the other routes. The registry's clock is pinned (test-only
``PLATEREG_CLOCK_OFFSET_SECONDS``) to noon of a fixed day in a time zone far
from UTC, so the expected statuses do not depend on when the test runs.
"""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import pytest
from api_helpers import bearer, pq, role_keys, running_api

from platereg.clock import Clock
from schemas import topics as contract
from tests.integration.consumer_support import (
    BASE_TIME,
    encoded,
    event,
    merge_ends,
    produce,
    random_events,
    reference_fold,
    start_consumer_process,
    stop_process,
    wait_offsets,
)
from tests.integration.kafka_support import read_topic
from tests.integration.seam_support import (
    as_published,
    expected_view,
    log_text,
    wait_relayed,
    without_as_of,
)

pytestmark = pytest.mark.integration

TZ = "Pacific/Kiritimati"          # UTC+14
TODAY = dt.date(2026, 6, 15)       # the registry's pinned day


def _issued(subject: str, minutes: int, expires_on: str = "2027-01-31") -> dict:
    return event("plate.issued", subject, BASE_TIME + dt.timedelta(minutes=minutes), {
        "plate_class": "passenger", "expires_on": expires_on,
        "vehicle": {"vin": "VSEAM", "make": "Kia", "model": "Rio", "year": 2021,
                    "colour": "red"},
        "owner": {"owner_id": f"own-{subject[-4:]}", "name": "Seam Owner",
                  "email": "seam@example.org"}})


def _scenario() -> tuple[list[dict], list[dict]]:
    """Two phases: random traffic plus plates that enter the hotlist and leave it."""
    rng = random.Random(2026)
    keys = [f"CA-QC/S{i:03d}" for i in range(60)]
    phase1 = random_events(rng, keys, 500)
    phase1 += [_issued("CA-QC/HOT1", 10), _issued("CA-QC/HOT2", 10),
               _issued("CA-QC/CAND0", 10), _issued("CA-QC/CANDO", 11, "2026-06-14"),
               event("plate.stolen_reported", "CA-QC/HOT1", BASE_TIME + dt.timedelta(hours=1),
                     {"agency": "SQ", "report_id": "r1"}),
               event("plate.suspended", "CA-QC/HOT2", BASE_TIME + dt.timedelta(hours=1),
                     {"reason": "court_order"})]
    rng.shuffle(phase1)
    late = BASE_TIME + dt.timedelta(days=30)      # after every random event
    phase2 = random_events(rng, keys, 150)
    phase2 += [event("plate.recovered", "CA-QC/HOT1", late, {}),      # leaves the hotlist
               event("plate.reinstated", "CA-QC/HOT2", late, {})]     # leaves it too
    return phase1, phase2


def _apply_hotlist(current: dict[str, dict], entries: list[dict]) -> None:
    for e in entries:
        key = f"{e['jurisdiction']}/{e['plate']}"
        if e["removed"]:
            current.pop(key, None)
        else:
            current[key] = as_published({k: v for k, v in e.items() if k != "removed"})


async def _full_hotlist(client, headers: dict) -> tuple[list, str]:
    """Every page of the full list; returns the entries and the delta cursor after it."""
    entries: list[dict] = []
    since = None
    while True:
        params = {"limit": 50, "purpose": "testing", **({"since": since} if since else {})}
        page = (await client.get("/v1/hotlist", params=params, headers=headers)).json()
        entries += page["entries"]
        since = page["next"]
        if len(page["entries"]) < 50:
            return entries, since


async def _hotlist_deltas(client, headers: dict, since: str) -> list:
    entries: list[dict] = []
    while True:
        page = (await client.get("/v1/hotlist", params={"since": since, "limit": 50,
                                                         "purpose": "testing"},
                                 headers=headers)).json()
        entries += page["entries"]
        if page["next"] == since:
            return entries
        since = page["next"]


async def test_what_the_consumer_wrote_reads_the_same_through_every_route(
        topics, pool: asyncpg.Pool, tmp_path, monkeypatch) -> None:
    tz = ZoneInfo(TZ)
    clock = Clock()
    clock.set(dt.datetime(TODAY.year, TODAY.month, TODAY.day, 12, tzinfo=tz))
    monkeypatch.setenv("PLATEREG_TIMEZONE", TZ)
    monkeypatch.setenv("PLATEREG_CLOCK_OFFSET_SECONDS", str(clock.offset.total_seconds()))
    settings = topics.model_copy(update={"timezone": TZ})
    phase1, phase2 = _scenario()
    keys = await role_keys(pool)
    enf = bearer(keys["enforcement"])
    op = bearer(keys["operator"])
    log = str(tmp_path / "consumer.log")
    proc = start_consumer_process(settings, log_path=log)
    try:
        async with running_api(settings, clock=clock) as api:
            c = api.client
            first, cursor = await _full_hotlist(c, enf)
            assert first == []
            ends = await produce(settings, encoded(phase1))
            await wait_offsets(pool, settings, ends, proc=proc)
            middle, _ = await _full_hotlist(c, enf)
            ends = await merge_ends(ends, await produce(settings, encoded(phase2)))
            await wait_offsets(pool, settings, ends, proc=proc)
            await wait_relayed(pool, settings)
            expected = reference_fold(phase1 + phase2)
            await _check_reads(c, enf, op, expected)
            # hotlist: the full list now, and the deltas replayed over the empty first list
            flagged = {k: expected_view(k, s, TODAY, False) for k, s in expected.items()
                       if s["issued"] and expected_view(k, s, TODAY, False)["status"] != "valid"}
            full, _ = await _full_hotlist(c, enf)
            assert {f"{e['jurisdiction']}/{e['plate']}": without_as_of(e) for e in full} == {
                k: {**v, "removed": False} for k, v in flagged.items()}
            deltas = await _hotlist_deltas(c, enf, cursor)
            replayed: dict[str, dict] = {}
            _apply_hotlist(replayed, deltas)
            assert replayed == {k: as_published(v) for k, v in flagged.items()}
            removed = {f"{e['jurisdiction']}/{e['plate']}" for e in deltas if e["removed"]}
            assert {"CA-QC/HOT1", "CA-QC/HOT2"} <= removed
            assert {"CA-QC/HOT1", "CA-QC/HOT2"} <= {
                f"{e['jurisdiction']}/{e['plate']}" for e in middle}
        await _check_status_topic(settings, pool, expected)
    finally:
        assert stop_process(proc) == 0
    assert "Seam Owner" not in log_text(log) and "CA-QC/" not in log_text(log)


async def _check_reads(c, enf: dict, op: dict, expected: dict[str, dict]) -> None:
    issued = {k: s for k, s in expected.items() if s["issued"]}
    for key, s in expected.items():
        j, p = key.split("/")
        r = await c.post("/v1/plates/query", json=pq(j, p), headers=op)
        if not s["issued"]:
            assert r.status_code == 404
            continue
        assert without_as_of(r.json()) == expected_view(key, s, TODAY, True)
        r = await c.post("/v1/plates/query", json=pq(j, p), headers=enf)
        assert without_as_of(r.json()) == expected_view(key, s, TODAY, False)
        events = (await c.post("/v1/plates/history", json=pq(j, p), headers=op)
                  ).json()["events"]
        assert len(events) == s["event_count"] and events[-1]["id"] == s["last_event_id"]
    # one batch with every plate, unknown ones included, in request order
    refs = [{"jurisdiction": k.split("/")[0], "plate": k.split("/")[1]}
            for k in [*expected, "CA-QC/NEVER1"]]
    r = await c.post("/v1/plates/lookup", headers=enf, json={"plates": refs,
                                                              "purpose": "testing"})
    results = r.json()["results"]
    assert [f"{v['jurisdiction']}/{v['plate']}" for v in results] == [
        f"{x['jurisdiction']}/{x['plate']}" for x in refs]
    for v in results:
        key = f"{v['jurisdiction']}/{v['plate']}"
        if key in issued:
            assert without_as_of(v) == expected_view(key, issued[key], TODAY, False)
        else:
            assert v["status"] == "unknown"
    # candidates: CAND0 and CANDO differ by a confusable character
    r = await c.post("/v1/plates/candidates", json=pq("CA-QC", "CAND0"), headers=enf)
    got = {f"{v['jurisdiction']}/{v['plate']}": without_as_of(v)
           for v in r.json()["candidates"]}
    assert got == {k: expected_view(k, issued[k], TODAY, False)
                   for k in ("CA-QC/CAND0", "CA-QC/CANDO")}
    assert got["CA-QC/CANDO"]["status"] == "expired"     # expired yesterday, local time


async def _check_status_topic(settings, pool: asyncpg.Pool, expected: dict) -> None:
    """plates.status carries every status change once, in order, ending at the view."""
    messages = await read_topic(settings, settings.topic(contract.STATUS))
    rows = await pool.fetch("SELECT plate_key, view FROM status_changes ORDER BY seq")
    assert len(messages) == len(rows)
    per_key: dict[bytes, list[dict]] = {}
    for m in messages:
        per_key.setdefault(m.key, []).append(orjson.loads(m.value))
    rows_per_key: dict[bytes, list[dict]] = {}
    for r in rows:
        rows_per_key.setdefault(r["plate_key"].encode(), []).append(r["view"])
    assert per_key == rows_per_key
    issued = {k for k, s in expected.items() if s["issued"]}
    assert {k.decode() for k in per_key} == issued
    for key in issued:
        assert as_published(per_key[key.encode()][-1]) == as_published(expected_view(
            key, expected[key], TODAY, False))
