"""The notice dispatcher: ``plates.notices`` -> e-mail, SMS, webhook, plate display, paper.

Two loops share one process:

- Intake consumes ``plates.notices`` and records, for each notice, a delivery
  on the first channel of its chain (and on ``plate_display`` beside it) in
  ``notice_dispatch``; the Kafka offsets are committed only after that, so
  a crash re-reads the message and the insert is a no-op.
- Workers take due deliveries with ``FOR UPDATE SKIP LOCKED`` and a lease
  (a delivery taken by a dispatcher that died comes back when the lease
  ends), send each in its own task, and store every attempt in
  ``notice_deliveries``. A retry is a later ``next_at`` (exponential backoff
  with jitter from tenacity, or the gateway's ``Retry-After``), never a
  sleeping task, so one slow or failing receiver never holds up the others.
  After ``PLATEREG_NOTICE_MAX_ATTEMPTS`` attempts, or a permanent failure,
  the notice falls back to the next channel of its chain; paper deliveries
  wait for ``platereg notices paper``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid

import asyncpg
import orjson
from aiokafka.errors import KafkaError
from tenacity import RetryCallState, wait_exponential, wait_random

from notifications import rules, store
from notifications.channels import Channels, Delivery, Result
from notifications.relay import notice_message
from notifications.render import render
from platereg import metrics
from platereg.db import create_pool
from platereg.kafka import make_consumer
from platereg.logging import get_logger
from platereg.owner_links import LINK_DAYS, mint_sign_in_link
from platereg.process import wait
from platereg.settings import Settings
from schemas import topics

log = get_logger(__name__)

TOKEN_DAYS = LINK_DAYS
ELECTRONIC_LINKED = ("email", "sms")     # the contract: every e-mail and SMS notice


def dispatcher_group(settings: Settings) -> str:
    return f"{settings.consumer_group}.notices-dispatcher"


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: tenacity's exponential backoff with jitter."""
    initial = settings.notice_retry_initial_seconds
    wait = (wait_exponential(multiplier=initial, max=settings.notice_retry_max_seconds)
            + wait_random(0, initial))
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(wait(state))


def decide(result: Result, attempt: int, settings: Settings) -> tuple[str, float | None]:
    """The stored outcome of an attempt and, for a retry, the delay before the next."""
    if result.outcome != "retry":
        return result.outcome, None
    if attempt >= settings.notice_max_attempts:
        return "failed", None
    delay = backoff(settings, attempt)
    if result.retry_after is not None:
        delay = max(delay, result.retry_after)
    return "retry", delay


async def sign_in_link(conn: asyncpg.Connection, settings: Settings, owner_id: str,
                       notice_id: uuid.UUID, now: dt.datetime) -> str:
    """A one-time owner page link; only the token's SHA-256 is stored."""
    return await mint_sign_in_link(conn, settings.owner_page_url, owner_id, notice_id, now)


async def build_delivery(conn: asyncpg.Connection, settings: Settings, row: asyncpg.Record,
                         channel: str) -> Delivery:
    recipient = dict(row["recipient"] or {})
    link = None
    if channel in ELECTRONIC_LINKED:
        link = await sign_in_link(conn, settings, row["owner_id"], row["notice_id"],
                                  dt.datetime.now(dt.UTC))
    webhook_url = None
    if channel == "webhook":
        prefs = await store.preferences(conn, [row["owner_id"]])
        pref = prefs.get(row["owner_id"])
        webhook_url = pref["webhook_url"] if pref else None
    texts = render(row["kind"], row["plate_key"], row["language"], row["context"] or {},
                   recipient, link)
    return Delivery(str(row["notice_id"]), channel, notice_message(row), recipient, texts,
                    webhook_url)


