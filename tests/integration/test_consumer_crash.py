"""Exactly-once effect under SIGKILL, rebalances and a PostgreSQL outage.

The consumer runs as real ``platereg consume registry`` processes. The checks
are exact: every accepted event is in the history once, every plate equals the
reference fold (tests/integration/consumer_support.py, independent of
registry.domain), and the stored offsets equal the log ends.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import time

import asyncpg
import httpx
import psutil
import pytest

from tests.integration.consumer_support import (
    encoded,
    merge_ends,
    produce,
    random_events,
    reference_fold,
    start_consumer_process,
    stop_process,
    stored_plates,
    unique_first,
    wait_offsets,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _ops_port(log: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log) as f:
            found = re.search(r"ops server listening.*port=(\d+)", f.read())
        if found:
            return int(found.group(1))
        await asyncio.sleep(0.1)
    raise AssertionError("the consumer did not start its ops server")


async def _wait_ready(port: int, want: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    status = None
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            status = (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code
            if status == want:
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"/readyz stayed {status}, wanted {want}")


def _workload(seed: int, count: int, plates: int) -> list[dict]:
    rng = random.Random(seed)
    keys = [f"US-NY/C{i:05d}" for i in range(plates)]
    events = random_events(rng, keys, count, minutes=20_000)
    # ~1% exact redeliveries, anywhere in the stream
    for _ in range(count // 100):
        events.insert(rng.randrange(len(events)), rng.choice(events))
    return events


async def _assert_exact(pool: asyncpg.Pool, events: list[dict], settings,
                        ends: dict[int, int]) -> None:
    accepted = unique_first(events)
    rows = await pool.fetch("SELECT event_id FROM plate_events")
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(accepted)
    assert set(ids) == {e["id"] for e in accepted}
    assert await stored_plates(pool) == reference_fold(accepted)
    stored = {r["partition"]: r["next_offset"] for r in await pool.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
        settings.consumer_group)}
    assert stored == ends
    assert await pool.fetchval("SELECT count(*) FROM dlq_messages") == 0


async def test_sigkill_at_random_moments_applies_each_event_exactly_once(
        topics, pool: asyncpg.Pool, tmp_path) -> None:
    events = _workload(11, 50_000, 3_000)
    rng = random.Random(5)
    log = str(tmp_path / "consumer.log")
    proc = start_consumer_process(topics, "--max-records", "2000", log_path=log)
    producer = asyncio.create_task(produce(topics, encoded(events)))
    kills = 0
    try:
        while kills < 5:
            # wait until this incarnation has committed something, then kill it mid-stream
            before = await pool.fetchval("SELECT coalesce(sum(next_offset), 0) "
                                         "FROM consumer_offsets")
            deadline = time.monotonic() + 60
            while (await pool.fetchval("SELECT coalesce(sum(next_offset), 0) "
                                       "FROM consumer_offsets")) == before:
                assert proc.poll() is None, open(log).read()[-3000:]
                assert time.monotonic() < deadline, "consumer made no progress"
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.0, 0.8))
            helpers = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            # its parse worker (and the multiprocessing helpers) must not outlive it
            _, alive = psutil.wait_procs(helpers, timeout=15)
            assert not alive, f"orphaned after kill -9: {[p.pid for p in alive]}"
            proc = start_consumer_process(topics, "--max-records", "2000", log_path=log)
        ends = await producer
        await wait_offsets(pool, topics, ends, timeout=180, proc=proc)
    finally:
        if proc.poll() is None:
            stop_process(proc)
        if not producer.done():
            producer.cancel()
    assert kills >= 5
    with open(log) as f:   # restarts resume at the stored offsets, no spurious reset
        assert "past the log end" not in f.read()
    total = await pool.fetchval("SELECT count(*) FROM plate_events")
    assert total < len(events)  # the redeliveries were not stored twice
    await _assert_exact(pool, events, topics, await merge_ends(ends))


async def test_rebalance_with_consumers_leaving_and_joining(topics, pool: asyncpg.Pool,
                                                            tmp_path) -> None:
    events = _workload(12, 20_000, 1_500)
    log = str(tmp_path / "consumers.log")
    first, second = (start_consumer_process(topics, "--max-records", "500", log_path=log)
                     for _ in range(2))
    third = None
    try:
        half = len(events) // 2
        ends1 = await produce(topics, encoded(events[:half]))
        await asyncio.sleep(6)                       # both joined and working
        assert stop_process(first, signal.SIGTERM) == 0   # leaves the group cleanly
        third = start_consumer_process(topics, "--max-records", "500", log_path=log)
        ends2 = await produce(topics, encoded(events[half:]))
        ends = await merge_ends(ends1, ends2)
        await wait_offsets(pool, topics, ends, timeout=120)
    finally:
        for proc in (first, second, third):
            if proc is not None and proc.poll() is None:
                stop_process(proc)
    await _assert_exact(pool, events, topics, ends)
    with open(log) as f:
        text = f.read()
    assert "partitions assigned" in text


async def test_postgres_outage_mid_stream_loses_and_doubles_nothing(
        embedded, topics, pool: asyncpg.Pool, tmp_path) -> None:
    events = _workload(13, 15_000, 1_000)
    log = str(tmp_path / "consumer.log")
    proc = start_consumer_process(topics, "--max-records", "500", log_path=log)
    pg = embedded.pg
    try:
        port = await _ops_port(log)
        await _wait_ready(port, 200)
        ends1 = await produce(topics, encoded(events[:5_000]))
        await wait_offsets(pool, topics, {p: 1 for p in ends1}, timeout=60, proc=proc,
                           at_least=True)
        await pool.expire_connections()
        pg.stop()                                   # the database goes away mid-stream
        try:
            ends2 = await produce(topics, encoded(events[5_000:]))
            await _wait_ready(port, 503)            # the consumer retries meanwhile
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            assert proc.poll() is None, "the consumer died during the outage"
        finally:
            pg.start()                              # same port, same data
            await pool.expire_connections()
        ends = await merge_ends(ends1, ends2)
        await wait_offsets(pool, topics, ends, timeout=120, proc=proc)
        await _wait_ready(port, 200)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        assert 'platereg_events_total{outcome="applied"' in text
        assert "platereg_consumer_lag{partition=" in text
        assert "platereg_event_apply_latency_seconds_count" in text
    finally:
        if not pg.running:
            pg.start()
        if proc.poll() is None:
            assert stop_process(proc) == 0
    await _assert_exact(pool, events, topics, ends)
    with open(log) as f:
        assert "database error; batch will be retried" in f.read()
