"""PostgreSQL failing as it does in production, under a running consumer and API.

Each test has its own durable server (``EmbeddedPostgres(durable=True)``: ``fsync``,
``synchronous_commit`` and ``full_page_writes`` on, as in production; the session's
server runs without them), and events keep flowing from the real broker meanwhile.

* SIGKILL of the whole server (postmaster and backends) while the consumer has a
  batch's write transaction open, then a restart (crash recovery from the WAL), several
  times: every event applied once (the reference fold of consumer_support), the stored
  offsets at the log ends, no event stored past its offset, no offset moved back, and the
  consumer never restarted.
* A full disk under the data directory (a filesystem of a few dozen megabytes the test
  mounts, filled with a file): the consumer waits (its batches retried, never lost), the
  registry API answers 503, never 500, then both resume when the file is removed, and
  nothing is lost: the same exact checks, and every answered read audited once.

Each prints a ``crash figures`` line (events, kills, restarts, violations).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from api_helpers import bearer, running_api

from devtools.embedded import EmbeddedPostgres
from platereg.db import create_pool, migrate
from platereg.security import producer_store
from platereg.security.keys import create_key
from platereg.settings import Settings, load_settings
from schemas import topics as contract
from tests.integration.consumer_support import (
    TEST_PRODUCER,
    TEST_PRODUCER_SECRET,
    encoded,
    produce,
    random_events,
    reference_fold,
    start_consumer_process,
    stop_process,
    stored_plates,
    unique_first,
)
from tests.integration.crash_support import (
    backward_moves,
    figures,
    stored_offsets,
    uncovered_events,
    watch_offsets,
)
from tests.integration.seam_support import log_text, ops_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The consumer's write statements (its batch transaction), as pg_stat_activity shows them.
BATCH_QUERY = r"(plate_events|INTO plates|status_changes|consumer_offsets|INTO notices)"


def workload(seed: int, count: int, plates: int) -> list[dict]:
    rng = random.Random(seed)
    events = random_events(rng, [f"CA-PE/X{i:04d}" for i in range(plates)], count,
                           minutes=20_000)
    for _ in range(count // 100):           # ~1% exact redeliveries
        events.insert(rng.randrange(len(events)), rng.choice(events))
    return events


@contextlib.asynccontextmanager
async def own_server(base: Path, monkeypatch: pytest.MonkeyPatch,
                     **config: str) -> AsyncIterator[tuple[EmbeddedPostgres, Settings]]:
    """A durable PostgreSQL of this test, migrated; the settings (and PLATEREG_DATABASE_URL,
    for the child processes) point at it."""
    pg = EmbeddedPostgres(base, durable=True, config=config)
    dsn = pg.start()
    try:
        await asyncio.to_thread(migrate, dsn)
        conn = await asyncpg.connect(dsn)
        try:   # the tests' signed producer, as in the suite's template database
            await producer_store.add(conn, TEST_PRODUCER, ["/"], TEST_PRODUCER_SECRET)
        finally:
            await conn.close()
        monkeypatch.setenv("PLATEREG_DATABASE_URL", dsn)
        yield pg, load_settings()
    finally:
        pg.stop()


async def fetchval(dsn: str, sql: str, *args: object) -> object:
    """One query on a connection of its own (the server may have crashed since the last)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def exact(settings: Settings, events: list[dict], ends: dict[int, int]) -> dict:
    """The exactness checks on the test's server; returns the violations by kind."""
    pool = await create_pool(settings.dsn(), min_size=1, max_size=2)
    try:
        accepted = unique_first(events)
        ids = [r[0] for r in await pool.fetch("SELECT event_id FROM plate_events")]
        plates = await stored_plates(pool)
        expected = reference_fold(accepted)
        return {
            "events_missing_or_doubled": len({e["id"] for e in accepted} ^ set(ids))
            + len(ids) - len(set(ids)),
            "plates_not_the_reference_fold": sum(
                1 for k in expected.keys() | plates.keys() if plates.get(k) != expected.get(k)),
            "offsets_not_at_log_ends": int(await stored_offsets(pool, settings) != ends),
            "events_past_their_offset": await uncovered_events(pool, settings),
            "offsets_moved_back": await backward_moves(pool),
            "dead_letters": await pool.fetchval("SELECT count(*) FROM dlq_messages"),
        }
    finally:
        await pool.close()


