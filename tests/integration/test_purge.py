"""`platereg purge`, with its own role, on a real database: each kind of personal data past
its retention is removed (audit rows, notices' recipients and texts, dead-letter values,
sign-in links, owner sessions), nothing younger, nothing still needed; one purge at a time;
a progress bar on a terminal, quiet otherwise."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pty
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from api_helpers import owner
from cli_support import PLATEREG

from platereg.db import connect, migrate
from platereg.retention import KINDS, PURGE_LOCK_ID
from platereg.security.roles import ensure_roles
from registry.consumer.dlq import replay

pytestmark = pytest.mark.integration

RETENTION = {"audit": 200, "notice": 60, "dead_letter": 30, "sign_in_link": 30,
             "owner_session": 30}


def _ago(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


@pytest.fixture
async def purge_url(database_url: str) -> AsyncIterator[str]:
    """The purge role's login on this test's database, as `platereg roles` makes it."""
    parts = urlsplit(database_url)
    user = f"t{uuid.uuid4().hex[:8]}_purge"
    url = urlunsplit(parts._replace(
        netloc=f"{user}:{secrets.token_urlsafe(12)}@{parts.netloc.rsplit('@', 1)[-1]}"))
    ensure_roles(database_url, {"purge": url})
    yield url
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP ROLE IF EXISTS "{user}"')
    finally:
        await conn.close()


def _purge(purge_url: str, *args: str, **kwargs: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEREG_")}
    env["PLATEREG_PURGE_DATABASE_URL"] = purge_url
    return subprocess.run([PLATEREG, "purge", *args], env=env, capture_output=True, text=True,
                          timeout=120, **kwargs)


async def _seed(conn: asyncpg.Connection) -> dict[str, object]:
    """Rows of every kind: past retention, younger, and past it but still needed."""
    audit = ("INSERT INTO audit_log (at, key_id, kind, jurisdiction, plate, result)"
             " VALUES ($1, 'k1', 'single', 'CA-ON', $2, 'valid')")
    for days, plate in ((300, "OLD"), (199, "YOUNG"), (2, "NEW")):
        await conn.execute(audit, _ago(days), plate)
    notices = {}
    for name, days, state in (("old_sent", 90, "sent"), ("old_pending", 90, "pending"),
                              ("old_paper", 90, "print"), ("young", 10, "sent")):
        notice_id = notices[name] = uuid.uuid4()
        await conn.execute(
            "INSERT INTO notices (notice_id, dedupe_key, kind, plate_key, owner_id, language,"
            " channels, context, recipient, created_at) VALUES ($1, $2, 'renewed',"
            " 'CA-ON/ABC123', 'own-1', 'en', '{email}', $3, $4, $5)",
            notice_id, name, {"expires_on": "2027-01-01"}, owner("own-1"), _ago(days))
        await conn.execute("INSERT INTO notice_dispatch (notice_id, channel, state) VALUES"
                           " ($1, 'email', $2)", notice_id, state)
    dlq = {}
    for name, days, published in (("old", 40, True), ("unpublished", 40, False),
                                  ("young", 5, True)):
        dlq[name] = await conn.fetchval(
            "INSERT INTO dlq_messages (topic, partition, kafka_offset, key, value, reason,"
            " received_at, published_at) VALUES ('plates.events', 0, $1, 'CA-ON/ABC123',"
            " '{\"owner\": {\"email\": \"jane@example.org\"}}', 'schema_invalid', $2, $3)"
            " RETURNING id", len(dlq), _ago(days), _ago(days) if published else None)
    for name, expired_days_ago in (("old", 31), ("recent", 29), ("valid", -14)):
        await conn.execute(
            "INSERT INTO owner_tokens (token_hash, owner_id, created_at, expires_at) VALUES"
            " ($1, 'own-1', $2, $3)", name, _ago(expired_days_ago + 14), _ago(expired_days_ago))
        await conn.execute(
            "INSERT INTO owner_sessions (session_id, owner_id, via, created_at, expires_at)"
            " VALUES ($1, 'own-1', 'portal', $2, $3)", name, _ago(expired_days_ago),
            _ago(expired_days_ago))
    return {"notices": notices, "dlq": dlq}


async def test_purge_removes_each_kind_past_its_retention_only(
        database_url: str, purge_url: str, settings) -> None:
    conn = await connect(database_url)
    try:
        seeded = await _seed(conn)   # audit rows older than 200 days: before it is lowered
        await asyncio.to_thread(migrate, database_url, RETENTION)   # the settings reach the db
        done = await asyncio.to_thread(_purge, purge_url)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""                      # not a terminal: no progress bar
        assert done.stdout.splitlines() == [
            "audit: 1 row(s) past 200 day(s): audit rows (who read which plate or owner "
            "record) are deleted",
            "notice: 1 row(s) past 60 day(s): notices lose their recipient's contact data "
            "and their text's details (once delivered or failed)",
            "dead_letter: 1 row(s) past 30 day(s): rejected messages lose their key and "
            "value (the original bytes)",
            "sign_in_link: 1 row(s) past 30 day(s): expired sign-in links are deleted",
            "owner_session: 1 row(s) past 30 day(s): expired owner sessions are deleted"]
        assert sorted(r[0] for r in await conn.fetch("SELECT plate FROM audit_log")) == [
            "NEW", "YOUNG"]
        notices = {r["notice_id"]: r for r in await conn.fetch(
            "SELECT notice_id, recipient, context, kind, plate_key FROM notices")}
        ids = seeded["notices"]
        assert (notices[ids["old_sent"]]["recipient"], notices[ids["old_sent"]]["context"]) == (
            {}, {})
        assert notices[ids["old_sent"]]["kind"] == "renewed"   # the notice itself stays
        for still in ("old_pending", "old_paper", "young"):   # undelivered, or young
            assert notices[ids[still]]["recipient"]["email"] == "own-1@example.org", still
        dlq = {r["id"]: r for r in await conn.fetch(
            "SELECT id, key, value, purged_at FROM dlq_messages")}
        old = dlq[seeded["dlq"]["old"]]
        assert (old["key"], old["value"]) == (None, None) and old["purged_at"] is not None
        for still in ("unpublished", "young"):
            assert dlq[seeded["dlq"][still]]["value"] is not None, still
        for table, key in (("owner_tokens", "token_hash"), ("owner_sessions", "session_id")):
            assert sorted(r[0] for r in await conn.fetch(f"SELECT {key} FROM {table}")) == [
                "recent", "valid"], table
        # A purged dead letter cannot be replayed (its bytes are gone).
        assert await replay(settings, ids=[seeded["dlq"]["old"]]) == 0
        # Again: nothing left to remove.
        again = await asyncio.to_thread(_purge, purge_url)
        assert [line.split(":")[1] for line in again.stdout.splitlines()] == [
            " 0 row(s) past 200 day(s)", " 0 row(s) past 60 day(s)", " 0 row(s) past 30 day(s)",
            " 0 row(s) past 30 day(s)", " 0 row(s) past 30 day(s)"]
    finally:
        await conn.close()


async def test_one_purge_at_a_time_and_a_progress_bar_on_a_terminal(
        database_url: str, purge_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", PURGE_LOCK_ID)
        busy = await asyncio.to_thread(_purge, purge_url)
        assert busy.returncode == 1 and "another purge is running" in busy.stderr
        await conn.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK_ID)
    finally:
        await conn.close()
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEREG_")}
    env.update(PLATEREG_PURGE_DATABASE_URL=purge_url, TERM="xterm", COLUMNS="100")
    try:
        proc = await asyncio.to_thread(subprocess.run, [PLATEREG, "purge"], env=env,
                                       stdout=subprocess.PIPE, stderr=slave, timeout=120)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    text = shown.decode(errors="replace")
    for kind in KINDS:
        assert kind.name in text, text
    assert "━" in text and "0/0" in text, text      # rich's bar and counts
