"""The foundation's plumbing against the real servers: migrations, topics, settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from cli_support import PLATEREG

from platereg.db import (
    _MIGRATION_LOCK_ID,
    create_database,
    drop_database,
    migrate,
    migrations_path,
)
from platereg.kafka import ensure_topics, topic_partitions

pytestmark = pytest.mark.integration


async def test_each_test_gets_a_migrated_database_of_its_own(pool: asyncpg.Pool) -> None:
    tables = {r["tablename"] for r in await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"plate_events", "plates", "consumer_offsets", "status_changes", "api_keys",
            "audit_log", "dlq_messages"} <= tables
    assert await pool.fetchval("SELECT count(*) FROM plates") == 0
    await pool.execute("INSERT INTO relay_cursors (name) VALUES ('isolation-probe')")


async def test_isolation_probe_from_another_test_is_not_visible(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT count(*) FROM relay_cursors") == 0


@pytest.fixture
async def empty_database(servers) -> AsyncIterator[str]:
    """A new database with no schema at all (not a copy of the migrated template)."""
    name = f"m_{uuid.uuid4().hex[:16]}"
    yield await create_database(servers.admin_dsn, name)
    await drop_database(servers.admin_dsn, name)


def migration_ids() -> list[str]:
    return sorted(p.stem for p in Path(migrations_path()).glob("*.sql"))


async def applied_ids(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["migration_id"] for r in await conn.fetch(
            "SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")]
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def migrations_held(dsn: str) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """Hold the migration lock on ``dsn``; yields ``wait_for(n)``, which returns once ``n``
    other sessions are blocked on it, so they all start migrating at the same moment."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)

        async def wait_for(n: int) -> None:
            deadline = asyncio.get_running_loop().time() + 60
            while await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    "                 WHERE datname = current_database())") < n:
                assert asyncio.get_running_loop().time() < deadline, "migrators never queued"
                await asyncio.sleep(0.05)

        yield wait_for
    finally:
        await conn.close()                 # releases the lock: the waiters race on


async def test_migrate_applies_everything_to_a_fresh_database_then_nothing(
        empty_database: str) -> None:
    assert await asyncio.to_thread(migrate, empty_database) == migration_ids()
    assert await applied_ids(empty_database) == migration_ids()
    assert await asyncio.to_thread(migrate, empty_database) == []


async def test_migrate_from_three_processes_at_once(empty_database: str) -> None:
    env = {**os.environ, "PLATEREG_DATABASE_URL": empty_database}
    async with migrations_held(empty_database) as wait_for:
        procs = [subprocess.Popen([PLATEREG, "migrate"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
        try:
            await wait_for(3)              # all three are inside `platereg migrate`, blocked
        except BaseException:
            for p in procs:
                p.kill()
            raise
    outputs = [await asyncio.to_thread(p.communicate, timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    stdout = sorted(out for out, _ in outputs)
    assert stdout[:2] == ["applied 0 migration(s); the schema is up to date\n"] * 2, outputs
    assert stdout[2] == f"applied {len(migration_ids())} migration(s): " \
                        f"{', '.join(migration_ids())}\n"
    assert await applied_ids(empty_database) == migration_ids()


async def test_threads_migrating_one_fresh_database_apply_once(empty_database: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_database))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    async with migrations_held(empty_database) as wait_for:
        for t in threads:
            t.start()
        await wait_for(3)
    for t in threads:
        await asyncio.to_thread(t.join, 120)
    assert errors == []
    assert sorted(results, key=len) == [[], [], migration_ids()]
    assert await applied_ids(empty_database) == migration_ids()


async def test_topics_are_created_once_with_configured_partitions(settings) -> None:
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(topic_partitions(settings))
    assert await ensure_topics(settings) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap())
    await admin.start()
    try:
        described = await admin.describe_topics(list(topic_partitions(settings)))
    finally:
        await admin.close()
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    assert counts == topic_partitions(settings)
    assert counts[settings.topic("plates.events")] == 4  # from the test settings
