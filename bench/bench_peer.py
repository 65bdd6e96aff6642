"""The peer: Kafka Connect standalone with the Debezium JDBC sink, what a user would pick
instead of the registry consumer to put the plate events into PostgreSQL, in the same run
on the same broker and the same PostgreSQL, beside the consumer and the bare baseline.

The same events as the consumer's bench (:func:`bench.bench_consumer.realistic_events`,
PLATEREG_BENCH_CONSUMER_EVENTS, default 200,000, quick 20,000):

* **bare baseline** and **registry consumer**: as in ``bench_consumer`` (the signed
  events on the registry's topic; ``platereg consume registry`` from an empty registry to
  caught up, no live phase);
* **JDBC sink**: the sink needs a record with a schema to make and fill its columns,
  which JSON CloudEvents do not carry, so it reads a copy of the same events on a topic of
  its own, each value in the JSON converter's envelope (``schema`` + ``payload``: the
  event id, type, source, time and the data as JSON text; the key is the plate, as on
  the registry's topic). The copy is made before the clock starts, as the registry's
  topic is. Upsert keyed by the plate (``primary.key.mode=record_key``) into one table
  the sink creates (``schema.evolution=basic``) in a database of the same PostgreSQL.
  The worker is started first (idle); the clock runs from the connector's creation to
  the committed offsets of its group reaching the log end (committed every second).
  Then the table must hold one row per plate, or the bench fails: no figure from a
  sink that wrote nothing.

CPU per event: each process's CPU time over its window (``bench.cpu``): the consumer
process and its parse worker (process start included), the sink's JVM (the connector's
start included, the worker's own start not), the bench process for the bare baseline;
each plus PostgreSQL's and the broker's CPU over the same window.

What the peer does not do (so the figures compare unlike work, in its favour): no
signature check, no validation against the contract, no fold of a plate's events into
its state (the last record written wins, late events included), no history of events,
no dead-letter topic, no exactly-once (at-least-once: a record may be written twice
after a restart). When the sink's jars cannot be fetched the peer's rows say why, and
only the consumer's figures are measured.
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import urlsplit

import asyncpg
import orjson

from bench.bench_consumer import FULL, QUICK, _baseline, _produce, _registry, realistic_events
from bench.common import BenchContext, Figure
from bench.cpu import Meter, tree_cpu, waited_children_cpu
from devtools.apache_kafka import KafkaUnavailable
from devtools.kafka_connect import CONNECTORS, ConnectWorker, committed, install_connector
from platereg.kafka import ensure_topics
from schemas import topics

NAME = "peer"
CONNECTOR = "plates-jdbc-sink"
TABLE = "peer_plates"
BARE = "bare aiokafka -> COPY, unindexed"

#: The JSON converter's schema of the sink's records (the value; the key is the plate).
SCHEMA = {"type": "struct", "name": "platereg.PlateEvent", "optional": False, "fields": [
    {"field": "event_id", "type": "string", "optional": False},
    {"field": "type", "type": "string", "optional": False},
    {"field": "source", "type": "string", "optional": False},
    {"field": "time", "type": "string", "optional": False},
    {"field": "data", "type": "string", "optional": True, "name": "io.debezium.data.Json"},
]}


def enveloped(messages: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The events as the JSON converter reads records with a schema."""
    out = []
    for key, value in messages:
        ev = orjson.loads(value)
        payload = {"event_id": ev["id"], "type": ev["type"], "source": ev["source"],
                   "time": ev["time"], "data": orjson.dumps(ev.get("data")).decode()}
        out.append((key, orjson.dumps({"schema": SCHEMA, "payload": payload})))
    return out


def sink_config(dsn: str, topic: str) -> dict[str, str]:
    """The Debezium JDBC sink: upsert by plate into :data:`TABLE` of ``dsn``'s database."""
    url = urlsplit(dsn)
    return {
        "connector.class": CONNECTORS["jdbc-sink"],
        "tasks.max": "1",
        "topics": topic,
        "connection.url": f"jdbc:postgresql://{url.hostname}:{url.port}{url.path}",
        "connection.username": url.username or "",
        "connection.password": url.password or "",
        "insert.mode": "upsert",
        "delete.enabled": "false",
        "primary.key.mode": "record_key",
        "primary.key.fields": "plate",
        # the sink takes a key with fields (a Struct): Kafka's own transform wraps the
        # plain plate of the topic's key into one field ``plate``
        "transforms": "plate",
        "transforms.plate.type": "org.apache.kafka.connect.transforms.HoistField$Key",
        "transforms.plate.field": "plate",
        "schema.evolution": "basic",
        "collection.name.format": TABLE,
        "use.time.zone": "UTC",
    }


def per_event(seconds: dict[str, float], n: int) -> tuple[float, str]:
    """(microseconds of CPU per event in all, the parts as ``name 12.3``)."""
    parts = ", ".join(f"{k} {v / n * 1e6:.1f}" for k, v in seconds.items())
    return sum(seconds.values()) / n * 1e6, parts


async def _bare(ctx: BenchContext, settings, dsn: str, ends: dict[int, int]
                ) -> tuple[float, dict[str, float]]:
    meter = Meter.servers(ctx.work_dir).start()
    own = time.process_time()
    seconds = await _baseline(settings, dsn, ends)
    return seconds, {"bench process": time.process_time() - own, **meter.read()}