class Dispatcher:
    """Intake and workers; ``run(stop)`` returns once ``stop`` is set."""

    def __init__(self, settings: Settings, *, lease: float | None = None,
                 poll: float = 0.5) -> None:
        self.settings = settings
        # An attempt is bounded by the timeout (connect, then response); past the lease
        # the delivery is taken again (its dispatcher is presumed dead).
        self.lease = lease or settings.notice_http_timeout_seconds * 2 + 5
        self.poll = poll
        self.channels = Channels(settings)
        self.pool: asyncpg.Pool | None = None
        self.inflight: set[asyncio.Task] = set()
        self.wakeup = asyncio.Event()
        self.ready = False

    async def run(self, stop: asyncio.Event) -> None:
        while self.pool is None and not stop.is_set():
            try:
                self.pool = await create_pool(
                    self.settings.dsn(), min_size=1,
                    max_size=min(20, self.settings.notice_concurrency + 2), retry_for=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("database not reachable; retrying", error=type(exc).__name__)
                await wait(stop, 2)
        if self.pool is None:
            await self.channels.close()
            return
        try:
            await asyncio.gather(self.intake(stop), self.work(stop))
        finally:
            if self.inflight:
                await asyncio.wait(self.inflight, timeout=5)
            await self.channels.close()
            await self.pool.close()

    # ------------------------------------------------------------------ intake
    async def intake(self, stop: asyncio.Event) -> None:
        consumer = make_consumer(self.settings, self.settings.topic(topics.NOTICES),
                                 group_id=dispatcher_group(self.settings),
                                 session_timeout_ms=6_000, heartbeat_interval_ms=1_000)
        while not stop.is_set():
            try:
                await consumer.start()
                break
            except (KafkaError, OSError) as exc:
                log.warning("broker not reachable; retrying", error=type(exc).__name__)
                await wait(stop, 2)
        try:
            self.ready = True
            while not stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=500, max_records=500)
                    records = [r for rs in batch.values() for r in rs]
                    if records:
                        await self._enqueue(records)
                        await consumer.commit()
                except (KafkaError, OSError, asyncpg.PostgresError,
                        asyncpg.InterfaceError) as exc:
                    log.warning("notice intake failed; retrying", error=type(exc).__name__)
                    await wait(stop, 1)
        finally:
            self.ready = False
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _enqueue(self, records: list) -> None:
        items: list[tuple[uuid.UUID, str]] = []
        for r in records:
            try:
                msg = orjson.loads(r.value)
                notice_id = uuid.UUID(msg["notice_id"])
                chain = rules.fallback_chain(msg["channels"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("notice message not understood; skipped",
                            partition=r.partition, offset=r.offset)
                continue
            if chain:
                items.append((notice_id, chain[0]))
            if "plate_display" in msg["channels"]:
                items.append((notice_id, "plate_display"))
        assert self.pool is not None
        if await store.enqueue(self.pool, items):
            self.wakeup.set()

    # ------------------------------------------------------------------ workers
    async def work(self, stop: asyncio.Event) -> None:
        assert self.pool is not None
        limit = self.settings.notice_concurrency
        while not stop.is_set():
            free = limit - len(self.inflight)
            claimed = []
            if free > 0:
                try:
                    async with self.pool.acquire() as conn:
                        claimed = await store.claim_due(conn, free, self.lease)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("cannot read deliveries; retrying", error=type(exc).__name__)
            for row in claimed:
                task = asyncio.create_task(self.deliver(row["notice_id"], row["channel"],
                                                        row["attempts"]))
                self.inflight.add(task)
                task.add_done_callback(self._done)
            # Woken by a finished delivery, a new notice, or the poll (retries due).
            await wait(stop, self.poll, self.wakeup)

    def _done(self, task: asyncio.Task) -> None:
        self.inflight.discard(task)
        self.wakeup.set()
        if not task.cancelled() and task.exception() is not None:
            log.warning("delivery task failed; the lease brings it back",
                        error=type(task.exception()).__name__)

    async def deliver(self, notice_id: uuid.UUID, channel: str, attempt: int) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            row = (await store.notice_rows(conn, [notice_id]))[notice_id]
        try:
            async with self.pool.acquire() as conn:
                delivery = await build_delivery(conn, self.settings, row, channel)
            result = await self.channels.send(delivery)
        except Exception as exc:  # noqa: BLE001 - any failure is one failed attempt
            log.warning("delivery attempt raised", channel=channel, error=type(exc).__name__)
            result = Result("retry", None, f"error: {type(exc).__name__}")
        outcome, delay = decide(result, attempt, self.settings)
        async with self.pool.acquire() as conn:
            await store.record_attempt(conn, notice_id, channel, attempt, outcome,
                                       result.status_code, result.error, delay)
            metrics.NOTICE_DELIVERIES.labels(channel, outcome).inc()
            log.info("notice delivery", notice_id=str(notice_id), channel=channel,
                     attempt=attempt, outcome=outcome, status_code=result.status_code)
            if outcome == "failed" and channel != "plate_display":
                following = rules.next_channel(row["channels"], channel)
                if following is not None:
                    await store.enqueue(conn, [(notice_id, following)])
                    log.info("notice falls back", notice_id=str(notice_id), channel=following)
