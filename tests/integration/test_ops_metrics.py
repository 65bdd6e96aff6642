"""Metrics the alert rules need, moved by the real behaviour: the audit backlog gauge
follows the rows waiting for PostgreSQL, the expiry sweep's last-run time follows
committed sweeps, and 401/403 answers count by reason."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import asyncpg
import pytest
from api_helpers import bearer, insert_plate, role_keys, running_api
from prometheus_client import REGISTRY

from platereg.security.keys import create_key, revoke_key
from registry.api.audit import AuditUnavailable, AuditWriter
from registry.consumer.expiry import sweep

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} is not exported"
    return value


async def test_audit_backlog_counts_rows_until_postgresql_has_them(pool,
                                                                   database_url: str) -> None:
    base = sample("platereg_audit_backlog")
    writer = AuditWriter(pool)
    writer.start()
    now = dt.datetime.now(dt.UTC)
    locker = await asyncpg.connect(database_url)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        reads = [asyncio.create_task(writer.write(
                     [(now, "k1", "single", "CA-ON", "AUD1", "testing", "valid")])),
                 asyncio.create_task(writer.write(
                     [(now, "k1", "batch", "CA-ON", f"AUD{i}", "testing", "valid")
                      for i in range(4)]))]
        await asyncio.sleep(0.2)          # waiting for the lock
        assert sample("platereg_audit_backlog") == base + 5
        await tx.rollback()
        await asyncio.gather(*reads)
    finally:
        await locker.close()
        await writer.stop()
    assert sample("platereg_audit_backlog") == base
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 5


async def test_audit_rows_postgresql_refused_leave_the_backlog_with_their_reads(pool) -> None:
    base = sample("platereg_audit_backlog")
    failures = REGISTRY.get_sample_value("platereg_audit_write_failures_total",
                                         {"error": "UndefinedTableError"}) or 0.0
    writer = AuditWriter(pool)
    writer.start()
    await pool.execute("ALTER TABLE audit_log RENAME TO audit_log_away")
    try:
        with pytest.raises(AuditUnavailable):
            await writer.write([(dt.datetime.now(dt.UTC), "k1", "single", "CA-ON", "AUD1",
                                 "testing", "valid")])
        assert sample("platereg_audit_backlog") == base   # the read failed: nothing waits
        assert sample("platereg_audit_write_failures_total",
                      error="UndefinedTableError") == failures + 1
    finally:
        await pool.execute("ALTER TABLE audit_log_away RENAME TO audit_log")
        await writer.stop()


async def test_expiry_sweep_sets_its_last_run_time_when_committed(pool) -> None:
    await insert_plate(pool, "CA-ON", "EXP1", expires_on=dt.date(2020, 1, 1))
    before = time.time()
    async with pool.acquire() as conn:
        assert await sweep(conn, dt.UTC) == 1
    first = sample("platereg_expiry_sweep_last_run_timestamp_seconds")
    assert before <= first <= time.time()
    async with pool.acquire() as conn:   # nothing left to record: still a completed run
        assert await sweep(conn, dt.UTC) == 0
    assert sample("platereg_expiry_sweep_last_run_timestamp_seconds") >= first


async def test_auth_failures_count_by_reason(settings, pool) -> None:
    keys = await role_keys(pool)
    revoked_id, revoked = await create_key(pool, role="enforcement", name="gone")
    await revoke_key(pool, revoked_id)
    known_id = keys["enforcement"].split("_")[1]
    wrong_secret = f"prk_{known_id}_{'A' * len(keys['enforcement'].split('_', 2)[2])}"
    reasons = ("missing", "unknown_key", "revoked", "forbidden")
    before = {r: sample("platereg_auth_failures_total", reason=r) for r in reasons}
    async with running_api(settings) as api:
        calls = [({}, "missing"), ({"Authorization": "Basic abc"}, "missing"),
                 (bearer("not-a-key"), "unknown_key"), (bearer(wrong_secret), "unknown_key"),
                 (bearer(revoked), "revoked"), (bearer(keys["portal"]), "forbidden")]
        for headers, _ in calls:
            r = await api.client.get("/v1/hotlist", params={"purpose": "testing"},
                                     headers=headers)
            assert r.status_code in (401, 403), r.text
        ok = await api.client.get("/v1/hotlist", params={"purpose": "testing"},
                                  headers=bearer(keys["enforcement"]))
        assert ok.status_code == 200
    after = {r: sample("platereg_auth_failures_total", reason=r) for r in reasons}
    expected = {r: sum(1 for _, why in calls if why == r) for r in reasons}
    assert {r: after[r] - before[r] for r in reasons} == expected
