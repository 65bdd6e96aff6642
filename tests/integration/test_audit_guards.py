"""The audit trail guarded by the database itself (migration 0021), through the real roles:
no row younger than the retention can be deleted by anyone, an inserted row's time must be
near the database's clock, and an audit query is audited as one row."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from api_helpers import bearer, insert_plate, pq, role_keys, running_api

from platereg.db import migrate
from platereg.retention import KINDS
from platereg.security.roles import ensure_roles
from registry.api.audit import insert_rows

pytestmark = pytest.mark.integration

INSERT = ("INSERT INTO audit_log (at, key_id, kind, jurisdiction, plate, purpose, result)"
          " VALUES ($1, 'k1', 'single', 'CA-ON', $2, 'testing', 'valid')")
YOUNG = "is append-only: DELETE of a row younger than the retention"


def _login(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{secrets.token_urlsafe(12)}@{host}"))


@pytest.fixture
async def roles(database_url: str) -> AsyncIterator[dict[str, str]]:
    """Logins of the purge and registry API roles on this test's database."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    urls = {name: _login(database_url, f"{prefix}_{name}") for name in ("purge", "registry_api")}
    ensure_roles(database_url, urls)
    yield urls
    conn = await asyncpg.connect(database_url)
    try:
        for url in urls.values():
            await conn.execute(f'DROP ROLE IF EXISTS "{urlsplit(url).username}"')
    finally:
        await conn.close()


def _days(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


async def _set_audit_retention(database_url: str, days: int) -> None:
    """As `platereg migrate` does it: the schema's owner writes the settings."""
    retention = {k.name: 30 for k in KINDS} | {"audit": days}
    await asyncio.to_thread(migrate, database_url, retention)


async def test_no_role_deletes_a_row_younger_than_the_retention(database_url: str,
                                                                roles: dict[str, str]) -> None:
    owner = await asyncpg.connect(database_url)   # the schema's owner (here a superuser)
    purge = await asyncpg.connect(roles["purge"])
    try:
        await owner.execute(INSERT, _days(2), "TWO")
        await owner.execute(INSERT, _days(300), "THREE100")
        # Retention 365 days: neither row may go, not even a 300-day-old one, by anyone.
        for conn in (purge, owner):
            for statement in ("DELETE FROM audit_log WHERE plate = 'TWO'",
                              "DELETE FROM audit_log WHERE plate = 'THREE100'",
                              "DELETE FROM audit_log"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match=YOUNG):
                    await conn.execute(statement)
        # The owner lowers the retention (the setting, through `platereg migrate`): the
        # 300-day-old row may go, the 2-day-old one still not.
        await _set_audit_retention(database_url, 200)
        assert await purge.execute("DELETE FROM audit_log WHERE plate = 'THREE100'") == "DELETE 1"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=YOUNG):
            await purge.execute("DELETE FROM audit_log WHERE plate = 'TWO'")
        # The purge role has the DELETE grant: the trigger is what guards. Without it...
        await owner.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_delete_checked")
        assert await purge.execute("DELETE FROM audit_log WHERE plate = 'TWO'") == "DELETE 1"
    finally:
        await purge.close()
        await owner.close()


async def test_an_inserted_row_time_must_be_near_the_database_clock(
        database_url: str, roles: dict[str, str]) -> None:
    api = await asyncpg.connect(roles["registry_api"])
    owner = await asyncpg.connect(database_url)
    try:
        now = dt.datetime.now(dt.UTC)
        for at in (_days(400), now + dt.timedelta(minutes=10), _days(366)):
            with pytest.raises(asyncpg.CheckViolationError, match="row time .* refused"):
                await api.execute(INSERT, at, "BAD")
            with pytest.raises(asyncpg.CheckViolationError):   # the API writer's copy
                await insert_rows(api, [(
                    at, "k1", "single", None, None, None, "valid", None, None, None)])
            with pytest.raises(asyncpg.CheckViolationError):   # COPY too
                await api.copy_records_to_table(
                    "audit_log", columns=("at", "key_id", "kind", "result"),
                    records=[(now, "k1", "single", "valid"), (at, "k1", "single", "valid")])
        # Now, a few seconds ahead (another host's clock), or late (a row written by another
        # tool, or stamped long before its insert): kept.
        for at in (now, now + dt.timedelta(seconds=30), _days(2), _days(364)):
            await api.execute(INSERT, at, "OK")
        assert await owner.fetchval("SELECT count(*) FROM audit_log") == 4
        # The superuser is held to it too; without the trigger, the 400-day-old row goes in.
        with pytest.raises(asyncpg.CheckViolationError):
            await owner.execute(INSERT, _days(400), "BAD")
        await owner.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_time_checked")
        await api.execute(INSERT, _days(400), "OLD")
        assert await owner.fetchval("SELECT count(*) FROM audit_log") == 5
    finally:
        await owner.close()
        await api.close()


async def test_an_audit_query_is_audited_as_one_row(settings, pool) -> None:
    """Reviewing a plate's trail adds one row to it per query, never one per entry listed:
    an auditor polling a plate grows its trail by one row a poll."""
    await insert_plate(pool, "CA-ON", "TRAIL1")
    keys = await role_keys(pool)
    enf, op = bearer(keys["enforcement"]), bearer(keys["operator"])
    review = {"jurisdiction": "CA-ON", "plate": "TRAIL1", "purpose": "audit_review",
              "case_ref": "AR-1", "since": "2020-01-01T00:00:00Z"}
    async with running_api(settings) as api:
        for _ in range(5):
            r = await api.client.post("/v1/plates/query", headers=enf, json=pq("CA-ON", "TRAIL1"))
            assert r.status_code == 200
        listed = []
        for _ in range(4):
            r = await api.client.post("/v1/audit/query", headers=op, json=review)
            assert r.status_code == 200
            assert r.headers["cache-control"] == "no-store"
            listed.append(len(r.json()["entries"]))
        r = await api.client.post("/v1/audit/query", headers=op, json={
            "key_id": keys["enforcement"].split("_")[1], "purpose": "audit_review"})
        assert r.status_code == 200 and len(r.json()["entries"]) == 5
    assert listed == [5, 6, 7, 8]            # each poll lists one row more: the previous poll
    rows = await pool.fetch("SELECT jurisdiction, plate, owner_id, result, case_ref, as_at,"
                            " key_id FROM audit_log WHERE kind = 'audit' ORDER BY id")
    assert len(rows) == 5
    op_id = keys["operator"].split("_")[1]
    assert {r["key_id"] for r in rows} == {op_id}
    assert [tuple(r.values())[:5] for r in rows[:4]] == [
        ("CA-ON", "TRAIL1", None, "all_keys", "AR-1")] * 4
    assert rows[0]["as_at"] == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)   # `since`
    assert (rows[4]["plate"], rows[4]["result"]) == (
        None, f"key_id={keys['enforcement'].split('_')[1]}")
