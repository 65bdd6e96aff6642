"""Notices: the scheduler's daily run over many plates, and dispatcher throughput.

- Scheduler: plates with expiries spread over a year (2,000,000; 100,000 with
  --quick), the previous run yesterday; one run finds and creates today's
  notices. Baseline: the bare indexed query for the same expiry dates.
- Dispatcher: signed webhook deliveries to a local keep-alive HTTP sink in its
  own process (``python -m bench.bench_notices sink FAIL``), all answered 200,
  then with 10% answered 503 (retried with backoff). Baseline: a bare aiohttp
  loop posting the same bodies to the same sink with the same concurrency (the
  most the dispatcher's HTTP client could do here); beside it, the same bare
  loop with httpx. With the failing sink, the rate of first attempts (every
  notice tried once, while the 503s are retried) is set beside the all-200
  rate: the others must not slow down.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import aiohttp
import asyncpg
import httpx
import orjson
import uvloop
from pydantic import SecretStr

from bench.common import BenchContext, Figure
from notifications import rules, scheduler, store
from notifications.channels import sign
from notifications.dispatcher import Dispatcher
from platereg.db import init_connection
from platereg.kafka import ensure_topics
from schemas.fold import today_in


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


CONCURRENCY = 64


class _Sink(asyncio.Protocol):
    """A keep-alive HTTP/1.1 sink: 200, or 503 for ``fail`` of POSTs; GET answers the
    count of POSTs as JSON. Runs in its own process (``main``)."""

    fail = 0.0
    rng = random.Random(7)
    posts = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            if head.startswith(b"GET"):
                body = orjson.dumps({"posts": _Sink.posts})
                answer = b"200 OK\r\nContent-Type: application/json"
            else:
                _Sink.posts += 1
                body = b""
                answer = b"503 Busy" if _Sink.rng.random() < _Sink.fail else b"200 OK"
            self.transport.write(b"HTTP/1.1 " + answer + b"\r\nContent-Length: "  # type: ignore[attr-defined]
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _serve_sink(fail: float) -> None:
    _Sink.fail = fail
    server = await asyncio.get_running_loop().create_server(_Sink, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def _sink_process(fail: float) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_notices", "sink", str(fail)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


async def _posts(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + "/stats") as r:
        return int((await r.json())["posts"])


async def _bare_loop(url: str, n: int, client: str, concurrency: int = CONCURRENCY) -> float:
    """Requests/s of ``concurrency`` workers posting signed notice-sized bodies."""
    body = orjson.dumps({"notice_id": str(uuid.uuid4()), "kind": "renewed",
                         "jurisdiction": "CA-ON", "plate": "B1", "owner_id": "own-1",
                         "language": "en", "channels": ["webhook", "paper"],
                         "created_at": "2026-01-01T00:00:00Z",
                         "context": {"expires_on": "2030-01-01"}})
    left = n

    def headers() -> dict[str, str]:
        return {"Content-Type": "application/json", "Idempotency-Key": "k:webhook",
                "X-Signature": sign(body, ["bench-secret"])}

    if client == "httpx":
        limits = httpx.Limits(max_connections=concurrency,
                              max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=10) as hx:
            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await hx.post(url + "/hook", content=body, headers=headers())

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return n / (time.perf_counter() - t0)
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url + "/hook", data=body, headers=headers()) as r:
                    await r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


async def _dispatch(ctx: BenchContext, url: str, n: int) -> dict[str, float]:
    """Deliver ``n`` webhook notices; rates from the stored attempts' times."""
    settings = ctx.settings(await ctx.fresh_database()).model_copy(update={
        "notice_webhook_secrets": [SecretStr("bench-secret")],
        "webhook_allow_private": True,    # the sink is on this machine
        "notice_retry_initial_seconds": 0.05, "notice_retry_max_seconds": 0.5,
        "notice_concurrency": CONCURRENCY})
    conn = await asyncpg.connect(settings.dsn())
    await init_connection(conn)
    stop = asyncio.Event()
    task = None
    try:
        await conn.execute(
            "INSERT INTO owner_preferences (owner_id, channels, webhook_url) "
            "SELECT 'own-' || i, '{webhook}', $2 FROM generate_series(1, $1) AS i",
            n, url + "/hook")
        ids = [uuid.uuid4() for _ in range(n)]
        await conn.execute(
            """INSERT INTO notices (notice_id, dedupe_key, kind, plate_key, owner_id, language,
                                    channels, context, recipient, published_at)
               SELECT id, 'bench:' || id, 'renewed', 'CA-ON/B' || o, 'own-' || o, 'en',
                      '{webhook,paper}', '{"expires_on": "2030-01-01"}',
                      jsonb_build_object('owner_id', 'own-' || o, 'name', 'Owner'), now()
               FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, o)""", ids)
        await ensure_topics(settings)
        dispatcher = Dispatcher(settings, poll=0.05)
        task = asyncio.create_task(dispatcher.run(stop))
        while not dispatcher.ready:                  # started: pool and consumer up
            await asyncio.sleep(0.05)
        t0 = await conn.fetchval("SELECT clock_timestamp()")
        await store.enqueue(conn, [(i, "webhook") for i in ids])
        while await conn.fetchval(
                "SELECT count(*) FROM notice_dispatch WHERE state = 'pending'"):
            await asyncio.sleep(0.1)
        row = await conn.fetchrow(
            """SELECT count(*) AS attempts,
                      count(*) FILTER (WHERE attempt = 1 AND outcome = 'sent') AS first,
                      extract(epoch FROM max(at) - $1) AS all_s,
                      extract(epoch FROM max(at) FILTER (WHERE attempt = 1) - $1) AS first_s
               FROM notice_deliveries""", t0)
    finally:
        stop.set()
        if task is not None:
            await task
        await conn.close()
    all_s = float(row["all_s"])
    return {"notices/s": n / all_s, "attempts/s": row["attempts"] / all_s,
            "first/s": n / float(row["first_s"]), "attempts": row["attempts"],
            "first": row["first"], "all_s": all_s}


