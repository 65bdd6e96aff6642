"""Kafka Connect standalone (``devtools.kafka_connect``), the harness of ``make bench``'s
peer: the worker starts from the pinned jars on the suite's broker, loads a connector from
its ``plugin.path`` and creates it through its REST API, and the sink writes every record
of a topic, its group's committed offsets reaching the log end.

The connector here is Kafka's own file sink (profile ``file-sink`` of
``deploy/connect/pom.xml``): the Debezium JDBC sink of the bench is not served by the
Maven repository this project's machines reach (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools.kafka_connect import CONNECTORS, ConnectWorker, committed

RECORDS = 40
SCHEMA = {"type": "struct", "name": "smoke.Event", "optional": False, "fields": [
    {"field": "event_id", "type": "string", "optional": False},
    {"field": "n", "type": "int32", "optional": False}]}


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
        for i in range(RECORDS):
            value = {"schema": SCHEMA, "payload": {"event_id": f"ev-{i}", "n": i}}
            md = await producer.send_and_wait(topic, orjson.dumps(value),
                                              key=f"CA-ON/S{i % 7:07d}".encode())
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    finally:
        await producer.stop()
    return ends


async def _until_committed(bootstrap: str, name: str, ends: dict[int, int],
                           worker: ConnectWorker, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        done = await committed(bootstrap, name)
        if all(done.get(p, 0) >= end for p, end in ends.items()):
            return
        assert asyncio.get_running_loop().time() < deadline, f"committed {done}, ends {ends}"
        assert worker.proc is not None and worker.proc.poll() is None, "Connect exited"
        await asyncio.sleep(0.3)


async def test_a_sink_connector_writes_every_record_of_a_topic(servers, tmp_path: Path):
    topic = f"connect-smoke-{uuid.uuid4().hex[:8]}"
    ends = await _topic_of_records(servers.bootstrap, topic)
    out = tmp_path / "sink.txt"
    worker = ConnectWorker(tmp_path / "connect", servers.bootstrap, plugins=("file-sink",),
                           heap_mb=256)
    await asyncio.to_thread(worker.start)
    try:
        await asyncio.to_thread(worker.create, "smoke", {
            "connector.class": CONNECTORS["file-sink"], "tasks.max": "1", "topics": topic,
            "file": str(out)})
        await _until_committed(servers.bootstrap, "smoke", ends, worker)
        plugins = await asyncio.to_thread(worker.request, "GET", "/connector-plugins")
    finally:
        await asyncio.to_thread(worker.stop)
    assert worker.proc is None
    lines = out.read_text().splitlines()
    # the file sink writes each value's Struct: every record, read with its schema
    assert sorted(int(line.split("n=")[1].rstrip("}")) for line in lines) == list(range(RECORDS))
    assert all("event_id=ev-" in line for line in lines)
    assert CONNECTORS["file-sink"] in {p["class"] for p in plugins}
