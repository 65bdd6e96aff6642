"""Offsets as a fence: a consumer frozen in the middle of a batch loses its partitions,
another consumer applies them, and the frozen one's stale batch is refused when it
wakes up.

Consumer A's parse worker is stopped (SIGSTOP) so that A holds fetched records
it cannot apply yet; then A itself is stopped, misses its heartbeats and is
dropped from the group; B takes A's partitions over and applies everything from
the stored offsets. A is then woken (SIGCONT): its batch must not be applied a
second time. Every wait is on a condition (logs, stored offsets, metrics).
"""

from __future__ import annotations

import random
import re
import signal

import asyncpg
import orjson
import psutil
import pytest

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
    wait_offsets,
)
from tests.integration.kafka_support import read_topic
from tests.integration.seam_support import (
    held_partitions,
    log_text,
    metric,
    ops_port,
    scrape,
    settled,
    wait_for,
    wait_relayed,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def signal_tree(proc: psutil.Process, sig: int, children_only: bool = False) -> None:
    for p in proc.children(recursive=True) + ([] if children_only else [proc]):
        p.send_signal(sig)


async def test_a_consumer_frozen_mid_batch_is_fenced_after_losing_its_partitions(
        topics, pool: asyncpg.Pool, tmp_path) -> None:
    rng = random.Random(77)
    keys = [f"CA-MB/F{i:03d}" for i in range(200)]
    events = random_events(rng, keys, 3000)
    logs = [str(tmp_path / "a.log"), str(tmp_path / "b.log")]
    a, b = (start_consumer_process(topics, "--max-records", "200", log_path=path)
            for path in logs)
    a_tree = psutil.Process(a.pid)
    try:
        ports = [await ops_port(path) for path in logs]

        # settled: a stale assignment line of A's beside B's new one would make A's
        # partitions look like all four, and A could fetch a batch mid-rebalance and wait
        # on it before it ever sets its lag gauge
        await wait_for(lambda: settled(logs, set(range(4))),
                       "both consumers to hold partitions")
        a_parts = held_partitions(logs[0])
        # A's parse worker freezes: A fetches its records but cannot apply them.
        # Only once A says its worker is ready: the worker itself is frozen, not a process
        # still starting it (a worker started after the freeze would apply A's records),
        # and no start of it is half done (A would wait for the frozen worker's first
        # answer before it even counts the records it fetched)
        await wait_for(lambda: "parse workers ready" in log_text(logs[0]),
                       "A's parse worker")
        signal_tree(a_tree, signal.SIGSTOP, children_only=True)
        ends = await produce(topics, encoded(events[:2000]))

        async def a_holds_a_batch() -> bool:
            lag = await scrape(ports[0])
            # any of its partitions: a fetch response need not hold every partition, and
            # A then waits on its frozen worker
            return any(metric(lag, "platereg_consumer_lag", partition=str(p)) > 0
                       for p in a_parts if ends.get(p))

        await wait_for(a_holds_a_batch, "A to fetch records it cannot apply")
        b_parts_ends = {p: o for p, o in ends.items() if p not in a_parts}
        await wait_offsets(pool, topics, b_parts_ends, at_least=True, proc=b)
        a_stored = await _stored(pool, topics, a_parts)
        assert all(a_stored.get(p, 0) < ends[p] for p in a_parts if ends.get(p))
        # A freezes entirely; B takes its partitions over and applies A's records
        a.send_signal(signal.SIGSTOP)
        await wait_for(lambda: held_partitions(logs[1]) == set(range(4)),
                       "B to take A's partitions", timeout=90)
        await wait_offsets(pool, topics, ends, proc=b)
        # A wakes up with its stale batch: the worker first, so the parsed batch is
        # waiting for A when A wakes
        signal_tree(a_tree, signal.SIGCONT, children_only=True)
        await wait_for(lambda: all(p.status() != psutil.STATUS_STOPPED
                                   for p in a_tree.children(recursive=True)),
                       "A's worker to run again")
        a.send_signal(signal.SIGCONT)
        await wait_for(lambda: re.search(r"batch fenced|batch dropped", log_text(logs[0])),
                       "A to refuse its stale batch")
        ends = await merge_ends(ends, await produce(topics, encoded(events[2000:])))
        await wait_offsets(pool, topics, ends, proc=b)
        await wait_relayed(pool, topics)
        samples = [await scrape(port) for port in ports]
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                with_cont = psutil.Process(proc.pid)
                signal_tree(with_cont, signal.SIGCONT)
                stop_process(proc)
    # Applied exactly once, by the database and by the two processes' counters
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == len(events)
    assert await stored_plates(pool) == reference_fold(events)
    applied = sum(metric(s, "platereg_events_total", outcome="applied") for s in samples)
    assert applied == len(events)
    assert sum(metric(s, "platereg_events_total", outcome="duplicate") for s in samples) == 0
    # ... and every status change published once
    rows = await pool.fetch("SELECT plate_key, view FROM status_changes ORDER BY seq")
    messages = await read_topic(topics, topics.topic(contract.STATUS))
    assert sorted((m.key, m.value) for m in messages) == sorted(
        (r["plate_key"].encode(), orjson.dumps(r["view"])) for r in rows)
    text = log_text(logs[0])
    print("A refused its stale batch by:",
          "fence" if "batch fenced" in text else "reassignment")


async def _stored(pool: asyncpg.Pool, settings, parts: set[int]) -> dict[int, int]:
    rows = await pool.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 "
        "AND partition = ANY($2::int[])", settings.consumer_group, list(parts))
    return {r["partition"]: r["next_offset"] for r in rows}




async def test_a_batch_started_at_offsets_another_consumer_moved_is_refused(
        topics, pool: asyncpg.Pool) -> None:
    """The fence itself, deterministically: a batch whose start offsets are no longer the
    stored ones raises ``Fenced`` and writes nothing (its transaction rolls back)."""
    import datetime as dt

    from platereg.kafka import Record
    from registry.consumer.apply import Fenced, apply_batch
    from registry.consumer.batch import parse_values
    from registry.consumer.store import SqlStore
    from tests.integration.consumer_support import consumer_running
    from wiring.cli import batch_hook

    events = random_events(random.Random(3), [f"CA-MB/G{i}" for i in range(5)], 40)
    async with consumer_running(topics):
        ends = await produce(topics, encoded(events))
        await wait_offsets(pool, topics, ends)
    part = max(ends, key=lambda p: ends[p])
    before = await pool.fetchval("SELECT count(*) FROM plate_events")
    # new events (not duplicates): without the fence they would be written
    stale = random_events(random.Random(4), ["CA-MB/NEW1"], 3)
    now = dt.datetime.now(dt.UTC)
    sign = topics.signer().headers
    records = [Record(None, value, part, i, tuple(sign(value)))
               for i, value in enumerate(orjson.dumps(ev) for ev in stale)]
    parsed = parse_values(records, now)
    with pytest.raises(Fenced) as fenced:
        async with pool.acquire() as conn, conn.transaction():
            await apply_batch(SqlStore(conn, hook=batch_hook()), group=topics.consumer_group,
                              topic=topics.topic(contract.EVENTS), expected={part: 0},
                              next_offsets={part: 3}, parsed=parsed, messages=records,
                              tz=topics.tz, now=now)
    assert fenced.value.stored == {part: ends[part]}
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == before
    assert not await pool.fetchval("SELECT count(*) FROM plates WHERE plate_key = 'CA-MB/NEW1'")
    assert await _stored(pool, topics, {part}) == {part: ends[part]}
