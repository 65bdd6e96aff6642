"""Registry consumer replay throughput: empty registry to caught up on a full topic.

Produces realistic plate events first (most plates issued then renewed,
suspended, reinstated...; a few percent late and a few duplicates; each signed as the
benchmarks' registered producer, so the replay checks every signature), then
times ``platereg consume registry`` (a subprocess, as deployed) from start to
the stored offsets reaching the log end, sampling its peak RSS. The baseline,
in the same run on the same topic: a bare aiokafka consumer that COPYs the raw
messages into an unindexed table.

After the replay the same consumer process keeps running while events arrive
at a steady rate (PLATEREG_BENCH_CONSUMER_RATE, 1,000/s for 5 s; the replay size is
PLATEREG_BENCH_CONSUMER_EVENTS, default 200,000, quick 20,000): its
``platereg_event_apply_latency_seconds`` histogram (Kafka timestamp to commit)
is read from /metrics before and after, and the p99 of that phase is reported
(bucket upper bound; replayed records would only measure the backlog).

The embedded PostgreSQL runs with fsync=off for every ratio; one more replay
(quick size) runs against a second, durable embedded PostgreSQL (fsync,
synchronous_commit, full_page_writes on) for the figure with real commits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator

import asyncpg
import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import TANSU, BenchContext, Figure
from devtools.embedded import EmbeddedPostgres, free_port
from platereg.db import migrate
from platereg.kafka import ensure_topics, make_producer
from schemas import topics

FULL = 200_000
QUICK = 20_000


#: Sources the shipped policy allows for each type (contract section 2, "Who may say
#: what"): events from anyone else would all go to the DLQ as unauthorized_source.
OFFICE = "/registry/office/bench"
SOURCES = {"plate.suspended": "/insurance/bench", "plate.stolen_reported": "/police/bench",
           "plate.recovered": "/police/bench"}


def realistic_events(n: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """``n`` events (key, value) of ``n // 4`` plates: see :func:`iter_events`."""
    return list(iter_events(n, seed))


#: How many of the latest events a redelivered duplicate is drawn from (bounded, so that
#: millions of events can be produced as they are made).
DUPLICATE_WINDOW = 100_000


