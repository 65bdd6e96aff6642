"""Audit completeness: every plate answered gives exactly one audit row (and one count)."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal

import asyncpg
import httpx
import pytest
from api_helpers import (
    bearer,
    insert_change,
    insert_plate,
    pq,
    role_keys,
    running_api,
    served_registry,
)
from prometheus_client import REGISTRY

from platereg.db import create_pool
from registry.api.audit import AuditUnavailable, AuditWriter
from tests.integration.seam_support import wait_for


def _row(plate: str, purpose: str | None = None) -> tuple:
    """An audit row as the API records it: (at, key id, kind, jurisdiction, plate, purpose,
    result)."""
    return (dt.datetime.now(dt.UTC), "k1", "single", "CA-ON", plate, purpose, "valid")

pytestmark = pytest.mark.integration


def _lookups() -> dict[tuple[str, str, str], float]:
    out = {}
    for metric in REGISTRY.collect():
        if metric.name == "platereg_lookups":
            for s in metric.samples:
                if s.name.endswith("_total"):
                    out[(s.labels["kind"], s.labels["result"], s.labels["purpose"])] = s.value
    return out


async def test_every_lookup_of_every_kind_is_audited_exactly(settings, pool) -> None:
    for i in range(20):
        await insert_plate(pool, "CA-ON", f"AU{i:02d}", stolen=i < 4)
    await insert_plate(pool, "CA-ON", "A8C", suspension_reasons=("court_order",))
    await insert_plate(pool, "CA-ON", "ABC")
    keys = await role_keys(pool)
    enf, op = bearer(keys["enforcement"]), bearer(keys["operator"])
    enf_id, op_id = keys["enforcement"].split("_")[1], keys["operator"].split("_")[1]
    before = _lookups()
    async with running_api(settings) as api:
        # single: 20 found, 5 not found, 3 refused (invalid: no audit, nothing was looked up)
        for i in range(25):
            r = await api.client.post("/v1/plates/query", headers=enf,
                                      json=pq("CA-ON", f"AU{i:02d}", "traffic_stop"))
            assert r.status_code == (200 if i < 20 else 404)
        for bad in (pq("CA-ON", "$"), pq("CA-ON", "AU01", "patrol"), pq("CA-ON", "AU01", None)):
            r = await api.client.post("/v1/plates/query", headers=enf, json=bad)
            assert r.status_code == 422
        # batch: 3 requests x 30 items (20 found, 10 unknown) with a body purpose
        for _ in range(3):
            r = await api.client.post("/v1/plates/lookup", headers=op, json={
                "purpose": "investigation", "case_ref": "INV-2026/7",
                "plates": [{"jurisdiction": "CA-ON", "plate": f"AU{i:02d}"} for i in range(30)]})
            assert r.status_code == 200
        # candidates: ABC -> ABC and A8C exist (2 rows); XYZ -> none, 1 not_found row;
        # A8C0 -> none of its spellings exists, 1 not_found row.
        for plate, n in (("ABC", 2), ("XYZ", 0), ("A8C0", 0)):
            r = await api.client.post("/v1/plates/candidates", headers=enf,
                                      json=pq("CA-ON", plate, "alpr_hit"))
            assert len(r.json()["candidates"]) == n
        # hotlist: full list (4 stolen + 1 suspended), then 2 changes (1 hotlist entry)
        r = await api.client.get("/v1/hotlist", params={"purpose": "alpr_hit"}, headers=enf)
        assert len(r.json()["entries"]) == 5
        view = dict(r.json()["entries"][0])
        view.pop("removed")
        await insert_change(pool, view, True, True)
        await insert_change(pool, {**view, "status": "valid", "flags": []}, False, False)
        r = await api.client.get("/v1/hotlist", headers=enf,
                                 params={"since": r.json()["next"], "purpose": "alpr_hit"})
        assert len(r.json()["entries"]) == 1
        rows = await pool.fetch("SELECT key_id, kind, jurisdiction, plate, purpose, case_ref,"
                                " result FROM audit_log ORDER BY id")
    after = _lookups()

    def count(**match: object) -> int:
        return sum(all(r[k] == v for k, v in match.items()) for r in rows)

    assert count(kind="single") == 25
    assert count(kind="single", result="not_found") == 5
    assert count(kind="single", result="stolen") == 4
    assert count(kind="single", key_id=enf_id, purpose="traffic_stop", case_ref=None) == 25
    assert count(kind="batch") == 90
    assert count(kind="batch", result="not_found") == 30
    assert count(kind="batch", key_id=op_id, purpose="investigation",
                 case_ref="INV-2026/7") == 90
    assert count(kind="candidates") == 4
    assert count(kind="candidates", plate="A8C", result="suspended") == 1
    assert count(kind="candidates", result="not_found") == 2
    assert count(kind="hotlist") == 6 and count(kind="hotlist", purpose="alpr_hit") == 6
    assert len(rows) == 25 + 90 + 4 + 6
    assert all(r["jurisdiction"] == "CA-ON" for r in rows)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    # The lookup counter moves exactly with the audit rows, by purpose.
    assert delta[("single", "found", "traffic_stop")] == 20
    assert delta[("single", "not_found", "traffic_stop")] == 5
    assert delta[("batch", "found", "investigation")] == 60
    assert delta[("batch", "not_found", "investigation")] == 30
    assert delta[("candidates", "found", "alpr_hit")] == 2
    assert delta[("candidates", "not_found", "alpr_hit")] == 2
    assert delta[("hotlist", "found", "alpr_hit")] == 6
    assert not any(k[2] in ("patrol", "testing") and v for k, v in delta.items())


async def test_a_lookup_that_cannot_be_audited_is_refused(settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "FULL1")
    enf = bearer((await role_keys(pool))["enforcement"])
    async with running_api(settings) as api:
        writer: AuditWriter = api.app.state.audit
        assert (await api.client.post("/v1/plates/query", headers=enf,
                                          json=pq("CA-ON", "FULL1"))).status_code == 200
        assert (await api.client.post("/v1/plates/query", headers=enf,
                                          json=pq("CA-ON", "FULL1"))).status_code == 200
        await writer.stop()  # nothing writes audit rows any more: no read is served
        r = await api.client.post("/v1/plates/query", headers=enf, json=pq("CA-ON", "FULL1"))
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.headers["content-type"] == "application/problem+json"
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 2


async def test_reads_fail_during_a_postgres_outage_and_are_audited_again_after_it(
        embedded, database_url: str) -> None:
    """A real outage (the embedded PostgreSQL stopped, then started): a read whose rows
    cannot be written gets AuditUnavailable (its route answers 503) instead of waiting or
    being served; once the server is back, writes go through again."""
    pool = await create_pool(database_url, min_size=1, max_size=2)
    writer = AuditWriter(pool, write_timeout=5)
    writer.start()
    try:
        await writer.write([_row("BEFORE")])
        embedded.pg.stop()
        try:
            for i in range(3):
                with pytest.raises(AuditUnavailable):
                    await writer.write([_row(f"P{i}")])
            assert writer.pending == 0 and writer.failed_writes == 3
        finally:
            embedded.pg.start()

        async def written_again() -> bool:
            try:
                await writer.write([_row("AFTER")])
            except AuditUnavailable:   # the pool's connections to the stopped server
                return False
            return True

        await wait_for(written_again, "a row written after the outage", 30)
    finally:
        await writer.stop()
        await pool.close()
    conn = await asyncpg.connect(database_url)
    try:
        plates = [r["plate"] for r in await conn.fetch("SELECT plate FROM audit_log ORDER BY id")]
    finally:
        await conn.close()
    assert plates == ["BEFORE", "AFTER"]


async def test_stop_writes_the_rows_reads_are_waiting_for(pool) -> None:
    """A clean shutdown writes what is queued (those reads are waiting to answer), then
    refuses new rows."""
    writer = AuditWriter(pool)
    writer.start()
    waiting = [asyncio.create_task(writer.write([_row(f"S{i}", "testing")])) for i in range(25)]
    await asyncio.sleep(0)       # queued, not yet written
    await writer.stop()
    await asyncio.gather(*waiting)
    assert writer.pending == 0
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 25
    with pytest.raises(AuditUnavailable):
        await writer.write([_row("LATE", "testing")])


async def test_reads_answered_by_the_served_api_are_audited_before_sigterm(
        settings, pool, tmp_path) -> None:
    """``platereg serve registry``: each lookup's row is in the audit log when its answer
    arrives, and a SIGTERM shuts the API down cleanly."""
    await insert_plate(pool, "CA-ON", "TERM1")
    enf = bearer((await role_keys(pool))["enforcement"])
    with served_registry(str(tmp_path / "api.log")) as served:
        for i in range(7):
            r = await asyncio.to_thread(httpx.post, f"{served.url}/v1/plates/query",
                                        headers=enf, json=pq("CA-ON", "TERM1"))
            assert r.status_code == 200
            assert await pool.fetchval("SELECT count(*) FROM audit_log") == i + 1
        # uvicorn shuts down, then re-raises SIGTERM to report how it was stopped
        assert await asyncio.to_thread(served.stop) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in served.log()
    assert await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE plate = 'TERM1' AND purpose = 'testing'") == 7
