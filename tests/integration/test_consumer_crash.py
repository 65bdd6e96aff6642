"""Exactly-once effect under SIGKILL, rebalances and a PostgreSQL outage.

The consumer runs as real ``platereg consume registry`` processes. The checks
are exact: every accepted event is in the history once, every plate equals the
reference fold (tests/integration/consumer_support.py, independent of
schemas.fold), and the stored offsets equal the log ends.

What leaves the registry is counted too. The outboxes (``status_changes``,
``dlq_messages``) are exactly once: one row per change or rejection. Their
relays publish at least once (a row is marked done after the broker's ack, so
a relay killed in between publishes it again), so the topics are checked
after removing repeats: a repeated status message is byte-identical (same row),
a repeated DLQ message has the same original partition and offset.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time

import asyncpg
import httpx
import orjson
import psutil
import pytest

from platereg.kafka import ensure_topics
from platereg.settings import load_settings
from schemas import topics as contract
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
from tests.integration.kafka_support import read_topic
from tests.integration.seam_support import (
    held_partitions,
    listening_ports,
    log_text,
    metric,
    ops_port,
    scrape,
    settled,
    wait_for,
    wait_relayed,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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


def _messages(events: list[dict], bad_every: int) -> list[tuple[bytes, bytes]]:
    """The events encoded, with a malformed message after every ``bad_every`` of them."""
    out = []
    for i, (key, value) in enumerate(encoded(events), 1):
        out.append((key, value))
        if i % bad_every == 0:
            out.append((key, b'{"truncated": '))
    return out


async def _assert_exact(pool: asyncpg.Pool, events: list[dict], settings,
                        ends: dict[int, int], bad: int = 0) -> None:
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
    assert await pool.fetchval("SELECT count(*) FROM dlq_messages") == bad
    assert await pool.fetchval(
        "SELECT count(DISTINCT (partition, kafka_offset)) FROM dlq_messages") == bad


async def _assert_published(pool: asyncpg.Pool, settings, *, repeats_allowed: bool) -> int:
    """The topics against the outboxes; returns how many messages were repeats."""
    await wait_relayed(pool, settings)
    rows = await pool.fetch("SELECT plate_key, view FROM status_changes ORDER BY seq")
    sent = [(r["plate_key"].encode(), orjson.dumps(r["view"])) for r in rows]
    messages = [(m.key, m.value) for m in await read_topic(
        settings, settings.topic(contract.STATUS), timeout=60)]
    # per plate, the messages with repeats removed are its changes in order
    first_seen = list(dict.fromkeys(messages))
    by_key: dict[bytes, list] = {}
    for key, value in first_seen:
        by_key.setdefault(key, []).append(value)
    expected: dict[bytes, list] = {}
    for key, value in sent:
        expected.setdefault(key, []).append(value)
    assert by_key == expected
    last: dict[bytes, bytes] = {}
    for key, value in messages:      # a subscriber ends at the plate's latest view
        last[key] = value
    assert last == {k: v[-1] for k, v in expected.items()}
    dlq_rows = await pool.fetch("SELECT partition, kafka_offset, value FROM dlq_messages")
    dlq = await read_topic(settings, settings.topic(contract.DLQ))
    positions = [(dict(m.headers)[contract.ORIGINAL_PARTITION_HEADER].decode(),
                  dict(m.headers)[contract.ORIGINAL_OFFSET_HEADER].decode(), m.value)
                 for m in dlq]
    assert set(positions) == {(str(r["partition"]), str(r["kafka_offset"]), r["value"])
                              for r in dlq_rows}
    repeats = len(messages) - len(sent) + len(positions) - len(dlq_rows)
    if not repeats_allowed:
        assert repeats == 0
    return repeats


async def test_sigkill_at_random_moments_applies_each_event_exactly_once(
        topics, pool: asyncpg.Pool, tmp_path) -> None:
    events = _workload(11, 50_000, 3_000)
    messages = _messages(events, 1000)
    bad = len(messages) - len(events)
    rng = random.Random(5)
    log = str(tmp_path / "consumer.log")
    proc = start_consumer_process(topics, "--max-records", "2000", log_path=log)
    producer = asyncio.create_task(produce(topics, messages))
    kills = 0

    async def committed() -> int:
        return await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets")

    try:
        while kills < 5:
            # kill this incarnation after a random amount of committed progress
            target = await committed() + rng.randrange(1, 4000)

            async def progressed(proc=proc, target=target) -> bool:
                assert proc.poll() is None, log_text(log)[-3000:]
                return await committed() >= target

            await wait_for(progressed, "the consumer to make progress", timeout=60, every=0.02)
            helpers = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            # its parse worker (and the multiprocessing helpers) must not outlive it
            _, alive = psutil.wait_procs(helpers, timeout=15)
            assert not alive, f"orphaned after kill -9: {[p.pid for p in alive]}"
            resumed_at = await committed()   # where the next incarnation starts
            proc = start_consumer_process(topics, "--max-records", "2000", log_path=log)
        ends = await producer
        await wait_offsets(pool, topics, ends, timeout=180, proc=proc)
        # the last incarnation's metrics: it caught up (lag 0 on every partition)
        port = listening_ports(log_text(log))[-1]

        async def no_lag() -> bool:
            samples = await scrape(port)
            return all(metric(samples, "platereg_consumer_lag", partition=str(p)) == 0
                       for p in range(topics.events_partitions)) and any(
                name == "platereg_consumer_lag" for name, _ in samples)

        await wait_for(no_lag, "the lag gauge to read 0")
        # the last incarnation counted each record it committed once, whatever its outcome
        samples = await scrape(port)
        mine = sum(ends.values()) - resumed_at
        assert sum(metric(samples, "platereg_events_total", outcome=o)
                   for o in ("applied", "duplicate", "rejected")) == mine
        assert metric(samples, "platereg_event_apply_latency_seconds_count") == mine
        repeats = await _assert_published(pool, topics, repeats_allowed=True)
    finally:
        if proc.poll() is None:
            stop_process(proc)
        if not producer.done():
            producer.cancel()
    assert kills >= 5
    # restarts resume at the stored offsets, no spurious reset
    assert "past the log end" not in log_text(log)
    total = await pool.fetchval("SELECT count(*) FROM plate_events")
    assert total < len(events)  # the redeliveries were not stored twice
    await _assert_exact(pool, events, topics, await merge_ends(ends), bad=bad)
    print(f"messages published again after the kills: {repeats}")


def _processed(samples: dict) -> float:
    """The records one consumer process committed, whatever their outcome."""
    return sum(metric(samples, "platereg_events_total", outcome=o)
               for o in ("applied", "duplicate", "rejected", "quarantined"))


async def test_rebalance_with_a_consumer_killed_and_one_joining(
        settings, pool: asyncpg.Pool, tmp_path, monkeypatch) -> None:
    """Three consumer processes over 12 partitions; mid-stream one is SIGKILLed and a
    fourth joins. Besides the exact state: every record is processed once by the group.
    The killed process's share is what it stored for its partitions when it died (read
    before the group's session timeout hands them to the others); the others count theirs.
    A record processed twice (say, a new owner starting before the stored offset) would be
    a duplicate that the duplicate check hides from the state: this sum shows it."""
    monkeypatch.setenv("PLATEREG_EVENTS_PARTITIONS", "12")
    settings = load_settings()
    await ensure_topics(settings)
    events = _workload(12, 24_000, 1_500)
    messages = _messages(events, 500)
    bad = len(messages) - len(events)
    logs = [str(tmp_path / f"consumer{i}.log") for i in range(4)]
    procs = {log: start_consumer_process(settings, "--max-records", "500", log_path=log)
             for log in logs[:3]}
    everyone = set(range(12))
    victim, late = logs[1], logs[3]
    try:
        await wait_for(lambda: settled(logs[:3], everyone), "three consumers to share", 60)
        half = len(messages) // 2
        ends1 = await produce(settings, messages[:half])

        async def busy() -> bool:
            return await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM "
                                       "consumer_offsets") >= half // 2

        await wait_for(busy, "a quarter of the records consumed", 120, every=0.02)
        held = held_partitions(victim)
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        await asyncio.sleep(0.5)      # its last commit, if one was on the way, is in
        killed_share = await pool.fetchval(
            "SELECT sum(next_offset)::bigint FROM consumer_offsets "
            "WHERE partition = ANY($1::int[])",
            sorted(held))
        procs[late] = start_consumer_process(settings, "--max-records", "500", log_path=late)
        ends2 = await produce(settings, messages[half:])
        live = [log for log in logs if log != victim]
        await wait_for(lambda: settled(live, everyone), "the others to take over", 60)
        ends = await merge_ends(ends1, ends2)
        await wait_offsets(pool, settings, ends, timeout=120)
        samples = [await scrape(await ops_port(log)) for log in live]
        repeats = await _assert_published(pool, settings, repeats_allowed=True)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                stop_process(proc)
    for log in live:
        assert procs[log].returncode == 0, log_text(log)[-3000:]
    assert killed_share > 0, "the killed consumer had committed nothing"
    assert sum(_processed(s) for s in samples) + killed_share == len(messages)
    await _assert_exact(pool, events, settings, ends, bad=bad)
    print(f"killed consumer held {sorted(held)}, committed {killed_share} records; "
          f"messages published again: {repeats}")


async def test_postgres_outage_mid_stream_loses_and_doubles_nothing(
        embedded, topics, pool: asyncpg.Pool, tmp_path, monkeypatch) -> None:
    # The default console log format: its tracebacks once took 1-2 s each (rich), and
    # asyncpg logs one per reconnection attempt, so /healthz timed out in the outage.
    events = _workload(13, 15_000, 1_000)
    log = str(tmp_path / "consumer.log")
    proc = start_consumer_process(topics, "--max-records", "500", log_path=log)
    pg = embedded.pg
    try:
        port = await ops_port(log)
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
        accepted = len(unique_first(events))

        async def counted() -> dict | None:   # one process, no kill: its counters are exact
            samples = await scrape(port)
            lags = [metric(samples, "platereg_consumer_lag", partition=str(p))
                    for p in range(topics.events_partitions)]
            done = (metric(samples, "platereg_events_total", outcome="applied") == accepted
                    and not any(lags))
            return samples if done else None

        samples = await wait_for(counted, "the counters to reach the events")
        assert metric(samples, "platereg_events_total", outcome="duplicate") == \
            len(events) - accepted
        assert metric(samples, "platereg_events_total", outcome="rejected") == 0
        # batches retried during the outage are observed once, when they commit
        assert metric(samples, "platereg_event_apply_latency_seconds_count") == len(events)
    finally:
        if not pg.running:
            pg.start()
        if proc.poll() is None:
            assert stop_process(proc) == 0
    await _assert_exact(pool, events, topics, ends)
    with open(log) as f:
        assert "database error; batch will be retried" in f.read()
