"""Poison messages fail only themselves (issue 16, contract section 2).

A real ``platereg consume registry`` process (with its parse worker and relays)
gets good events for a few plates interleaved with every hostile value of
``tests.hostile``, on the same plates and partitions, in small batches. It must
stay up, apply every good event exactly as the reference fold says, and put every
hostile message in the DLQ with its reason and its original bytes.
"""

from __future__ import annotations

import random

import asyncpg
import orjson
import pytest

from schemas import topics as contract
from tests.hostile import cases
from tests.integration.consumer_support import (
    produce,
    random_events,
    reference_fold,
    start_consumer_process,
    stop_process,
    stored_plates,
    wait_offsets,
)
from tests.integration.ingest_support import header
from tests.integration.kafka_support import read_topic
from tests.integration.seam_support import wait_relayed

pytestmark = pytest.mark.integration


async def test_every_hostile_message_fails_alone(topics, pool: asyncpg.Pool, tmp_path) -> None:
    rng = random.Random(1616)
    plates = [f"CA-NB/PZ{i}" for i in range(6)]
    good = random_events(rng, plates, 240)
    hostile = [c for i, p in enumerate(plates)
               for c in cases(subject=p, prefix=f"hostile-{i}")[i::len(plates)]]
    assert len(hostile) == len(cases())
    # interleave: a hostile message every few good ones, keyed like the good ones
    messages: list[tuple[bytes, bytes | None]] = []
    bad_values = iter(hostile)
    for n, ev in enumerate(good):
        messages.append((ev["subject"].encode(), orjson.dumps(ev)))
        if n % 3 == 1:
            case = next(bad_values, None)
            if case is not None:
                messages.append((rng.choice(plates).encode(), case.value))
    rest = list(bad_values)
    messages += [(rng.choice(plates).encode(), c.value) for c in rest]

    log = str(tmp_path / "consumer.log")
    proc = start_consumer_process(topics, "--max-records", "7", log_path=log)
    try:
        ends = await produce(topics, messages, max_request_size=8 << 20)
        await wait_offsets(pool, topics, ends, timeout=120, proc=proc)
        await wait_relayed(pool, topics)
        assert proc.poll() is None, "the consumer stopped"
    finally:
        code = stop_process(proc)
    assert code == 0

    # every good event applied, exactly as the fold of the good events alone
    assert await stored_plates(pool) == reference_fold(good)
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == len(good)
    assert not await pool.fetchval("SELECT count(*) FROM quarantined_plates")

    # every hostile one in the DLQ with its reason and a detail, published with its bytes
    rows = await pool.fetch("SELECT value, reason, detail, published_at FROM dlq_messages")
    assert len(rows) == len(hostile)
    by_value: dict[bytes | None, list] = {}
    for r in rows:
        by_value.setdefault(None if r["value"] is None else bytes(r["value"]), []).append(r)
    for case in hostile:
        found = by_value.get(case.value)
        assert found, f"{case.name}: not in the DLQ"
        row = found.pop()
        assert (row["reason"], case.name) == (case.reason, case.name)
        assert case.detail in row["detail"], case.name
        assert row["published_at"] is not None
    dlq = await read_topic(topics, topics.topic(contract.DLQ))
    assert sorted(header(r, "x-dlq-reason").decode() for r in dlq) == sorted(
        c.reason for c in hostile)
    output = open(log, encoding="utf-8", errors="replace").read()
    assert "Traceback" not in output and "Jeanne" not in output