async def wait_caught_up(settings: Settings, ends: dict[int, int], proc: subprocess.Popen,
                         log: str, timeout: float = 180) -> None:
    async def done() -> bool:
        assert proc.poll() is None, log_text(log)[-3000:]
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            pool = await asyncpg.connect(settings.dsn(), timeout=5)
            try:
                rows = await pool.fetch(
                    "SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1",
                    settings.topic(contract.EVENTS))
            finally:
                await pool.close()
            return {r[0]: r[1] for r in rows} == ends
        return False

    await wait_for(done, "the consumer to reach the log ends", timeout, every=0.2)


# --------------------------------------------------------------------------- SIGKILL

KILLS = 3


async def test_postgres_sigkilled_mid_batch_with_fsync_on_loses_and_doubles_nothing(
        topics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    seed = int(os.environ.get("CRASH_SEED", "1"))
    rng = random.Random(seed)
    events = workload(seed, 12_000, 800)
    async with own_server(tmp_path / "pg", monkeypatch) as (pg, settings):
        dsn = settings.dsn()
        assert await fetchval(dsn, "SHOW fsync") == "on"
        assert await fetchval(dsn, "SHOW synchronous_commit") == "on"
        boot = await create_pool(dsn, min_size=1, max_size=1)
        await watch_offsets(boot)
        await boot.close()
        log = str(tmp_path / "consumer.log")
        proc = start_consumer_process(settings, "--max-records", "300", log_path=log)
        producer = asyncio.create_task(produce(settings, encoded(events)))
        kills = in_batch = 0
        try:
            while kills < KILLS:
                target = int(await fetchval(dsn, "SELECT coalesce(sum(next_offset), 0)"
                                                 " FROM consumer_offsets")) + rng.randrange(
                    500, 3000)

                async def progressed(target=target) -> bool:
                    assert proc.poll() is None, log_text(log)[-3000:]
                    return int(await fetchval(dsn, "SELECT coalesce(sum(next_offset), 0)"
                                                   " FROM consumer_offsets")) >= target

                await wait_for(progressed, "the consumer to make progress", 90, every=0.05)
                conn = await asyncpg.connect(dsn)
                try:   # the moment a batch's write transaction is open
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and not await conn.fetchval(
                            "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT"
                            " NULL AND pid <> pg_backend_pid() AND query ~ $1", BATCH_QUERY):
                        pass
                    in_batch += time.monotonic() < deadline
                finally:
                    pg.crash()
                    kills += 1
                    with contextlib.suppress(Exception):
                        conn.terminate()
                pg.start()                          # crash recovery; the consumer retries
                assert proc.poll() is None, "the consumer died with the database"
            ends = await producer
            await wait_caught_up(settings, ends, proc, log)
        finally:
            if not producer.done():
                producer.cancel()
            if proc.poll() is None:
                assert stop_process(proc) == 0
        violations = await exact(settings, events, ends)
    assert "database error; batch will be retried" in log_text(log)
    assert not any(violations.values()), violations
    assert in_batch >= 1, "no kill found a batch transaction open"
    figures("postgres_sigkill", seed=seed, events=len(events),
            accepted=len(unique_first(events)), kills=kills, kills_in_batch=in_batch,
            postgres_restarts=kills, consumer_restarts=0,
            violations=sum(violations.values()),
            seconds=round(time.monotonic() - started))


# --------------------------------------------------------------------------- full disk

FILESYSTEM_MB = 160


@contextlib.contextmanager
def small_filesystem(where: Path, megabytes: int) -> Iterator[Path]:
    """A filesystem of ``megabytes`` mounted at ``where`` (tmpfs with ``size=``, else a
    loop-mounted ext4 image); skips without the privilege to mount, fails under CI."""
    where.mkdir(parents=True)
    attempts = [["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755", "tmpfs",
                 str(where)]]
    image = where.parent / "disk.img"
    attempts.append(["sh", "-c", f"truncate -s {megabytes}M {image} && mkfs.ext4 -q -F "
                                 f"{image} && mount -o loop {image} {where}"])
    errors = []
    for command in attempts:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            break
        errors.append(f"{command[0]}: {done.stderr.strip()}")
    else:
        message = ("cannot mount a small filesystem for the full-disk test (needs root "
                   "with CAP_SYS_ADMIN): " + "; ".join(errors))
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        image.unlink(missing_ok=True)


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the filesystem is full; the bytes written."""
    chunk = b"\0" * (1 << 20)
    written = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        with contextlib.suppress(OSError):
            while True:
                written += f.write(b"\0" * 4096)
    return written


async def test_a_full_disk_under_postgres_is_waited_out_and_loses_nothing(
        topics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    seed = int(os.environ.get("CRASH_SEED", "1"))
    events = workload(seed + 100, 6_000, 400)
    half = len(events) // 2
    with small_filesystem(tmp_path / "disk", FILESYSTEM_MB) as disk:
        async with own_server(disk / "pg", monkeypatch, max_wal_size="48MB",
                              min_wal_size="32MB") as (pg, settings):
            dsn = settings.dsn()
            boot = await create_pool(dsn, min_size=1, max_size=1)
            await watch_offsets(boot)
            _, key = await create_key(boot, role="enforcement", name="disk test")
            _, portal = await create_key(boot, role="portal", name="disk portal")
            await boot.close()
            log = str(tmp_path / "consumer.log")
            proc = start_consumer_process(settings, "--max-records", "300", log_path=log)
            statuses: list[int] = []
            pg_crashed = False
            try:
                port = await ops_port(log)
                ends1 = await produce(settings, encoded(events[:half]))
                await wait_caught_up(settings, ends1, proc, log)
                async with running_api(settings, audit_max_pending=40,
                                       audit_ready_lag_seconds=1.0,
                                       owner_token_keys=["k" * 40]) as api:
                    async def lookup() -> int:
                        r = await api.client.post(
                            "/v1/plates/query", headers=bearer(key),
                            json={"jurisdiction": "CA-PE", "plate": "X0001",
                                  "purpose": "traffic_stop"})
                        statuses.append(r.status_code)
                        return r.status_code

                    assert await lookup() in (200, 404)

                    async def mint() -> int:   # a write: its first row needs a new page
                        r = await api.client.post("/v1/owner-sessions", headers=bearer(portal),
                                                  json={"owner_id": "own-disk"})
                        statuses.append(r.status_code)
                        return r.status_code
                    filler = disk / "filler"
                    filled = await asyncio.to_thread(fill, filler)
                    ends2 = await produce(settings, encoded(events[half:]))
                    async with httpx.AsyncClient() as ops:
                        async def consumer_waiting() -> bool:
                            assert proc.poll() is None, log_text(log)[-3000:]
                            ready = await ops.get(f"http://127.0.0.1:{port}/readyz")
                            return ready.status_code == 503

                        await wait_for(consumer_waiting, "the consumer to wait for the disk")

                        async def refused() -> bool:
                            return await lookup() == 503

                        await wait_for(refused, "the API to refuse unaudited reads", 60, 0.05)
                        async def unready() -> bool:
                            return (await api.client.get("/readyz")).status_code == 503

                        await wait_for(unready, "the API's /readyz to say 503", 30)
                        write_refused = await mint()
                        assert proc.poll() is None
                        pg_crashed = not pg.running
                        filler.unlink()              # the operator frees the disk
                        if pg_crashed:
                            pg.start()               # as its supervisor would

                        async def recovered() -> bool:
                            return await lookup() in (200, 404) and (
                                await api.client.get("/readyz")).status_code == 200

                        await wait_for(recovered, "the API to answer again", 90, 0.2)
                        assert await mint() == 201
                        ends = {p: max(ends1.get(p, 0), ends2.get(p, 0))
                                for p in {*ends1, *ends2}}
                        await wait_caught_up(settings, ends, proc, log)
                        assert (await ops.get(f"http://127.0.0.1:{port}/readyz")
                                ).status_code == 200
            finally:
                if proc.poll() is None:
                    assert stop_process(proc) == 0
            violations = await exact(settings, events, ends)
            audited = await fetchval(dsn, "SELECT count(*) FROM audit_log")
    answered = sum(1 for s in statuses if s in (200, 201, 404))
    assert 500 not in statuses, statuses
    assert write_refused == 503
    assert audited == answered, (audited, answered)      # every answered read, once
    assert not any(violations.values()), violations
    assert "database error; batch will be retried" in log_text(log)
    figures("disk_full", seed=seed, events=len(events), filesystem_mb=FILESYSTEM_MB,
            filler_mb=filled >> 20, lookups=len(statuses), answered=answered,
            refused_503=statuses.count(503), answered_500=statuses.count(500),
            postgres_crashed=pg_crashed, consumer_restarts=0,
            violations=sum(violations.values()) + statuses.count(500),
            seconds=round(time.monotonic() - started))
