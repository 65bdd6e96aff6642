"""Rows already in the database that cannot be folded stop only their own plate (issue 16).

Before the time checks, a ``plate.issued`` of ``0001-01-01T00:00:00Z`` was stored
as ``-infinity`` and read back as a naive datetime; the next event for that plate
crashed the consumer, and every restart crashed again. Here such rows (and other
unfoldable ones) are put straight into the database, then a real
``platereg consume registry`` process gets events for those plates and others.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess

import asyncpg
import httpx
import orjson
import pytest

from devtools.embedded import free_port
from tests.integration.cli_support import PLATEREG
from tests.integration.consumer_support import (
    BASE_TIME,
    encoded,
    event,
    produce,
    random_events,
    reference_fold,
    start_consumer_process,
    stop_process,
    stored_plates,
    wait_offsets,
)

pytestmark = pytest.mark.integration

ISSUED = {"plate_class": "passenger", "expires_on": "2030-01-31",
          "vehicle": {"vin": "V1", "make": "Kia", "model": "Rio", "year": 2020, "colour": "red"},
          "owner": {"owner_id": "own-q", "name": "Quinn Owner", "language": "en"}}
INFINITY = "CA-QC/POISON1"        # the issue: year 1 stored as -infinity
CORRUPT = "CA-QC/POISON2"         # a stored row the fold fails on (renewed without a date)
FUTURE_INF = "CA-QC/POISON3"      # +infinity in the state and the history
ODD_OWNER = "CA-QC/POISON4"       # a plates row edited by hand: owner is a JSON string
BAD = (INFINITY, CORRUPT, FUTURE_INF, ODD_OWNER)


async def _plate_row(pool: asyncpg.Pool, key: str, last_time: str, last_id: str,
                     count: int, owner: object = ISSUED["owner"]) -> None:
    jurisdiction, plate = key.split("/")
    await pool.execute(
        "INSERT INTO plates (plate_key, jurisdiction, plate, issued, plate_class, expires_on,"
        " vehicle, owner_id, owner, last_event_time, last_event_id, event_count)"
        f" VALUES ($1, $2, $3, true, 'passenger', '2030-01-31', $4, 'own-q', $5, {last_time},"
        " $6, $7)",
        key, jurisdiction, plate, ISSUED["vehicle"], owner, last_id, count)


async def _stored_event(pool: asyncpg.Pool, key: str, event_id: str, kind: str, time: str,
                        data: dict) -> None:
    await pool.execute(
        "INSERT INTO plate_events (event_id, plate_key, type, source, event_time, data,"
        f" fingerprint) VALUES ($1, $2, $3, '/registry/old', {time}, $4, 'fp')",
        event_id, key, kind, data)


async def _store_bad_rows(pool: asyncpg.Pool) -> None:
    await _stored_event(pool, INFINITY, "bad-inf", "plate.issued", "'-infinity'", ISSUED)
    await _plate_row(pool, INFINITY, "'-infinity'", "bad-inf", 1)
    t10 = f"'{(BASE_TIME + dt.timedelta(minutes=10)).isoformat()}'"
    t20 = f"'{(BASE_TIME + dt.timedelta(minutes=20)).isoformat()}'"
    await _stored_event(pool, CORRUPT, "ok-1", "plate.issued", t10, ISSUED)
    await _stored_event(pool, CORRUPT, "bad-corrupt", "plate.renewed", t20, {})
    await _plate_row(pool, CORRUPT, t20, "bad-corrupt", 2)
    await _stored_event(pool, FUTURE_INF, "bad-future", "plate.issued", "'infinity'", ISSUED)
    await _plate_row(pool, FUTURE_INF, "'infinity'", "bad-future", 1)
    await _stored_event(pool, ODD_OWNER, "odd-1", "plate.issued", t10, ISSUED)
    await _plate_row(pool, ODD_OWNER, t10, "odd-1", 1, owner="Quinn Owner")


def _renewal(key: str, minutes: int, day: str) -> dict:
    return event("plate.renewed", key, BASE_TIME + dt.timedelta(minutes=minutes),
                 {"expires_on": day})


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PLATEREG, *args], env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)


def _metric(text: str, line_start: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(line_start)]
    return sum(values)


async def test_unfoldable_stored_rows_quarantine_only_their_plates(
        topics, pool: asyncpg.Pool, tmp_path) -> None:
    await _store_bad_rows(pool)
    rng = random.Random(16)
    good_plates = [f"CA-ON/G{i}" for i in range(8)]
    good = random_events(rng, good_plates, 150)
    bad_new = [_renewal(INFINITY, 60, "2031-01-01"), _renewal(CORRUPT, 5, "2031-02-02"),
               _renewal(FUTURE_INF, 60, "2031-03-03"), _renewal(ODD_OWNER, 60, "2031-04-04")]
    port = free_port()
    log = str(tmp_path / "consumer.log")
    proc = start_consumer_process(topics, "--metrics-port", str(port), log_path=log)
    try:
        ends = await produce(topics, encoded(bad_new + good[:75]))
        await wait_offsets(pool, topics, ends, timeout=90, proc=proc)
        # every later event for a quarantined plate is held too; the consumer stays up
        again = [_renewal(INFINITY, 61 + i, f"2032-01-0{i + 1}") for i in range(3)]
        ends = await produce(topics, encoded(again + good[75:]))
        await wait_offsets(pool, topics, ends, timeout=90, proc=proc, at_least=True)
        assert proc.poll() is None, "the consumer died on a stored row"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        code = stop_process(proc)
    assert code == 0
    output = open(log, encoding="utf-8", errors="replace").read()

    # every other plate is exactly the fold of its events
    plates = await stored_plates(pool)
    assert {k: plates[k] for k in good_plates if k in plates} == reference_fold(good)
    # the quarantined plates: state untouched, new events stored (nothing lost)
    rows = {r["plate_key"]: r for r in await pool.fetch("SELECT * FROM quarantined_plates")}
    assert set(rows) == set(BAD)
    assert rows[INFINITY]["held_events"] == 4 and rows[INFINITY]["event_id"] == "bad-inf"
    assert "stored time outside" in rows[INFINITY]["reason"]
    assert rows[CORRUPT]["held_events"] == 1 and rows[CORRUPT]["event_id"] == "bad-corrupt"
    assert "the fold failed (KeyError)" == rows[CORRUPT]["reason"]
    assert rows[FUTURE_INF]["event_id"] == "bad-future"
    assert rows[ODD_OWNER]["reason"] == "stored owner has the wrong type"
    assert plates[INFINITY]["event_count"] == 1 and plates[INFINITY]["last_event_id"] == "bad-inf"
    assert await pool.fetchval(
        "SELECT count(*) FROM plate_events WHERE plate_key = $1", INFINITY) == 5
    # counted and logged, without the plate
    assert _metric(metrics, "platereg_quarantined_plates_total") == 4
    assert _metric(metrics, 'platereg_events_total{outcome="quarantined"') == 7
    assert output.count("plate quarantined") == 4
    assert "POISON" not in output and "Traceback" not in output

    # the operator lists them
    listed = _cli("quarantine", "list")
    assert listed.returncode == 0, listed.stderr
    assert all(key in listed.stdout for key in BAD) and "4 quarantined plate(s)" in listed.stderr
    as_json = orjson.loads(_cli("quarantine", "list", "--json").stdout)
    assert sorted(r["plate_key"] for r in as_json) == sorted(rows)
    for r in as_json:
        assert (r["reason"], r["held_events"]) == (rows[r["plate_key"]]["reason"],
                                                   rows[r["plate_key"]]["held_events"])
        assert set(r) == {"plate_key", "reason", "event_id", "held_events", "quarantined_at",
                          "updated_at"}

    # repaired, the plate is released and folded from its history; unrepaired, it stays
    await pool.execute("DELETE FROM plate_events WHERE event_id = 'bad-inf'")
    released = _cli("quarantine", "release", INFINITY)
    assert released.returncode == 0, released.stdout + released.stderr
    assert (await stored_plates(pool))[INFINITY] == reference_fold(bad_new[:1] + again)[INFINITY]
    kept = _cli("quarantine", "release", CORRUPT)
    assert kept.returncode == 1 and "still cannot be folded" in kept.stdout
    remaining = await pool.fetch("SELECT plate_key FROM quarantined_plates")
    assert {r["plate_key"] for r in remaining} == {CORRUPT, FUTURE_INF, ODD_OWNER}


async def test_history_route_and_reads_are_timezone_aware(topics, pool: asyncpg.Pool) -> None:
    """A stored -infinity reads back aware, and the history route shows it with an offset."""
    from tests.integration.api_helpers import bearer, role_keys, running_api

    await _stored_event(pool, INFINITY, "bad-inf", "plate.issued", "'-infinity'", ISSUED)
    await _plate_row(pool, INFINITY, "'-infinity'", "bad-inf", 1)
    row = await pool.fetchrow("SELECT event_time, received_at FROM plate_events")
    assert row["event_time"].utcoffset() == dt.timedelta(0)
    assert row["received_at"].utcoffset() == dt.timedelta(0)
    keys = await role_keys(pool)
    async with running_api(topics) as api:
        query = {"jurisdiction": "CA-QC", "plate": "POISON1", "purpose": "testing"}
        r = await api.client.post("/v1/plates/history", json=query,
                                  headers=bearer(keys["operator"]))
        assert r.status_code == 200, r.text
        time = r.json()["events"][0]["time"]
        parsed = dt.datetime.fromisoformat(time.replace("Z", "+00:00"))
        assert parsed.utcoffset() is not None, time
        r = await api.client.post("/v1/plates/query", json=query,
                                  headers=bearer(keys["operator"]))
        assert r.status_code == 200, r.text


async def test_the_expiry_sweep_skips_a_plate_whose_stored_state_cannot_be_used(
        settings, pool: asyncpg.Pool) -> None:
    """One hand-edited plates row no longer stops the daily sweep of every other plate."""
    from registry.consumer.expiry import sweep

    t10 = f"'{(BASE_TIME + dt.timedelta(minutes=10)).isoformat()}'"
    await _plate_row(pool, ODD_OWNER, t10, "odd-1", 1)
    await _plate_row(pool, "CA-QC/FINE1", t10, "fine-1", 1)
    await pool.execute("UPDATE plates SET expires_on = '2020-01-31'")
    await pool.execute("UPDATE plates SET vehicle = '\"a string\"' WHERE plate_key = $1",
                       ODD_OWNER)
    async with pool.acquire() as conn:
        assert await sweep(conn, settings.tz) == 1
    changes = await pool.fetch("SELECT plate_key, view FROM status_changes")
    assert [(c["plate_key"], c["view"]["status"]) for c in changes] == [
        ("CA-QC/FINE1", "expired")]
