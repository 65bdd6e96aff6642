"""The foundation's plumbing against the real servers: migrations, topics, settings."""

from __future__ import annotations

import subprocess
import sys
import threading

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from platereg.db import migrate
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


def test_migrate_is_idempotent_and_safe_concurrently(servers, database_url: str) -> None:
    # The template is already migrated: a second run applies nothing.
    assert migrate(database_url) == []


async def test_migrate_from_two_processes_at_once(servers) -> None:
    conn = await asyncpg.connect(servers.admin_dsn)
    await conn.execute('CREATE DATABASE "concurrent_migrate"')
    await conn.close()
    dsn = servers.dsn_for("concurrent_migrate")
    try:
        env = {"PLATEREG_DATABASE_URL": dsn}
        import os

        procs = [subprocess.Popen([sys.executable, "-m", "platereg.cli", "migrate"],
                                  env={**os.environ, **env}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
        assert sum("0001_initial" in out for out, _ in outputs) == 1
        conn = await asyncpg.connect(dsn)
        from pathlib import Path

        from platereg.db import migrations_path

        files = sorted(Path(migrations_path()).glob("*.sql"))
        assert await conn.fetchval("SELECT count(*) FROM _yoyo_migration") == len(files)
        await conn.close()
    finally:
        conn = await asyncpg.connect(servers.admin_dsn)
        await conn.execute('DROP DATABASE IF EXISTS "concurrent_migrate" WITH (FORCE)')
        await conn.close()


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


def test_threads_migrating_one_database_apply_once(servers, database_url: str) -> None:
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(migrate(database_url)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[], [], []]