def iter_events(n: int, seed: int = 1) -> Iterator[tuple[bytes, bytes]]:
    """``n`` realistic events (key, value) of ``n // 4`` plates, made one at a time: each
    plate issued first, then renewed, suspended, reinstated...; about 3 % late, about
    0.5 % a redelivered duplicate of one of the latest :data:`DUPLICATE_WINDOW` events."""
    rng = random.Random(seed)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    plates = max(1, n // 4)
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
        ev = {"specversion": "1.0", "id": f"bench-{seed}-{i}", "source": SOURCES.get(kind, OFFICE),
              "type": kind, "time": t.isoformat().replace("+00:00", "Z"), "subject": key,
              "datacontenttype": "application/json", "data": data}
        if len(made) < DUPLICATE_WINDOW:
            made.append(ev)
        else:
            made[i % DUPLICATE_WINDOW] = ev
        if rng.random() < 0.005:
            ev = rng.choice(made)                                   # a redelivered duplicate
        yield ev["subject"].encode(), orjson.dumps(ev)


async def _produce(settings, messages: Iterable[tuple[bytes, bytes]]) -> dict[int, int]:
    """Send ``messages`` (a list, or made as they are sent), signed; the log end offsets."""
    producer = make_producer(settings, linger_ms=20)
    sign = settings.signer().headers
    await producer.start()
    ends: dict[int, int] = {}
    try:
        topic = settings.topic(topics.EVENTS)
        pending = iter(messages)
        while chunk := list(itertools.islice(pending, 20_000)):
            futures = [await producer.send(topic, key=k, value=v, headers=sign(v))
                       for k, v in chunk]
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


LATENCY = "platereg_event_apply_latency_seconds_bucket"


async def _latency_buckets(port: int) -> dict[float, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(LATENCY):
            le = line.split('le="')[1].split('"')[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.split()[-1])
    return out


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound (s) of the bucket holding quantile ``q`` of the observations made
    between two scrapes of a cumulative histogram."""
    diff = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not diff or diff[-1][1] <= 0:
        return None
    for le, cumulative in diff:
        if cumulative >= q * diff[-1][1]:
            return le
    return None


async def _stored(conn: asyncpg.Connection, topic: str) -> dict[int, int]:
    rows = await conn.fetch("SELECT partition, next_offset FROM consumer_offsets "
                            "WHERE topic = $1", topic)
    return {r["partition"]: r["next_offset"] for r in rows}


async def _live_latency(settings, conn: asyncpg.Connection, port: int, n: int,
                        rate: float) -> float | None:
    """p99 apply latency (s) of ``n`` events produced at ``rate``/s to a caught-up consumer."""
    before = await _latency_buckets(port)
    live = realistic_events(n, seed=2)
    producer = make_producer(settings, linger_ms=5)
    sign = settings.signer().headers
    await producer.start()
    ends: dict[int, int] = {}
    topic = settings.topic(topics.EVENTS)
    try:
        started = time.perf_counter()
        futures = []
        for i, (k, v) in enumerate(live):
            futures.append(await producer.send(topic, key=k, value=v, headers=sign(v)))
            ahead = started + (i + 1) / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
        for fut in futures:
            md = await fut
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    finally:
        await producer.stop()
    while True:
        stored = await _stored(conn, topic)
        if all(stored.get(p, 0) >= o for p, o in ends.items()):
            break
        await asyncio.sleep(0.1)
    return quantile(before, await _latency_buckets(port), 0.99)


async def _registry(settings, dsn: str, ends: dict[int, int], extra: list[str],
                    live: tuple[int, float] | None = None
                    ) -> tuple[float, float, float, float | None]:
    """(seconds to caught up, seconds to first commit, peak RSS MB, live p99 apply latency
    in s) of the consumer process."""
    conn = await asyncpg.connect(dsn)
    topic = settings.topic(topics.EVENTS)
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wiring.cli", "consume", "registry", "--metrics-port",
         str(port), *extra],
        env={**os.environ, "PLATEREG_LOG_LEVEL": "WARNING", "PLATEREG_DATABASE_URL": dsn},
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
            stored = await _stored(conn, topic)
            if first_commit is None and any(stored.get(p, 0) > 0 for p in ends):
                first_commit = time.perf_counter() - started
            if all(stored.get(p, 0) >= o for p, o in ends.items()):
                total = time.perf_counter() - started
                break
            if proc.poll() is not None:
                raise RuntimeError(f"consumer exited with {proc.returncode}")
            await asyncio.sleep(0.1)
        p99 = await _live_latency(settings, conn, port, *live) if live else None
        return total, first_commit or 0.0, peak / 2**20, p99
    finally:
        proc.terminate()
        proc.wait(30)
        await conn.close()


async def _durable(ctx: BenchContext, settings, ends: dict[int, int],
                   extra: list[str]) -> tuple[float, float]:
    """(events/s after first commit, total s) of a replay into a durable PostgreSQL."""
    pg = EmbeddedPostgres(ctx.work_dir / "pg-durable", durable=True)
    dsn = pg.start()
    try:
        await asyncio.to_thread(migrate, dsn)
        n = sum(ends.values())
        total, first, _, _ = await _registry(settings, dsn, ends, extra)
        return n / max(1e-9, total - first), total
    finally:
        pg.stop()


async def _setup(ctx: BenchContext, messages: list, broker: str = ""
                 ) -> tuple[str, object, dict[int, int], float, float]:
    """A fresh database and topic of ``messages``: (dsn, settings, log ends, produce
    seconds, seconds of the bare baseline reading them all)."""
    dsn = await ctx.fresh_database()
    settings = ctx.settings(dsn, broker=broker)
    await ensure_topics(settings)
    t0 = time.perf_counter()
    ends = await _produce(settings, messages)
    produce_s = time.perf_counter() - t0
    return dsn, settings, ends, produce_s, await _baseline(settings, dsn, ends)


async def _reference(ctx: BenchContext, messages: list, extra: list[str]) -> list[Figure]:
    """The same replay on the embedded Tansu broker (``make run``'s fallback), beside its
    own bare baseline on that broker: for reference, not a target."""
    if ctx.reference is None:
        return []
    dsn, settings, ends, _, base_s = await _setup(ctx, messages, TANSU)
    total, first, _, _ = await _registry(settings, dsn, ends, extra)
    n = len(messages)
    return [Figure("consumer", f"throughput after first commit, {TANSU}",
                   n / max(1e-9, total - first), "events/s", baseline=n / base_s,
                   baseline_name="bare aiokafka -> COPY, unindexed, same broker",
                   notes=f"{n:,} events; reference only: the memory-only broker of make run "
                         "without a JDK")]


async def _run(ctx: BenchContext) -> list[Figure]:
    n = int(os.environ.get("PLATEREG_BENCH_CONSUMER_EVENTS", QUICK if ctx.quick else FULL))
    messages = realistic_events(n)
    dsn, settings, ends, produce_s, base_s = await _setup(ctx, messages)
    extra = os.environ.get("BENCH_CONSUMER_ARGS", "").split()
    rate = float(os.environ.get("PLATEREG_BENCH_CONSUMER_RATE", "1000"))
    total, first, rss, p99 = await _registry(settings, dsn, ends, extra,
                                             live=(int(rate * 5), rate))
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM plate_events")
        plates = await conn.fetchval("SELECT count(*) FROM plates")
    finally:
        await conn.close()
    if stored < n * 0.9:   # events refused (DLQ) would make the figures meaningless
        raise RuntimeError(f"only {stored:,} of {n:,} events were stored")
    figures = _figures(n, total, first, rss, p99, base_s, produce_s, rate,
                       f"{n:,} events (after the live phase: {stored:,} stored, "
                       f"{plates:,} plates), {len(ends)} partitions")
    if os.environ.get("PLATEREG_BENCH_DURABLE", "1") != "0":
        # A fresh topic of QUICK events, replayed into a durable server.
        durable_settings = ctx.settings(dsn)
        await ensure_topics(durable_settings)
        small = await _produce(durable_settings, messages[:QUICK])
        rate_d, total_d = await _durable(ctx, durable_settings, small, extra)
        figures.append(Figure(
            "consumer", "replay after first commit, durable PostgreSQL", rate_d, "events/s",
            n / max(1e-9, total - first), "same, fsync=off", "",
            f"{QUICK:,} events; fsync, synchronous_commit, full_page_writes on; "
            f"{total_d:.1f}s in all"))
    return figures + await _reference(ctx, messages[:QUICK] if not ctx.quick else messages,
                                      extra)


def _figures(n: int, total: float, first: float, rss: float, p99: float | None,
             base_s: float, produce_s: float, rate: float, note: str) -> list[Figure]:
    bare = "bare aiokafka -> COPY, unindexed"
    return [
        Figure("consumer", "replay throughput", n / total, "events/s", baseline=n / base_s,
               baseline_name=bare, target="",
               notes=f"{note}; incl. {first:.1f}s start-up and group join"),
        Figure("consumer", "throughput after first commit", n / max(1e-9, total - first),
               "events/s", baseline=n / base_s, baseline_name=bare, target=">= 30,000",
               notes="start-up and group join excluded"),
        Figure("consumer", "peak RSS", rss, "MB", target="<= 300",
               notes="consumer process (+ children)", better="lower"),
        Figure("consumer", "apply latency p99 (live)", (p99 or 0) * 1e3, "ms",
               notes=f"{rate:,.0f} events/s for 5 s to the caught-up consumer; bucket upper "
                     "bound of platereg_event_apply_latency_seconds", better="lower"),
        Figure("consumer", "produce rate (setup)", n / produce_s, "events/s",
               notes="acks=all, batched send() futures"),
    ]


def run(ctx: BenchContext) -> list[Figure]:
    return asyncio.run(_run(ctx))
