"""Notices: the scheduler's daily run over many plates, and dispatcher throughput.

- Scheduler: plates with expiries spread over a year (2,000,000; 100,000 with
  --quick), the previous run yesterday; one run finds and creates today's
  notices. Baseline: the bare indexed query for the same expiry dates.
- Dispatcher: webhook deliveries to a local HTTP sink (in this process), all
  answered 200, then with 10% answered 503 (retried with backoff).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
import uuid

import asyncpg
from pydantic import SecretStr

from bench.common import BenchContext, Figure
from notifications import rules, scheduler, store
from notifications.dispatcher import Dispatcher
from platereg.db import init_connection
from platereg.kafka import ensure_topics
from registry.domain import today_in


async def _fill_plates(conn: asyncpg.Connection, n: int, today: dt.date) -> None:
    await conn.execute(
        """INSERT INTO plates (plate_key, jurisdiction, plate, issued, plate_class, expires_on,
                               owner_id, owner, last_event_time, last_event_id, event_count)
           SELECT 'CA-ON/B' || i, 'CA-ON', 'B' || i, true, 'passenger',
                  $2::date + (i % 365), 'own-' || i,
                  jsonb_build_object('owner_id', 'own-' || i, 'name', 'Owner ' || i,
                                     'email', 'o' || i || '@example.org', 'language', 'en'),
                  now(), 'e' || i, 1
           FROM generate_series(1, $1) AS i""", n, today - dt.timedelta(days=60))
    await conn.execute("ANALYZE plates")


async def _scheduler(ctx: BenchContext) -> list[Figure]:
    n = 100_000 if ctx.quick else 2_000_000
    settings = ctx.settings(await ctx.fresh_database())
    now = dt.datetime.now(dt.UTC)
    today = today_in(settings.tz, now)
    conn = await asyncpg.connect(settings.dsn())
    await init_connection(conn)
    try:
        t0 = time.perf_counter()
        await _fill_plates(conn, n, today)
        fill_s = time.perf_counter() - t0
        await store.set_last_day(conn, scheduler.RUN_NAME, today - dt.timedelta(days=1))
        dates = rules.due_dates(today - dt.timedelta(days=1), today,
                                settings.renewal_reminder_days)
        t0 = time.perf_counter()
        async with conn.transaction():
            rows = await store.plates_expiring_on(conn, dates)
        bare_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        created = await scheduler.run_once(conn, settings, now)
        run_s = time.perf_counter() - t0
    finally:
        await conn.close()
    made = sum(created.values())
    return [
        Figure("notices", "scheduler: one day's run", run_s, "s",
               baseline=bare_s, baseline_name="bare indexed query",
               notes=f"{n:,} plates, {made:,} notices made, {len(rows):,} plates read",
               better="lower"),
        Figure("notices", "plates inserted (setup)", n / fill_s, "rows/s"),
    ]


class _Sink:
    """A keep-alive HTTP/1.1 sink answering 200, or 503 for ``fail`` of requests."""

    def __init__(self, fail: float) -> None:
        self.fail = fail
        self.rng = random.Random(7)
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.requests += 1
                status = b"503 Busy" if self.rng.random() < self.fail else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _dispatch(ctx: BenchContext, n: int, fail: float) -> tuple[float, int]:
    sink = _Sink(fail)
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    settings = ctx.settings(await ctx.fresh_database()).model_copy(update={
        "notice_webhook_secrets": [SecretStr("bench-secret")],
        "notice_retry_initial_seconds": 0.05, "notice_retry_max_seconds": 0.5,
        "notice_concurrency": 64})
    conn = await asyncpg.connect(settings.dsn())
    await init_connection(conn)
    try:
        await conn.execute(
            "INSERT INTO owner_preferences (owner_id, channels, webhook_url) "
            "SELECT 'own-' || i, '{webhook}', $2 FROM generate_series(1, $1) AS i", n, url)
        ids = [uuid.uuid4() for _ in range(n)]
        await conn.execute(
            """INSERT INTO notices (notice_id, dedupe_key, kind, plate_key, owner_id, language,
                                    channels, context, recipient, published_at)
               SELECT id, 'bench:' || id, 'renewed', 'CA-ON/B' || o, 'own-' || o, 'en',
                      '{webhook,paper}', '{"expires_on": "2030-01-01"}',
                      jsonb_build_object('owner_id', 'own-' || o, 'name', 'Owner'), now()
               FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, o)""", ids)
        await ensure_topics(settings)
        stop = asyncio.Event()
        dispatcher = Dispatcher(settings, poll=0.05)
        t0 = time.perf_counter()
        await store.enqueue(conn, [(i, "webhook") for i in ids])
        task = asyncio.create_task(dispatcher.run(stop))
        while await conn.fetchval(
                "SELECT count(*) FROM notice_dispatch WHERE state = 'pending'"):
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t0
        stop.set()
        await task
    finally:
        await conn.close()
        server.close()
    return elapsed, sink.requests


async def _run(ctx: BenchContext) -> list[Figure]:
    figures = await _scheduler(ctx)
    n = 500 if ctx.quick else 5_000
    ok_s, ok_req = await _dispatch(ctx, n, 0.0)
    bad_s, bad_req = await _dispatch(ctx, n, 0.1)
    figures += [
        Figure("notices", "dispatcher: webhook deliveries", n / ok_s, "notices/s",
               notes=f"{n:,} notices, sink in-process, {ok_req:,} requests"),
        Figure("notices", "dispatcher: webhook, sink failing 10%", n / bad_s, "notices/s",
               baseline=n / ok_s, baseline_name="all 200",
               notes=f"{bad_req:,} requests (503s retried with backoff)"),
    ]
    return figures


def run(ctx: BenchContext) -> list[Figure]:
    return asyncio.run(_run(ctx))
