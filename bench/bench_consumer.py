"""Registry consumer replay throughput: empty registry to caught up on a full topic.

Produces realistic plate events first (most plates issued then renewed,
suspended, reinstated...; a few percent late and a few duplicates), then
times ``platereg consume registry`` (a subprocess, as deployed) from start to
the stored offsets reaching the log end, sampling its peak RSS. The baseline,
in the same run on the same topic: a bare aiokafka consumer that COPYs the raw
messages into an unindexed table.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import subprocess
import sys
import time

import asyncpg
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import BenchContext, Figure
from platereg.kafka import ensure_topics, make_producer
from schemas import topics

FULL = 200_000
QUICK = 20_000


def realistic_events(n: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    plates = max(1, n // 4)
    out: list[tuple[bytes, bytes]] = []
    clock = [start + dt.timedelta(seconds=rng.randrange(86400)) for _ in range(plates)]
    made: list[dict] = []
    for i in range(n):
        p = i % plates if i < plates else rng.randrange(plates)
        key = f"CA-ON/B{p:07d}"
        clock[p] += dt.timedelta(minutes=rng.randrange(1, 10000))
        t = clock[p]
        if rng.random() < 0.03:
            t -= dt.timedelta(days=rng.randrange(1, 30))          # a late event
        if i < plates:
            kind, data = "plate.issued", {
                "plate_class": "passenger", "expires_on": (t.date() + dt.timedelta(days=365))
                .isoformat(),
                "vehicle": {"vin": f"2HGFC2F59{p:08d}", "make": "Honda", "model": "Civic",
                            "year": 2015 + p % 10, "colour": "blue"},
                "owner": {"owner_id": f"own-{p}", "name": f"Owner {p}",
                          "email": f"owner{p}@example.org", "language": "en"}}
        else:
            kind = rng.choice(["plate.renewed"] * 5 + ["plate.suspended", "plate.reinstated",
                              "plate.owner_updated", "plate.stolen_reported",
                              "plate.recovered"])
            data = {"plate.renewed": {"expires_on": (t.date() + dt.timedelta(days=365))
                                      .isoformat()},
                    "plate.suspended": {"reason": "insurance_lapsed"},
                    "plate.reinstated": {},
                    "plate.owner_updated": {"phone": "+14165550100"},
                    "plate.stolen_reported": {"agency": "TPS", "report_id": f"R{i}"},
                    "plate.recovered": {"agency": "TPS"}}[kind]
        ev = {"specversion": "1.0", "id": f"bench-{seed}-{i}", "source": "/bench/office/1",
              "type": kind, "time": t.isoformat().replace("+00:00", "Z"), "subject": key,
              "datacontenttype": "application/json", "data": data}
        made.append(ev)
        if made and rng.random() < 0.005:
            ev = rng.choice(made)                                   # a redelivered duplicate
        out.append((ev["subject"].encode(), orjson.dumps(ev)))
    return out[:n]


async def _produce(settings, messages) -> dict[int, int]:
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    ends: dict[int, int] = {}
    try:
        topic = settings.topic(topics.EVENTS)
        for i in range(0, len(messages), 20_000):
            futures = [await producer.send(topic, key=k, value=v)
                       for k, v in messages[i:i + 20_000]]
            for fut in futures:
                md = await fut
                ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    finally:
        await producer.stop()
    return ends


async def _baseline(settings, dsn: str, ends: dict[int, int]) -> float:
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE raw_copy (p int, o bigint, k bytea, v bytea)")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap(), enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    topic = settings.topic(topics.EVENTS)
    tps = [TopicPartition(topic, p) for p in ends]
    started = time.perf_counter()
    await consumer.start()
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    done = {p: 0 for p in ends}
    try:
        while any(done[p] < ends[p] for p in ends):
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            rows = [(r.partition, r.offset, r.key, r.value) for recs in batch.values()
                    for r in recs]
            if rows:
                await conn.copy_records_to_table("raw_copy", records=rows)
                for r in rows:
                    done[r[0]] = max(done[r[0]], r[1] + 1)
        return time.perf_counter() - started
    finally:
        await consumer.stop()
        await conn.close()


async def _registry(settings, dsn: str, ends: dict[int, int],
                    extra: list[str]) -> tuple[float, float, float]:
    """(seconds to caught up, seconds to first commit, peak RSS MB) of the consumer process."""
    conn = await asyncpg.connect(dsn)
    topic = settings.topic(topics.EVENTS)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "platereg.cli", "consume", "registry", "--metrics-port", "0",
         *extra], env={**os.environ, "PLATEREG_LOG_LEVEL": "WARNING"},
        stdin=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    peak = 0
    first_commit = None
    try:
        while True:
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss
                                                 for c in ps.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            rows = await conn.fetch("SELECT partition, next_offset FROM consumer_offsets "
                                    "WHERE topic = $1", topic)
            stored = {r["partition"]: r["next_offset"] for r in rows}
            if first_commit is None and any(stored.get(p, 0) > 0 for p in ends):
                first_commit = time.perf_counter() - started
            if all(stored.get(p, 0) >= o for p, o in ends.items()):
                return time.perf_counter() - started, first_commit or 0.0, peak / 2**20
            if proc.poll() is not None:
                raise RuntimeError(f"consumer exited with {proc.returncode}")
            await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
        await conn.close()


async def _run(ctx: BenchContext) -> list[Figure]:
    n = QUICK if ctx.quick else FULL
    messages = realistic_events(n)
    dsn = await ctx.fresh_database()
    settings = ctx.settings(dsn)
    await ensure_topics(settings)
    t0 = time.perf_counter()
    ends = await _produce(settings, messages)
    produce_s = time.perf_counter() - t0
    base_s = await _baseline(settings, dsn, ends)
    extra = os.environ.get("BENCH_CONSUMER_ARGS", "").split()
    total, first, rss = await _registry(settings, dsn, ends, extra)
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM plate_events")
        plates = await conn.fetchval("SELECT count(*) FROM plates")
    finally:
        await conn.close()
    note = (f"{n:,} events ({stored:,} distinct stored, {plates:,} plates), "
            f"{len(ends)} partitions; incl. {first:.1f}s start-up and group join")
    return [
        Figure("consumer", "replay throughput", n / total, "events/s", baseline=n / base_s,
               baseline_name="bare aiokafka -> COPY, unindexed", target=">= 20,000",
               notes=note),
        Figure("consumer", "throughput after first commit", n / max(1e-9, total - first),
               "events/s", baseline=n / base_s, baseline_name="bare aiokafka -> COPY",
               target="", notes="start-up and group join excluded"),
        Figure("consumer", "peak RSS", rss, "MB", target="< 300",
               notes="consumer process (+ children)"),
        Figure("consumer", "produce rate (setup)", n / produce_s, "events/s",
               notes="acks=all, batched send() futures"),
    ]


def run(ctx: BenchContext) -> list[Figure]:
    return asyncio.run(_run(ctx))