async def _consumer(ctx: BenchContext, settings, dsn: str, ends: dict[int, int]
                    ) -> tuple[float, dict[str, float]]:
    """(events/s after the first commit, CPU seconds by process) of the registry consumer."""
    meter = Meter.servers(ctx.work_dir).start()
    own = waited_children_cpu()
    total, first, _, _ = await _registry(settings, dsn, ends, [])
    cpu = {"consumer": waited_children_cpu() - own, **meter.read()}
    return sum(ends.values()) / max(1e-9, total - first), cpu


async def _sink(ctx: BenchContext, worker: ConnectWorker, dsn: str, topic: str,
                ends: dict[int, int]) -> tuple[float, float, dict[str, float], int]:
    """(events/s after the first commit, whole seconds, CPU by process, rows) of the sink."""
    meter = Meter.servers(ctx.work_dir).start()
    jvm = tree_cpu(worker.pid)
    started = time.perf_counter()
    first = None
    await asyncio.to_thread(worker.create, CONNECTOR, sink_config(dsn, topic))
    while True:
        done = await committed(ctx.bootstrap, CONNECTOR)
        if first is None and any(done.get(p, 0) > 0 for p in ends):
            first = time.perf_counter() - started
        if all(done.get(p, 0) >= o for p, o in ends.items()):
            total = time.perf_counter() - started
            break
        if worker.proc is None or worker.proc.poll() is not None:
            raise RuntimeError("Kafka Connect exited during the benchmark")
        await asyncio.to_thread(worker.running, CONNECTOR)   # raises when the task failed
        await asyncio.sleep(0.2)
    cpu = {"Connect JVM": tree_cpu(worker.pid) - jvm, **meter.read()}
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval(f"SELECT count(*) FROM {TABLE}")  # noqa: S608 - constant
    finally:
        await conn.close()
    n = sum(ends.values())
    return n / max(1e-9, total - (first or 0.0)), total, cpu, rows


async def _run(ctx: BenchContext) -> list[Figure]:
    n = int(os.environ.get("PLATEREG_BENCH_CONSUMER_EVENTS", QUICK if ctx.quick else FULL))
    messages = realistic_events(n)
    try:
        await asyncio.to_thread(install_connector, "jdbc-sink")
        missing = ""
    except KafkaUnavailable as exc:
        missing = str(exc)
    dsn = await ctx.fresh_database()
    settings = ctx.settings(dsn)
    await ensure_topics(settings)
    ends = await _produce(settings, messages)
    base_s, base_cpu = await _bare(ctx, settings, dsn, ends)
    rate, consumer_cpu = await _consumer(ctx, settings, dsn, ends)
    figures = _consumer_figures(n, base_s, base_cpu, rate, consumer_cpu, len(ends))
    if missing:
        return figures + [Figure(NAME, "JDBC sink throughput after first commit", 0,
                                 "events/s", notes=f"NOT MEASURED: {missing}")]
    sink_settings = ctx.settings(dsn)
    await ensure_topics(sink_settings)
    topic = sink_settings.topic(topics.EVENTS)
    sink_ends = await _produce(sink_settings, enveloped(messages))
    worker = ConnectWorker(ctx.work_dir / "connect", ctx.bootstrap, plugins=("jdbc-sink",))
    await asyncio.to_thread(worker.start)
    try:
        sink = await _sink(ctx, worker, dsn, topic, sink_ends)
    finally:
        await asyncio.to_thread(worker.stop)
    plates = len({key for key, _ in messages})
    if sink[-1] != plates:   # a figure from a sink that wrote nothing is no figure
        raise RuntimeError(f"the JDBC sink left {sink[-1]} rows for {plates} plates")
    return figures + _sink_figures(n, base_s, rate, *sink)


def _consumer_figures(n: int, base_s: float, base_cpu: dict[str, float], rate: float,
                      cpu: dict[str, float], partitions: int) -> list[Figure]:
    us, parts = per_event(cpu, n)
    base_us, base_parts = per_event(base_cpu, n)
    return [
        Figure(NAME, "registry consumer CPU per event", us, "us", base_us, BARE,
               notes=f"{n:,} events, {partitions} partitions; {parts}; bare: {base_parts}",
               better="lower"),
        Figure(NAME, "registry consumer throughput after first commit", rate, "events/s",
               n / base_s, BARE, notes="no live phase; the same replay as bench_consumer's"),
    ]


def _sink_figures(n: int, base_s: float, consumer_rate: float, rate: float, total: float,
                  cpu: dict[str, float], rows: int) -> list[Figure]:
    us, parts = per_event(cpu, n)
    return [
        Figure(NAME, "JDBC sink throughput after first commit", rate, "events/s", n / base_s,
               BARE, notes=f"{n:,} events, {rows:,} rows (one per plate), {total:.1f}s from "
                           "the connector's creation; upsert by plate, no fold, no history, "
                           "no signature check, no exactly-once"),
        Figure(NAME, "JDBC sink CPU per event", us, "us", notes=parts, better="lower"),
        Figure(NAME, "registry consumer over JDBC sink, events/s", consumer_rate, "events/s",
               rate, "JDBC sink, same run", ">= 3x", "after the first commit, both"),
    ]


def run(ctx: BenchContext) -> list[Figure]:
    return asyncio.run(_run(ctx))
