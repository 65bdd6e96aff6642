"""Stored offsets: committed with the batch's state, and only ever forward.

* A consumer killed (SIGKILL, by the ``offsets.store`` crash point of
  ``platereg.faults``) after writing a batch's state and before storing its offsets
  must leave neither: the state and the offsets are one transaction. Counted in the
  database by (source, id), not through the duplicate check (which would hide a
  redelivery): no stored event may lie past its partition's stored offset, and the
  restarted consumer counts no duplicate (each event was produced once).
* ``set_offsets`` is a guarded UPDATE: writers racing on the same rows (locked as a
  batch locks them, but without the fence's comparison), some going back, never move a
  stored offset back (a trigger records every move); each backwards write raises
  ``Fenced``.
"""

from __future__ import annotations

import asyncio
import random
import signal

import asyncpg
import pytest

from platereg.faults import CRASH_ENV
from registry.consumer.apply import Fenced
from registry.consumer.store import RegistrySql
from tests.integration.consumer_support import (
    encoded,
    produce,
    random_events,
    reference_fold,
    start_consumer_process,
    stop_process,
    stored_plates,
    wait_offsets,
)
from tests.integration.crash_support import (
    backward_moves,
    figures,
    offset_moves,
    stored_offsets,
    uncovered_events,
    watch_offsets,
)
from tests.integration.seam_support import log_text, metric, ops_port, scrape, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_consumer_killed_before_storing_offsets_leaves_nothing_to_read_again(
        topics, pool: asyncpg.Pool, tmp_path, monkeypatch) -> None:
    rng = random.Random(25)
    events = random_events(rng, [f"CA-NS/K{i:03d}" for i in range(300)], 3000)
    ends = await produce(topics, encoded(events))
    await watch_offsets(pool)
    log = str(tmp_path / "consumer.log")
    # The third batch's state is written, then the process dies before its offsets.
    monkeypatch.setenv(CRASH_ENV, "offsets.store:3")
    proc = start_consumer_process(topics, "--max-records", "200", log_path=log)
    monkeypatch.delenv(CRASH_ENV)
    try:
        assert await asyncio.to_thread(proc.wait, 120) == -signal.SIGKILL, log_text(log)[-2000:]
    finally:
        if proc.poll() is None:
            stop_process(proc)
    stored = await stored_offsets(pool, topics)
    applied_before = await pool.fetchval("SELECT count(*) FROM plate_events")
    assert 0 < sum(stored.values()) < sum(ends.values())   # killed mid-stream
    # Nothing of the killed batch is stored without its offsets.
    assert await uncovered_events(pool, topics) == 0
    assert applied_before == sum(stored.values())

    log = str(tmp_path / "restarted.log")
    proc = start_consumer_process(topics, "--max-records", "200", log_path=log)
    try:
        port = await ops_port(log)
        await wait_offsets(pool, topics, ends, timeout=120, proc=proc)

        async def counted() -> dict | None:
            samples = await scrape(port)
            done = sum(metric(samples, "platereg_events_total", outcome=o)
                       for o in ("applied", "duplicate", "rejected"))
            return samples if done == len(events) - applied_before else None

        samples = await wait_for(counted, "the restarted consumer's counters")
    finally:
        stop_process(proc)
    # No record was read again after its event had been applied.
    assert metric(samples, "platereg_events_total", outcome="duplicate") == 0
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == len(events)
    assert await stored_plates(pool) == reference_fold(events)
    assert await backward_moves(pool) == 0
    figures("killed_before_offsets", events=len(events), kills=1, restarts=1,
            applied_before_kill=applied_before, uncovered=0, duplicates=0,
            violations=0)


async def test_stored_offsets_never_move_back_under_racing_writers(pool: asyncpg.Pool) -> None:
    group, topic = "race", "race.plates.events"
    async with pool.acquire() as conn:
        await RegistrySql(conn).ensure_offsets(group, topic, {0: 0, 1: 0})
    await watch_offsets(pool)
    rng = random.Random(7)
    # six writers each moving on through the offsets, now and then behind another one
    targets = [[{p: max(1, 10 * k + rng.randint(-25, 5))
                 for p in rng.sample([0, 1], rng.randint(1, 2))}
                for k in range(40)] for _ in range(6)]
    outcomes = {"stored": 0, "refused": 0}
    stored: list[dict[int, int]] = []

    async def writer(batches: list[dict[int, int]]) -> None:
        for offsets in batches:
            try:
                async with pool.acquire() as conn, conn.transaction():
                    sql = RegistrySql(conn)
                    # locked in partition order as a batch does, but without the fence's
                    # comparison: only the guard stands between a late writer and the rows
                    await sql.lock_offsets(group, topic, sorted(offsets))
                    await asyncio.sleep(0)
                    await sql.set_offsets(group, topic, offsets)
                outcomes["stored"] += 1
                stored.append(offsets)
            except Fenced as fence:
                assert any(fence.stored[p] >= o for p, o in offsets.items())
                outcomes["refused"] += 1

    await asyncio.gather(*(writer(b) for b in targets))
    final = dict(await pool.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
        group))
    assert await backward_moves(pool) == 0
    assert outcomes["stored"] and outcomes["refused"]
    # the furthest offsets stored (a batch refused for one partition stores none of its
    # others, so the furthest target of all may never be stored)
    assert final == {p: max(o[p] for o in stored if p in o) for p in (0, 1)}
    figures("racing_offset_writers", writes=sum(map(len, targets)), **outcomes,
            moves=await offset_moves(pool), violations=await backward_moves(pool))


async def test_the_offset_statements_create_read_compare_and_move_only_their_rows(
        pool: asyncpg.Pool) -> None:
    """Each statement on ``consumer_offsets`` by itself, on rows of two groups and two
    topics: creation keeps rows already there, reads and writes touch only the named
    group, topic and partitions, a compare-and-set needs the expected offset, and a
    forward write naming a partition without a row is fenced."""
    async with pool.acquire() as conn:
        sql = RegistrySql(conn)
        other = {("g", "other.topic"): {0: 50}, ("h", "t"): {0: 60, 1: 61}}
        for (group, topic), initial in other.items():
            await sql.ensure_offsets(group, topic, initial)
        assert await sql.ensure_offsets("g", "t", {0: 3, 1: 4}) == {0: 3, 1: 4}
        assert await sql.ensure_offsets("g", "t", {0: 9, 2: 7}) == {0: 3, 2: 7}
        assert await sql.lock_offsets("g", "t", [2, 0]) == {0: 3, 2: 7}
        assert await sql.reset_offset("g", "t", 1, 5, 0) is False
        assert await sql.reset_offset("g", "t", 1, 4, 0) is True
        await sql.set_offsets("g", "t", {0: 8, 1: 2})
        with pytest.raises(Fenced) as fenced:
            async with conn.transaction():   # as in a batch: the fence rolls it all back
                await sql.set_offsets("g", "t", {2: 9, 5: 1})
        assert fenced.value.stored == {2: 9}
        rows = await conn.fetch("SELECT consumer_group, topic, partition, next_offset"
                                " FROM consumer_offsets ORDER BY 1, 2, 3")
    assert [tuple(r) for r in rows] == [
        ("g", "other.topic", 0, 50), ("g", "t", 0, 8), ("g", "t", 1, 2), ("g", "t", 2, 7),
        ("h", "t", 0, 60), ("h", "t", 1, 61)]
