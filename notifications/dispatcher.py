"""The notice dispatcher: ``plates.notices`` -> e-mail, SMS, webhook, plate display, paper.

Two loops share one process:

- Intake consumes ``plates.notices`` and records, for each notice, a delivery
  on the first channel of its chain (and on ``plate_display`` beside it) in
  ``notice_dispatch``; a message that is not a contract notice (not JSON,
  wrong schema, over 64 KiB) goes to the dead-letter topic with its reason
  (``platereg.dead_letter``). The Kafka offsets are committed only after both,
  so a crash re-reads the message and the insert is a no-op; a batch whose
  insert or dead-lettering failed is read again (the consumer is rewound to it).
- Workers take due deliveries in batches (one statement: ``FOR UPDATE SKIP
  LOCKED``, a lease, and the notice and webhook URL joined in), store the
  batch's sign-in tokens in one statement, and send each delivery in its own
  task, at most ``PLATEREG_NOTICE_CONCURRENCY`` in flight, over one pooled
  keep-alive HTTP client. A delivery taken by a dispatcher that died comes
  back when its lease ends, with the same ``Idempotency-Key``.
- A recorder stores finished attempts in ``notice_deliveries``, moves their
  deliveries and starts fallbacks, one statement per batch of whatever
  finished meanwhile (group commit). A slot is free once its request is
  answered; the delivery stays leased until its attempt is stored (at most
  twice the slots wait for that). A retry is a later ``next_at`` (exponential backoff with jitter
  from tenacity, or the gateway's ``Retry-After``), never a sleeping task,
  so one slow or failing receiver never holds up the others. After
  ``PLATEREG_NOTICE_MAX_ATTEMPTS`` attempts, or a permanent failure, the
  notice falls back to the next channel of its chain; paper deliveries wait
  for ``platereg notices paper``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError, KafkaError
from pydantic import ValidationError
from tenacity import RetryCallState, wait_exponential, wait_random

from notifications import rules, store
from notifications.channels import Channels, Delivery, Result
from notifications.relay import notice_message
from notifications.render import render
from platereg import metrics
from platereg.db import create_pool
from platereg.dead_letter import DeadLetter, DeadLetters
from platereg.kafka import AUTHORIZATION_ERRORS, make_consumer, refused
from platereg.logging import get_logger
from platereg.process import wait
from platereg.security.owner_links import LINK_DAYS, link_token_hash, link_url
from platereg.settings import Settings
from schemas import topics
from schemas.notices import Notice
from schemas.validation import Rejection, RejectReason, decode_json

log = get_logger(__name__)

TOKEN_DAYS = LINK_DAYS
ELECTRONIC_LINKED = ("email", "sms")     # the contract: every e-mail and SMS notice
#: Largest notice message read (as for an event; a notice is a few hundred bytes).
MAX_NOTICE_BYTES = 64 * 1024


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


def _schema_problems(exc: ValidationError) -> str:
    """Which fields are wrong, in pydantic's words about the expectation (the models hide
    the input, and a field the contract does not name is not named either)."""
    texts = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        name = str(loc[0]) if loc and str(loc[0]) in Notice.model_fields else "notice"
        texts.append(f"{name}: {error['msg']}")
    return "; ".join(dict.fromkeys(texts))


def read_notice(value: bytes | None) -> tuple[uuid.UUID, list[str]]:
    """The notice id and channels of a ``plates.notices`` message (contract section 4), or
    :class:`~schemas.validation.Rejection` with the reason it goes to the DLQ with."""
    if value is None:
        raise Rejection(RejectReason.MALFORMED_JSON, "no value")
    if len(value) > MAX_NOTICE_BYTES:
        raise Rejection(RejectReason.TOO_LARGE, f"value over {MAX_NOTICE_BYTES} bytes")
    obj = decode_json(value)
    try:
        notice = Notice.model_validate(obj)
        notice_id = uuid.UUID(notice.notice_id)
    except ValidationError as exc:
        raise Rejection(RejectReason.SCHEMA_INVALID, _schema_problems(exc)) from None
    except ValueError:
        raise Rejection(RejectReason.SCHEMA_INVALID, "notice_id: not a UUID") from None
    return notice_id, [channel.value for channel in notice.channels]


def sign_in_link(settings: Settings) -> tuple[str, str]:
    """A one-time owner page link and its token's hash, all that is stored (the token
    and URL as ``platereg.security.owner_links`` makes them; the batch is stored by ``_claim``)."""
    token = secrets.token_urlsafe(32)
    return link_url(settings.owner_page_url, token), link_token_hash(token)


def build_delivery(row: asyncpg.Record, link: str | None) -> Delivery:
    """What the channel sends for a claimed delivery (texts render as the channel reads)."""
    recipient = dict(row["recipient"] or {})
    texts = render(row["kind"], row["plate_key"], row["language"], row["context"] or {},
                   recipient, link)
    return Delivery(str(row["notice_id"]), row["channel"], notice_message(row), recipient,
                    texts, row["webhook_url"] if row["channel"] == "webhook" else None)


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
        self.busy = 0                             # claimed, attempt not stored yet
        self.finished: list[store.Attempt] = []   # attempts waiting for the recorder
        self.finished_ready = asyncio.Event()
        self.closing = False
        self.intake_failures = 0
        self.wakeup = asyncio.Event()
        self.ready = False
        self.dead_letters = DeadLetters(settings)

    async def run(self, stop: asyncio.Event) -> None:
        while self.pool is None and not stop.is_set():
            try:
                # Intake, claims and the recorder: one statement each at a time.
                self.pool = await create_pool(self.settings.dsn(), min_size=1, max_size=4,
                                              retry_for=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    asyncpg.InternalClientError) as exc:
                log.warning("database not reachable; retrying", error=type(exc).__name__)
                await wait(stop, 2)
        if self.pool is None:
            await self.channels.close()
            return
        recorder = asyncio.create_task(self.record())
        try:
            await asyncio.gather(self.intake(stop), self.work(stop))
        finally:
            if self.inflight:
                await asyncio.wait(self.inflight, timeout=5)
            self.closing = True
            self.finished_ready.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(recorder, 10)
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
            except AUTHORIZATION_ERRORS as exc:
                raise refused(self.settings, exc, "reading the notices in group "
                              f"{dispatcher_group(self.settings)!r}") from None
            except (KafkaError, OSError) as exc:
                log.warning("broker not reachable; retrying", error=type(exc).__name__)
                await wait(stop, 2)
        try:
            self.ready = True
            while not stop.is_set():
                batch: dict = {}
                try:
                    batch = await consumer.getmany(timeout_ms=500, max_records=500)
                    records = [r for rs in batch.values() for r in rs]
                    if records:
                        await self._enqueue(records)
                        await consumer.commit()
                except (KafkaError, OSError, asyncpg.PostgresError,
                        asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
                    log.warning("notice intake failed; retrying", error=type(exc).__name__)
                    self.intake_failures += 1
                    _rewind(consumer, batch)
                    await wait(stop, 1)
        finally:
            self.ready = False
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await self.dead_letters.close()

    async def _enqueue(self, records: list) -> None:
        """Record the batch's deliveries, then dead-letter its bad messages."""
        items: list[tuple[uuid.UUID, str]] = []
        dead: list[DeadLetter] = []
        for r in records:
            try:
                notice_id, channels = read_notice(r.value)
            except Rejection as exc:
                dead.append(DeadLetter(r.topic, r.partition, r.offset, r.key, r.value,
                                       exc.reason.value, exc.detail, tuple(r.headers or ())))
                continue
            chain = rules.fallback_chain(channels)
            if chain:
                items.append((notice_id, chain[0]))
            if "plate_display" in channels:
                items.append((notice_id, "plate_display"))
        assert self.pool is not None
        if await store.enqueue(self.pool, items):
            self.wakeup.set()
        await self.dead_letters.send(dead)

    # ------------------------------------------------------------------ workers
    async def work(self, stop: asyncio.Event) -> None:
        """Claim due deliveries while slots are free and start sending them.

        A slot is a request in flight; an attempt waiting for the recorder holds
        only its lease (at most ``2 x`` the slots wait), so sending goes on
        while the previous attempts are stored."""
        limit = self.settings.notice_concurrency
        batch = max(1, limit // 8)
        while not stop.is_set():
            free = min(limit - len(self.inflight), 2 * limit - self.busy)
            if free >= batch or (free > 0 and not self.inflight):
                try:
                    claimed = await self._claim(free)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    asyncpg.InternalClientError) as exc:
                    # Rows claimed before a failure come back when their lease ends.
                    log.warning("cannot read deliveries; retrying", error=type(exc).__name__)
                    claimed = []
                self.busy += len(claimed)
                for row, link in claimed:
                    task = asyncio.create_task(self.deliver(row, link))
                    self.inflight.add(task)
                    task.add_done_callback(self._sent)
            # Woken by finished requests, stored attempts, a new notice, or the poll.
            await wait(stop, self.poll, self.wakeup)

    def _sent(self, task: asyncio.Task) -> None:
        self.inflight.discard(task)
        self.wakeup.set()

    async def _claim(self, limit: int) -> list[tuple[asyncpg.Record, str | None]]:
        """Up to ``limit`` due deliveries, with the sign-in links of e-mail and SMS ones
        (their tokens stored before anything is sent)."""
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            rows = await store.claim_due(conn, limit, self.lease)
            links: list[str | None] = []
            tokens = []
            for row in rows:
                link = None
                if row["channel"] in ELECTRONIC_LINKED:
                    link, token_hash = sign_in_link(self.settings)
                    tokens.append((token_hash, row["owner_id"], row["notice_id"]))
                links.append(link)
            now = dt.datetime.now(dt.UTC)
            await store.store_tokens(conn, tokens, now, now + dt.timedelta(days=TOKEN_DAYS))
        return list(zip(rows, links, strict=True))

    async def deliver(self, row: asyncpg.Record, link: str | None) -> None:
        """One attempt; its outcome waits for the recorder (the lease stays taken)."""
        channel = row["channel"]
        try:
            result = await self.channels.send(build_delivery(row, link))
        except Exception as exc:  # noqa: BLE001 - any failure is one failed attempt
            log.warning("delivery attempt raised", channel=channel, error=type(exc).__name__)
            result = Result("retry", None, f"error: {type(exc).__name__}")
        outcome, delay = decide(result, row["attempts"], self.settings)
        fallback = None
        if outcome == "failed" and channel != "plate_display":
            fallback = rules.next_channel(row["channels"], channel)
        self.finished.append(store.Attempt(row["notice_id"], channel, row["attempts"], outcome,
                                           result.status_code, result.error, delay, fallback))
        self.finished_ready.set()

    async def record(self) -> None:
        """Store finished attempts, a batch at a time, until closing and none are left."""
        assert self.pool is not None
        while True:
            if not self.finished:
                if self.closing:
                    return
                await self.finished_ready.wait()
                self.finished_ready.clear()
                continue
            batch, self.finished = self.finished, []
            try:
                async with self.pool.acquire() as conn:
                    await store.record_attempts(conn, batch)
            except Exception as exc:  # noqa: BLE001 - kept and retried; nothing is lost
                log.warning("cannot store delivery attempts; retrying",
                            error=type(exc).__name__, attempts=len(batch))
                self.finished[:0] = batch
                if self.closing:
                    return                   # unstored: their leases bring them back
                await asyncio.sleep(1)
                continue
            self.busy -= len(batch)
            self.wakeup.set()
            for a in batch:
                metrics.NOTICE_DELIVERIES.labels(a.channel, a.outcome).inc()
                log.info("notice delivery", notice_id=str(a.notice_id), channel=a.channel,
                         attempt=a.attempt, outcome=a.outcome, status_code=a.status_code)
                if a.fallback is not None:
                    log.info("notice falls back", notice_id=str(a.notice_id),
                             channel=a.fallback)


def _rewind(consumer: AIOKafkaConsumer, batch: dict) -> None:
    """Read a batch that was not recorded again: the consumer's position is past it,
    and the next batch's commit would commit past it too."""
    for tp, records in batch.items():
        if records:
            with contextlib.suppress(IllegalStateError):      # revoked meanwhile
                consumer.seek(tp, records[0].offset)