async def _dispatch_figures(ctx: BenchContext) -> list[Figure]:
    n = 5_000 if ctx.quick else 20_000
    with _sink_process(0.0) as url:
        bare = await _bare_loop(url, n, "aiohttp")
        bare_httpx = await _bare_loop(url, n // 4, "httpx")
        ok = await _dispatch(ctx, url, n)
    with _sink_process(0.1) as url:
        bare_bad = await _bare_loop(url, n, "aiohttp")
        bad = await _dispatch(ctx, url, n)
        bad_posts = await _posts(url) - n
    same = f"same sink, {CONCURRENCY} in flight"
    return [
        Figure("notices", "dispatcher: webhook deliveries", ok["notices/s"], "notices/s",
               baseline=bare, baseline_name=f"bare aiohttp loop, req/s, {same}",
               target=">= 1,000/s", notes=f"{n:,} signed webhooks, sink in its own process"),
        Figure("notices", "bare httpx loop (the previous client)", bare_httpx, "req/s",
               baseline=bare, baseline_name="bare aiohttp loop",
               notes=f"{n // 4:,} requests, {same}"),
        Figure("notices", "dispatcher, sink failing 10%: attempts", bad["attempts/s"],
               "attempts/s", baseline=bare_bad, baseline_name=f"bare aiohttp loop, {same}",
               notes=f"{int(bad['attempts']):,} attempts for {n:,} notices in "
                     f"{bad['all_s']:.1f} s (503s retried with backoff); "
                     f"sink saw {bad_posts:,} POSTs"),
        Figure("notices", "dispatcher, sink failing 10%: first attempts", bad["first/s"],
               "notices/s", baseline=ok["notices/s"], baseline_name="all 200",
               target="ratio ~1",
               notes=f"every notice's first attempt; {int(bad['first']):,} sent at once"),
    ]


async def _run(ctx: BenchContext) -> list[Figure]:
    return await _scheduler(ctx) + await _dispatch_figures(ctx)


def run(ctx: BenchContext) -> list[Figure]:
    return uvloop.run(_run(ctx))


if __name__ == "__main__" and sys.argv[1:2] == ["sink"]:
    uvloop.run(_serve_sink(float(sys.argv[2])))
