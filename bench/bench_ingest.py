"""Ingest: HTTP batches through the ingest API vs. aiokafka producing directly; bulk import.

1. HTTP ingest. ``platereg serve ingest`` (one process: auth, validation,
   normalization, acks=all publishing, metrics, access log) receives batches
   of 500 events from 16 concurrent clients. Load generator: ``httpx``
   AsyncClient in this process, 16 asyncio tasks posting pre-serialized
   bodies (so the generator's cost per event is tiny; its CPU share is
   reported). Figure: accepted events/s, beside the same-run baseline of one
   aiokafka producer (``make_producer``: acks=all, same linger, batch size and
   compression; same broker) sending the very records the API publishes (the
   same normalized events with the same ``authcontext`` stamp and the same producer
   signature, so the same bytes) straight to the topic with no HTTP and no validation. The two
   alternate over :data:`ROUNDS` rounds (A B, B A, A B) of a third of the
   events each, so both see the same mix of machine load; the notes give the
   CPU time per event of the API process and of the baseline producer. The
   test data is frozen out of this process's garbage collector while they
   run: the baseline producer runs in this process and would otherwise pay
   for walking it.
2. Import. ``platereg import`` of a 1,000,000-line NDJSON file (``--quick``:
   100,000) in a child process that reports its own peak RSS. Figures:
   events/s (beside the same aiokafka baseline) and peak RSS (beside the
   file size).

Events are realistic: ``platereg simulate`` output (valid events only),
repeated with fresh ids to reach the wanted count.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx
import orjson

from bench.common import RSS_WRAPPER, TANSU, BenchContext, Figure
from devtools import simulate as sim
from devtools.embedded import free_port
from platereg.kafka import ensure_topics, make_producer
from platereg.security.keys import create_key
from schemas.topics import CLOUDEVENTS_JSON, EVENTS

NAME = "ingest"
BATCH = 500
CONCURRENCY = 16
ROUNDS = 3
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


def records_of(events: list[dict], authid: str) -> list[tuple[bytes, bytes]]:
    """(key, value) of what the ingest API publishes for ``events`` sent with key ``authid``."""
    from datetime import UTC, datetime

    from ingest.api import validate_batch
    from ingest.publisher import published

    valid, errors = validate_batch(events, datetime.now(UTC))
    assert not errors, errors[:3]
    return [published(e, authid) for e in valid]


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, or of process ``pid``."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def kafka_baseline(settings, records: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    """(seconds, CPU seconds) of one acks=all aiokafka producer sending ``records`` and
    awaiting all acks."""
    producer = make_producer(settings)
    await producer.start()
    headers = [("content-type", CLOUDEVENTS_JSON.encode())]
    sign = settings.signer().headers
    topic = settings.topic(EVENTS)
    try:
        cpu, started = _cpu_seconds(), time.perf_counter()
        futures = [await producer.send(topic, value=v, key=k, headers=sign(v, headers))
                   for k, v in records]
        await asyncio.gather(*futures)
        return time.perf_counter() - started, _cpu_seconds() - cpu
    finally:
        await producer.stop()


async def http_ingest(url: str, key: str, bodies: list[bytes]) -> tuple[float, int, dict, float]:
    """(seconds, accepted events, statuses, generator CPU seconds) of posting ``bodies``."""
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

        cpu, started = _cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return elapsed, accepted, statuses, _cpu_seconds() - cpu


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


async def _http(ctx: BenchContext, events: list[dict], broker: str = ""
                ) -> tuple[Totals, Totals]:
    """The ingest API process and the aiokafka baseline, interleaved, on one broker."""
    dsn = await ctx.fresh_database()
    settings = ctx.settings(dsn, broker=broker, PLATEREG_RATE_LIMIT_PER_SECOND="100000",
                            PLATEREG_RATE_LIMIT_BURST="100000", PLATEREG_LOG_FORMAT="json",
                            PLATEREG_EVENTS_PARTITIONS="12")
    await ensure_topics(settings)
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        # every source the simulated week uses (a key may not be bound to "/" alone)
        key_id, key = await create_key(conn, role="ingest", name="bench", sources=[
            "/registry/", "/police/", "/insurance/", "/smartplate/", "/courts/", "/emissions/"])
    finally:
        await conn.close()
    port = free_port()
    log_path = ctx.work_dir / f"ingest-bench{'-' if broker else ''}{broker[-5:]}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wiring.cli", "serve", "ingest", "--port", str(port)],
            env={**os.environ}, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            await _wait_ready(url, proc)
            # Warm-up (connections, metadata), not measured.
            await http_ingest(url, key, [orjson.dumps(realistic_events(BATCH))] * CONCURRENCY)
            http, base = await _interleaved(settings, url, key, key_id, events, proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    if not http.accepted:
        raise RuntimeError(f"the ingest API accepted nothing: statuses {http.statuses}")
    return http, base


async def _reference(ctx: BenchContext, events: list[dict]) -> list[Figure]:
    """HTTP ingest on the embedded Tansu broker beside its baseline there: reference only."""
    if ctx.reference is None:
        return []
    http, base = await _http(ctx, events, TANSU)
    return [Figure(NAME, f"HTTP ingest, {TANSU}", http.accepted / http.seconds, "events/s",
                   base.accepted / base.seconds, "aiokafka direct, same broker",
                   notes=f"{http.accepted:,} events; reference only: the memory-only broker "
                         "of make run without a JDK (no idempotent producer)")]


async def _bench(ctx: BenchContext) -> list[Figure]:
    http_events = 50_000 if ctx.quick else 200_000
    import_lines = 100_000 if ctx.quick else 1_000_000
    events = realistic_events(http_events)
    http, base = await _http(ctx, events)
    rate, baseline = http.accepted / http.seconds, base.accepted / base.seconds

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

    note = (f"{CONCURRENCY} httpx tasks, batches of {BATCH}, 1 API process, {ROUNDS} "
            f"interleaved rounds; statuses {http.statuses}; CPU per event: API process "
            f"{http.cpu / http.accepted * 1e6:.1f} us, baseline producer "
            f"{base.cpu / base.accepted * 1e6:.1f} us; load generator "
            f"{http.generator_cpu / http.seconds:.0%} of a core")
    return [
        Figure(NAME, "HTTP ingest", rate, "events/s", baseline, "aiokafka direct",
               target=">= 0.5x baseline", notes=f"{http.accepted:,} events; {note}"),
        Figure(NAME, "import NDJSON", import_rate, "events/s", baseline, "aiokafka direct",
               notes=f"{import_lines:,} lines; platereg import (process start included)"),
        Figure(NAME, "import peak RSS", peak_mb, "MB", size_mb, "file size",
               target=f"< {IMPORT_RSS_TARGET_MB} (constant memory)",
               notes="peak RSS of the import process vs. the file it streamed",
               better="lower"),
        *await _reference(ctx, events[:50_000]),
    ]


@dataclass
class Totals:
    """Sums over the rounds of one side of the comparison."""

    seconds: float = 0.0
    accepted: int = 0
    cpu: float = 0.0             # the process doing the work (API, or the baseline producer)
    generator_cpu: float = 0.0   # the HTTP load generator (this process)
    statuses: dict[int, int] = field(default_factory=dict)


async def _interleaved(settings, url: str, key: str, key_id: str, events: list[dict],
                       api_pid: int) -> tuple[Totals, Totals]:
    """HTTP ingest and the aiokafka baseline, alternating over ROUNDS parts of ``events``."""
    http, base = Totals(), Totals()
    size = -(-len(events) // ROUNDS)
    parts = []
    for number in range(ROUNDS):
        part = events[number * size:(number + 1) * size]
        bodies = [orjson.dumps(part[i:i + BATCH]) for i in range(0, len(part), BATCH)]
        parts.append((part, bodies, records_of(part, key_id)))
    # The test data (a million objects) out of the collector's sight: otherwise every
    # full collection in this process walks it, and the baseline producer, which runs
    # here, pays for it (see docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    try:
        await _rounds(settings, url, key, parts, api_pid, http, base)
    finally:
        gc.unfreeze()
    return http, base


async def _rounds(settings, url: str, key: str, parts: list, api_pid: int, http: Totals,
                  base: Totals) -> None:
    for number, (_, bodies, records) in enumerate(parts):

        async def run_http(bodies=bodies) -> None:
            api_cpu = _cpu_seconds(api_pid)
            seconds, accepted, statuses, generator = await http_ingest(url, key, bodies)
            http.cpu += _cpu_seconds(api_pid) - api_cpu
            http.seconds += seconds
            http.accepted += accepted
            http.generator_cpu += generator
            for status, count in statuses.items():
                http.statuses[status] = http.statuses.get(status, 0) + count

        async def run_base(records=records) -> None:
            seconds, cpu = await kafka_baseline(settings, records)
            base.seconds += seconds
            base.cpu += cpu
            base.accepted += len(records)

        order = (run_base, run_http) if number % 2 == 0 else (run_http, run_base)
        for measure in order:
            await measure()


def run(ctx: BenchContext) -> list[Figure]:
    return asyncio.run(_bench(ctx))
