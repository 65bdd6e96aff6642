"""Ingest: HTTP batches through the ingest API vs. aiokafka producing directly; bulk import.

1. HTTP ingest. ``platereg serve ingest`` (one process: auth, validation,
   normalization, acks=all publishing, metrics, access log) receives batches
   of 500 events from 16 concurrent clients. Load generator: ``httpx``
   AsyncClient in this process, 16 asyncio tasks posting pre-serialized
   bodies (so the generator's cost per event is tiny). Figure: accepted
   events/s, beside the same-run baseline of one aiokafka producer (acks=all,
   same settings) sending the same normalized records straight to the topic
   with no HTTP and no validation.
2. Import. ``platereg import`` of a 1,000,000-line NDJSON file (``--quick``:
   100,000) in a child process that reports its own peak RSS. Figures:
   events/s (beside the same aiokafka baseline) and peak RSS (beside the
   file size).

Events are realistic: ``platereg simulate`` output (valid events only),
repeated with fresh ids to reach the wanted count.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time

import httpx
import orjson

from bench.common import RSS_WRAPPER, BenchContext, Figure
from ingest import simulate as sim
from platereg.embedded import free_port
from platereg.kafka import ensure_topics, make_producer
from platereg.keys import create_key
from schemas.topics import CLOUDEVENTS_JSON, EVENTS

NAME = "ingest"
BATCH = 500
CONCURRENCY = 16
#: `platereg import` streams: its peak RSS stays under this whatever the file size
#: (a process holding a 100 MB file would need several times more).
IMPORT_RSS_TARGET_MB = 120


def realistic_events(count: int) -> list[dict]:
    """``count`` valid simulated events with unique ids."""
    base = [orjson.loads(i.value) for i in sim.generate(sim.SimConfig(plates=5000, seed=99))
            if i.kind == sim.VALID]
    out = []
    for n, event in zip(range(count), itertools.cycle(base), strict=False):
        copy = dict(event)
        copy["id"] = f"{event['id']}-{n // len(base)}"
        out.append(copy)
    return out


def records_of(events: list[dict]) -> list[tuple[bytes, bytes]]:
    from datetime import UTC, datetime

    from schemas.validation import parse_event_obj

    now = datetime.now(UTC)
    parsed = [parse_event_obj(e, now=now) for e in events]
    return [(p.plate_key.encode(), p.to_json()) for p in parsed]


async def kafka_baseline(settings, records: list[tuple[bytes, bytes]]) -> float:
    """events/s of one acks=all aiokafka producer sending ``records`` and awaiting all acks."""
    producer = make_producer(settings)
    await producer.start()
    headers = [("content-type", CLOUDEVENTS_JSON.encode())]
    topic = settings.topic(EVENTS)
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, value=v, key=k, headers=headers)
                   for k, v in records]
        await asyncio.gather(*futures)
        return len(records) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def http_ingest(url: str, key: str, bodies: list[bytes]) -> tuple[float, int, dict]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0
    statuses: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {key}",
               "Content-Type": "application/cloudevents-batch+json"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker() -> None:
            nonlocal accepted
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post("/v1/events", content=body, headers=headers)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 202:
                    accepted += response.json()["accepted"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return accepted / elapsed, accepted, statuses


async def _wait_ready(url: str, proc: subprocess.Popen) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("the ingest API exited during start-up")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the ingest API did not become ready")


async def _bench(ctx: BenchContext) -> list[Figure]:
    dsn = await ctx.fresh_database()
    http_events = 50_000 if ctx.quick else 200_000
    import_lines = 100_000 if ctx.quick else 1_000_000
    settings = ctx.settings(dsn, PLATEREG_RATE_LIMIT_PER_SECOND="100000",
                            PLATEREG_RATE_LIMIT_BURST="100000", PLATEREG_LOG_FORMAT="json",
                            PLATEREG_EVENTS_PARTITIONS="12")
    await ensure_topics(settings)
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        key = (await create_key(conn, role="ingest", name="bench", sources=["/"]))[1]
    finally:
        await conn.close()

    events = realistic_events(http_events)
    records = records_of(events)
    bodies = [orjson.dumps(events[i:i + BATCH]) for i in range(0, len(events), BATCH)]
    baseline = await kafka_baseline(settings, records)

    port = free_port()
    log_path = ctx.work_dir / "ingest-bench.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "platereg.cli", "serve", "ingest", "--port", str(port)],
            env={**os.environ}, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            await _wait_ready(url, proc)
            # Warm-up (connections, metadata), not measured.
            await http_ingest(url, key, bodies[: CONCURRENCY])
            rate, accepted, statuses = await http_ingest(url, key, bodies)
        finally:
            proc.terminate()
            proc.wait(30)

    # Import: a file of realistic events, one per line.
    path = ctx.work_dir / "import.ndjson"
    lines = realistic_events(min(import_lines, 200_000))
    with open(path, "wb") as fh:
        for n in range(import_lines):
            event = lines[n % len(lines)]
            if n >= len(lines):
                event = {**event, "id": f"{event['id']}-r{n // len(lines)}"}
            fh.write(orjson.dumps(event) + b"\n")
    size_mb = path.stat().st_size / 2**20
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", RSS_WRAPPER, "import", "--no-progress",
                             str(path)], capture_output=True, text=True, env={**os.environ})
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"import failed: {result.stdout} {result.stderr[-2000:]}")
    peak_mb = int(result.stderr.split("MAXRSS_KB")[1].split()[0]) / 1024
    import_rate = import_lines / elapsed
    path.unlink()

    note = f"{CONCURRENCY} httpx tasks, batches of {BATCH}, 1 API process; statuses {statuses}"
    return [
        Figure(NAME, "HTTP ingest", rate, "events/s", baseline, "aiokafka direct",
               target=">= 0.5x baseline", notes=f"{accepted:,} events; {note}"),
        Figure(NAME, "import NDJSON", import_rate, "events/s", baseline, "aiokafka direct",
               notes=f"{import_lines:,} lines; platereg import (process start included)"),
        Figure(NAME, "import peak RSS", peak_mb, "MB", size_mb, "file size",
               target=f"< {IMPORT_RSS_TARGET_MB} (constant memory)",
               notes="peak RSS of the import process vs. the file it streamed",
               better="lower"),
    ]


def run(ctx: BenchContext) -> list[Figure]:
    return asyncio.run(_bench(ctx))
