"""Kafka Connect standalone with the Debezium JDBC sink (``devtools.kafka_connect``), the
peer of ``make bench``: the worker starts from the pinned jars on the suite's broker,
loads the sink from its ``plugin.path``, creates it through its REST API with the bench's
own configuration (``bench.bench_peer.sink_config``), and the sink upserts the events
into PostgreSQL, one row per plate holding that plate's last event, its group's
committed offsets reaching the log end.

One test: the sink's plugin (Hibernate ORM, the JDBC drivers) is fetched once into the
cache outside git and reused; with the suite's broker the test took about 25 s on the
2-core development machine."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.bench_peer import CONNECTOR, TABLE, enveloped, sink_config
from devtools.kafka_connect import CONNECTORS, ConnectWorker, committed

PLATES = [f"CA-ON/K{i:06d}" for i in range(5)]
ROUNDS = 4   # events per plate: each later one replaces the row


def _events() -> list[tuple[bytes, bytes]]:
    """``ROUNDS`` CloudEvents per plate, interleaved; event ``e<round>-<plate #>``."""
    out = []
    for r in range(ROUNDS):
        for i, plate in enumerate(PLATES):
            event = {"specversion": "1.0", "id": f"e{r}-{i}", "type": "plate.renewed",
                     "source": "/registry/office/test", "subject": plate,
                     "time": f"2024-01-0{r + 1}T00:00:00Z", "data": {"round": r}}
            out.append((plate.encode(), orjson.dumps(event)))
    return out


async def _topic_of_records(bootstrap: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    ends: dict[int, int] = {}
    try:
        for key, value in enveloped(_events()):
            md = await producer.send_and_wait(topic, value, key=key)
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    finally:
        await producer.stop()
    return ends


async def _until_committed(bootstrap: str, ends: dict[int, int], worker: ConnectWorker,
                           timeout: float = 90.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        done = await committed(bootstrap, CONNECTOR)
        if all(done.get(p, 0) >= end for p, end in ends.items()):
            return
        assert asyncio.get_running_loop().time() < deadline, f"committed {done}, ends {ends}"
        assert worker.proc is not None and worker.proc.poll() is None, "Connect exited"
        await asyncio.to_thread(worker.running, CONNECTOR)   # raises with the task's trace
        await asyncio.sleep(0.3)


async def test_the_jdbc_sink_upserts_one_row_per_plate(servers, database_url: str,
                                                       tmp_path: Path):
    topic = f"connect-jdbc-{uuid.uuid4().hex[:8]}"
    ends = await _topic_of_records(servers.bootstrap, topic)
    worker = ConnectWorker(tmp_path / "connect", servers.bootstrap, plugins=("jdbc-sink",),
                           heap_mb=384)
    await asyncio.to_thread(worker.start)
    try:
        await asyncio.to_thread(worker.create, CONNECTOR, sink_config(database_url, topic))
        await _until_committed(servers.bootstrap, ends, worker)
        plugins = await asyncio.to_thread(worker.request, "GET", "/connector-plugins")
    finally:
        await asyncio.to_thread(worker.stop)
    assert worker.proc is None
    assert CONNECTORS["jdbc-sink"] in {p["class"] for p in plugins}
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(f"SELECT plate, event_id, type, data FROM {TABLE}"  # noqa: S608
                                " ORDER BY plate")
    finally:
        await conn.close()
    # every record written, each plate's later events upserted over its row: the last wins
    last = ROUNDS - 1
    assert [(r["plate"], r["event_id"]) for r in rows] == [
        (plate, f"e{last}-{i}") for i, plate in enumerate(PLATES)]
    assert {r["type"] for r in rows} == {"plate.renewed"}
    assert all(orjson.loads(r["data"]) == {"round": last} for r in rows)
