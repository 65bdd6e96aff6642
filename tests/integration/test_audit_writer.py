"""The audit writer under pressure, with the real PostgreSQL: a lock held on ``audit_log``
holds the reads whose rows wait for it (more than the bounded queue get 503 at once,
``/readyz`` 503 once the oldest row waits too long, both recover when the lock goes); a
write failure of a type nobody expected fails its reads (503), is logged (type only) and
counted, and the writer goes on; owner, notice, preference, empty hotlist and audit-route
reads are audited (tests/integration/test_audit_guards.py: what the database itself
refuses)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import pytest
import structlog
from api_helpers import bearer, insert_plate, owner, role_keys, running_api
from owner_support import OWNER_KEY
from prometheus_client import REGISTRY

from platereg.db import create_pool
from platereg.security.keys import create_key
from registry.api.audit import AuditUnavailable, AuditWriter
from tests.integration.seam_support import wait_for

pytestmark = pytest.mark.integration


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_lock_on_audit_log_holds_reads_then_gives_503_and_readyz_until_released(
        settings, pool, database_url: str) -> None:
    await insert_plate(pool, "CA-ON", "LOCK1")
    enf = bearer((await role_keys(pool))["enforcement"])
    lock1 = {"jurisdiction": "CA-ON", "plate": "LOCK1", "purpose": "testing"}
    refused = _sample("platereg_audit_refused_total")
    locker = await asyncpg.connect(database_url)
    try:
        async with running_api(settings, audit_max_pending=3,
                               audit_ready_lag_seconds=0.5) as api:
            assert (await api.client.get("/readyz")).status_code == 200
            tx = locker.transaction()
            await tx.start()
            await locker.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
            try:
                held = [asyncio.create_task(api.client.post(
                    "/v1/plates/query", json=lock1, headers=enf)) for _ in range(3)]
                await wait_for(lambda: _is(_sample("platereg_audit_backlog") >= 3),
                               "three reads waiting for their audit rows", 30)
                assert not any(t.done() for t in held)   # not answered before the audit
                r = await api.client.post("/v1/plates/query", json=lock1, headers=enf)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] and "audit" in r.json()["detail"]
                assert _sample("platereg_audit_refused_total") == refused + 1

                async def not_ready() -> bool:
                    r = await api.client.get("/readyz")
                    return r.status_code == 503 and r.json()["checks"]["audit"] == "lagging"

                await wait_for(not_ready, "/readyz 503 with the audit writer stalled", 30)
            finally:
                await tx.rollback()
            assert [(await t).status_code for t in held] == [200, 200, 200]

            async def ready() -> bool:
                return (await api.client.get("/readyz")).status_code == 200

            await wait_for(ready, "/readyz 200 once the lock is gone", 60)
            r = await api.client.post("/v1/plates/query", json=lock1, headers=enf)
            assert r.status_code == 200
    finally:
        await locker.close()
    # The three held by the lock and the one after; never the refused one.
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE plate = 'LOCK1'") == 4


class Surprise(Exception):
    """Not a database or network error: the writer must not stop on it."""


class FailingPool:
    """The real pool, but ``acquire`` raises Surprise the first ``failures`` times."""

    def __init__(self, pool: asyncpg.Pool, failures: int) -> None:
        self.pool = pool
        self.failures = failures

    def acquire(self):  # noqa: ANN201 - the pool's own context manager
        if self.failures > 0:
            self.failures -= 1
            raise Surprise("SECRETPLATE7 in the message must never be logged")
        return self.pool.acquire()


def _row(plate: str) -> tuple:
    return (dt.datetime.now(dt.UTC), "k1", "single", "CA-ON", plate, "testing", "valid")


async def test_a_write_failure_of_an_unexpected_type_fails_its_read_and_the_writer_goes_on(
        database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    failing = FailingPool(pool, failures=1)
    writer = AuditWriter(failing)  # type: ignore[arg-type]
    before = _sample("platereg_audit_write_failures_total", error="Surprise")
    try:
        writer.start()
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(AuditUnavailable):
                await writer.write([_row("SECRETPLATE7")])
        assert writer.pending == 0 and failing.failures == 0
        assert _sample("platereg_audit_write_failures_total", error="Surprise") == before + 1
        failures = [e for e in logs if e["event"] == "audit write failed; its reads answer 503"]
        assert len(failures) == 1
        assert failures[0]["error_type"] == "Surprise" and failures[0]["log_level"] == "warning"
        assert "SECRETPLATE7" not in repr(logs)
        # The task is still running: a later read's row is written.
        await writer.write([_row("LATER1")])
        assert writer.written == 1
    finally:
        await writer.stop()
        await pool.close()
    conn = await asyncpg.connect(database_url)
    try:
        assert [r["plate"] for r in await conn.fetch("SELECT plate FROM audit_log")] == ["LATER1"]
    finally:
        await conn.close()


async def _is(value: bool) -> bool:
    return value


async def test_owner_notice_preference_hotlist_and_audit_reads_are_audited(
        settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "OWN1", owner_data=owner("own-a"))
    await insert_plate(pool, "CA-ON", "OWN2", owner_data=owner("own-a"))
    await pool.execute(
        "INSERT INTO notices (notice_id, dedupe_key, kind, plate_key, owner_id, language,"
        " channels) VALUES ($1, 'd1', 'renewal_reminder', 'CA-ON/OWN1', 'own-a', 'en',"
        " ARRAY['email'])", uuid.uuid4())
    keys = await role_keys(pool)
    portal, op, enf = (bearer(keys[r]) for r in ("portal", "operator", "enforcement"))
    portal_id, op_id = keys["portal"].split("_")[1], keys["operator"].split("_")[1]
    async with running_api(settings) as api:
        # Portal keys read owners only through owner tokens, never here: operators do.
        for owner_id in ("own-a", "own-b"):
            r = await api.client.post("/v1/owners/query", headers=op, json={
                "owner_id": owner_id, "purpose": "registry_administration"})
            assert r.status_code == 200
            r = await api.client.post("/v1/owners/query", headers=portal, json={
                "owner_id": owner_id, "purpose": "registry_administration"})
            assert r.status_code == 403
        r = await api.client.get("/v1/hotlist", params={"purpose": "alpr_hit"},
                                 headers=enf)   # nothing flagged: empty
        assert r.status_code == 200 and r.json()["entries"] == []
        r = await api.client.post("/v1/audit/query", headers=op, json={
            "owner_id": "own-a", "purpose": "audit_review"})
        assert r.status_code == 200
        listed = r.json()["entries"]
        r = await api.client.post("/v1/audit/query", headers=op, json={
            "jurisdiction": "CA-QC", "plate": "NONE1", "purpose": "audit_review"})
        assert r.status_code == 200 and r.json()["entries"] == []
        rows = await pool.fetch("SELECT key_id, kind, jurisdiction, plate, owner_id, result,"
                                " purpose FROM audit_log ORDER BY id")
    by_kind: dict[str, list[tuple]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(
            (row["jurisdiction"], row["plate"], row["owner_id"], row["result"]))
    assert sorted(by_kind["owner"], key=repr) == [("CA-ON", "OWN1", "own-a", "valid"),
                                                  ("CA-ON", "OWN2", "own-a", "valid"),
                                                  (None, None, "own-b", "not_found")]
    assert by_kind["owner_notices"] == [("CA-ON", "OWN1", "own-a", "renewal_reminder"),
                                        (None, None, "own-b", "empty")]
    assert by_kind["owner_preferences"] == [(None, None, "own-a", "not_found"),
                                            (None, None, "own-b", "not_found")]
    assert by_kind["hotlist"] == [(None, None, None, "empty")]
    # The audit route itself: one row per query, its filters, however many entries it
    # listed (own-a's 4 rows, then none).
    assert len(listed) == 4
    assert by_kind["audit"] == [(None, None, "own-a", "all_keys"),
                                ("CA-QC", "NONE1", None, "all_keys")]
    assert {r["key_id"] for r in rows if r["kind"] == "audit"} == {op_id}
    assert {r["purpose"] for r in rows if r["kind"] == "audit"} == {"audit_review"}
    assert portal_id not in {r["key_id"] for r in rows}   # refused reads are not audited
    assert len(rows) == 7 + 1 + 2   # owner reads, the empty hotlist, audit queries


async def test_an_owner_setting_preferences_is_audited_like_a_read(settings, pool) -> None:
    _, portal = await create_key(pool, role="portal", name="prefs portal")
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        r = await api.client.post("/v1/owner-sessions", headers=bearer(portal),
                                  json={"owner_id": "own-p"})
        assert r.status_code == 201, r.text
        me = bearer(r.json()["token"])
        r = await api.client.put("/v1/me/preferences", headers=me,
                                 json={"channels": ["email"], "language": "fr"})
        assert r.status_code == 200 and r.json()["language"] == "fr"
    rows = await pool.fetch("SELECT kind, owner_id FROM audit_log WHERE key_id = 'owner'")
    assert [(r["kind"], r["owner_id"]) for r in rows] == [("owner_preferences_update", "own-p")]
