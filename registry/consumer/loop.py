"""The registry consumer's Kafka loop: fold plates.events into PostgreSQL, exactly-once in effect.

One database transaction per ``getmany`` batch holds everything the batch
does (``registry.consumer.apply.apply_batch``: new events into the history, plates
updated, status changes and rejections recorded in their outboxes, and the
consumed offsets stored). This module fetches, parses (in worker processes
when given an executor), retries and re-seeks. Kafka commits are
never made nor trusted: on every partition assignment the consumer seeks to
the offsets stored in the database.

Offsets are also a fence. Each batch locks the stored offset rows of its
partitions and checks they still equal where this consumer started the batch;
if another group member (after a rebalance) got there first, the batch is
rolled back and the partitions re-seek to the stored offsets (every other owned
partition re-seeks to where it stands, so the records of a batch fetched before
the fence are fetched again rather than skipped). So an offset range is applied
by exactly one committed transaction. The offsets are stored by a guarded UPDATE that
only moves them forward: a write that would move one back (a fence bypassed) aborts the
batch the same way, so stored offsets never go backwards.

Logs carry counts, partitions, offsets, reasons and event ids only: never a
plate, subject, owner or payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from concurrent.futures import Executor
from functools import partial

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from platereg import metrics
from platereg.clock import Clock
from platereg.db import create_pool
from platereg.kafka import AUTHORIZATION_ERRORS, Record, make_consumer, refused
from platereg.logging import get_logger
from platereg.process import Health, Stopped, retry
from platereg.security.policy_store import PolicyCache
from platereg.security.producer_store import ProducerCache
from platereg.settings import Settings
from registry.consumer import store
from registry.consumer.apply import ConcurrentWriter, Fenced, Outcome, apply_batch
from registry.consumer.batch import expand_compact, parse_compact, parse_values
from schemas import topics
from schemas.signing import is_binary

log = get_logger(__name__)

#: Errors after which the batch is retried with backoff (database or network down).
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncio.TimeoutError, asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
    # out of disk (a full data directory), memory or connections: waited out
    asyncpg.InsufficientResourcesError,
    # the server went away in the middle of an operation ("cannot switch to state ...")
    asyncpg.InternalClientError,
)
#: Extra ``getmany`` calls that may fill a batch, each waiting at most FILL_WAIT_MS.
FILL_CALLS = 4
FILL_WAIT_MS = 10
#: Errors after which the batch is retried at once.
RETRY_AT_ONCE: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError, asyncpg.SerializationError,
)


class _Batch:
    """A fetched batch on its way to the database (kept across retries)."""

    def __init__(self, records: list, parsed: list, generation: int, now: dt.datetime) -> None:
        self.records = records
        self.parsed = parsed
        self.generation = generation
        self.now = now
        self._index()

    def _index(self) -> None:
        self.next_offsets: dict[int, int] = {}
        for r in self.records:
            self.next_offsets[r.partition] = r.offset + 1

    def drop_before(self, expected: dict[int, int]) -> bool:
        """Drop records before the stored offsets; False if none is left.

        Records from a fetch made before the last seek (aiokafka can hand them out
        after a partition is re-assigned) were already applied, since the positions
        come from the database.
        """
        if all(r.offset >= expected[r.partition] for r in self.records):
            return True
        kept = [i for i, r in enumerate(self.records) if r.offset >= expected[r.partition]]
        log.info("dropped records before the stored offsets",
                 count=len(self.records) - len(kept))
        self.records = [self.records[i] for i in kept]
        self.parsed = [self.parsed[i] for i in kept]
        self._index()
        return bool(self.records)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: RegistryConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.owner._revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.owner._assigned(assigned)


class RegistryConsumer:
    """The consumer loop; ``run(stop)`` returns after ``stop`` is set (or on fatal errors)."""

    def __init__(self, settings: Settings, *, max_records: int = 5000,
                 parse_executor: Executor | None = None,
                 health: Health | None = None,
                 on_commit: asyncio.Event | None = None, clock: Clock | None = None,
                 batch_hook: store.BatchHook) -> None:
        self.settings = settings
        self.batch_hook = batch_hook     # runs in each batch's transaction
        self.clock = clock or Clock.from_settings(settings)
        self.topic = settings.topic(topics.EVENTS)
        self.group = settings.consumer_group
        self.tz = settings.tz
        self.max_records = max_records
        self.parse_executor = parse_executor
        self.health = health or Health()
        self.on_commit = on_commit
        self.positions: dict[int, int] = {}
        self.generation = 0
        self.lock = asyncio.Lock()
        self.pool: asyncpg.Pool | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.stop_event = asyncio.Event()
        self.batches = 0
        self.policies = PolicyCache()
        self.producers = ProducerCache()

    # ------------------------------------------------------------------ life cycle
    async def run(self, stop: asyncio.Event | None = None) -> None:
        if stop is not None:
            self.stop_event = stop
        self.pool = await self._connect_db()
        if self.pool is None:
            return
        self.consumer = make_consumer(
            self.settings, group_id=self.group, max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024, max_poll_records=self.max_records,
            session_timeout_ms=6_000, heartbeat_interval_ms=1_000,
            max_poll_interval_ms=600_000, rebalance_timeout_ms=60_000,
        )
        try:
            await retry(self.consumer.start, self.stop_event, on=(KafkaError, OSError),
                        never=AUTHORIZATION_ERRORS, message="broker not reachable; retrying",
                        first=2, cap=2,
                        on_error=lambda _: setattr(self.health, "kafka_ok", False))
            self.consumer.subscribe([self.topic], listener=_Listener(self))
            self.health.started = True
            log.info("registry consumer started", group=self.group, topic=self.topic)
            await self._loop()
        except Stopped:
            pass
        except AUTHORIZATION_ERRORS as exc:
            raise refused(self.settings, exc, f"reading topic {self.topic!r} in group "
                          f"{self.group!r} (PLATEREG_CONSUMER_GROUP)") from None
        finally:
            self.health.started = False
            with contextlib.suppress(Exception):
                await self.consumer.stop()   # leaves the group
            await self.pool.close()
            log.info("registry consumer stopped", batches=self.batches)

    async def _connect_db(self) -> asyncpg.Pool | None:
        try:
            pool = await retry(
                lambda: create_pool(self.settings.dsn(), min_size=1, max_size=4, retry_for=5),
                self.stop_event, on=DB_ERRORS, message="database not reachable; retrying",
                on_error=self._db_down)
        except Stopped:
            return None
        self.health.db_ok = True
        return pool

    def _db_down(self, _: BaseException) -> None:
        self.health.db_ok = False

    # ------------------------------------------------------------------ assignment
    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:
            self.generation += 1
            for tp in revoked:
                if tp.topic == self.topic:
                    self.positions.pop(tp.partition, None)
                    with contextlib.suppress(KeyError):
                        metrics.CONSUMER_LAG.remove(str(tp.partition))
        if revoked:
            log.info("partitions revoked", partitions=sorted(tp.partition for tp in revoked))

    async def _assigned(self, assigned: list[TopicPartition]) -> None:
        tps = sorted((tp for tp in assigned if tp.topic == self.topic),
                     key=lambda tp: tp.partition)
        async with self.lock:
            self.generation += 1
            if not tps:
                return
            try:
                await retry(lambda: self._seek_to_stored(tps), self.stop_event,
                            on=(*DB_ERRORS, KafkaError),
                            message="cannot read stored offsets; retrying")
            except Stopped:
                return
        log.info("partitions assigned", partitions=[tp.partition for tp in tps],
                 offsets={tp.partition: self.positions.get(tp.partition) for tp in tps})

    async def _seek_to_stored(self, tps: list[TopicPartition]) -> None:
        assert self.consumer is not None and self.pool is not None
        begin = await self.consumer.beginning_offsets(tps)
        end = await self.consumer.end_offsets(tps)
        async with self.pool.acquire() as conn:
            sql = store.RegistrySql(conn)
            stored = await sql.ensure_offsets(
                self.group, self.topic, {tp.partition: begin[tp] for tp in tps})
            for tp in tps:
                offset = stored[tp.partition]
                start = offset
                if offset < begin[tp]:
                    log.warning("stored offset is before the log start (retention); "
                                "continuing at the log start", partition=tp.partition,
                                stored_offset=offset, log_start=begin[tp])
                    start = begin[tp]
                elif offset > end[tp]:
                    log.warning(
                        "stored offset is past the log end (topic recreated or broker "
                        "replaced without its data); starting from the log beginning",
                        partition=tp.partition, stored_offset=offset, log_end=end[tp],
                        log_start=begin[tp])
                    start = begin[tp]
                if start != offset and not await sql.reset_offset(
                        self.group, self.topic, tp.partition, offset, start):
                    raise asyncpg.SerializationError("offset changed concurrently")
                self.consumer.seek(tp, start)
                self.positions[tp.partition] = start

    # ------------------------------------------------------------------ batches
    async def _loop(self) -> None:
        """Fetch, parse and apply; with a parse executor, batch n+1 is parsed while
        batch n is written (a pipeline of depth one)."""
        consumer = self.consumer
        assert consumer is not None
        pending: tuple | None = None
        try:
            while not self.stop_event.is_set():
                records, generation = await self._fetch(0 if pending else 500)
                fresh = self._start_parse(records, generation) if records else None
                if pending is not None:
                    await self._handle(*pending)
                pending = fresh
                if pending is not None and self.parse_executor is None:
                    await self._handle(*pending)
                    pending = None
                self._update_lag()
        finally:
            if pending is not None and not isinstance(pending[3], list):
                pending[3].cancel()   # abandoned: nothing of it was committed

    async def _fetch(self, timeout_ms: int) -> tuple[list, int]:
        """The next batch's records and the assignment generation they belong to: one
        ``getmany``, then up to :data:`FILL_CALLS` more while each brings records within
        :data:`FILL_WAIT_MS` (a fetch response holds about one producer batch per
        partition; bigger batches cost PostgreSQL less per event). Records come from the
        positions as of the ``getmany`` that returned them: when a rebalance or seek
        happened during one, the records before it are stale (fetched again from the
        seek) and are left out."""
        assert self.consumer is not None
        records: list = []
        generation = self.generation
        for call in range(1 + FILL_CALLS):
            fetch = partial(self.consumer.getmany, timeout_ms=timeout_ms if call == 0
                            else FILL_WAIT_MS, max_records=self.max_records - len(records))
            got = await retry(fetch, self.stop_event, on=(KafkaError,),
                              never=AUTHORIZATION_ERRORS, message="fetch failed; retrying")
            more = [r for tp in sorted(got, key=lambda t: t.partition)
                    if tp.topic == self.topic for r in got[tp]]
            if self.generation != generation:
                records, generation = [], self.generation
            records += more
            if not more or len(records) >= self.max_records:
                break
        return records, generation

    def _start_parse(self, records: list, generation: int) -> tuple:
        now = self.clock.now()
        if self.parse_executor is None:
            parsed: object = parse_values(
                [Record(r.key, r.value, r.partition, r.offset, r.headers) for r in records],
                now)
        else:
            binary = [r.headers if is_binary(r.headers) else None for r in records]
            parsed = asyncio.get_running_loop().run_in_executor(
                self.parse_executor, parse_compact, [r.value for r in records], now,
                binary if any(h is not None for h in binary) else None)
        return records, generation, now, parsed

    async def _handle(self, records: list, generation: int, now: dt.datetime,
                      parsed: object) -> None:
        if not isinstance(parsed, list):
            parsed = expand_compact(await parsed, records)  # type: ignore[misc]
        batch = _Batch(records, parsed, generation, now)
        try:
            await retry(lambda: self._apply(batch), self.stop_event, on=DB_ERRORS,
                        at_once=(ConcurrentWriter, *RETRY_AT_ONCE), first=0.2,
                        on_error=lambda exc: self._apply_failed(exc, batch))
        except Stopped:
            log.warning("stopping while the database is unavailable; batch abandoned "
                        "(nothing of it was committed)")

    def _apply_failed(self, exc: BaseException, batch: _Batch) -> None:
        if isinstance(exc, (ConcurrentWriter, *RETRY_AT_ONCE)):
            log.info("batch retried after a concurrent write", reason=str(exc)[:80])
        else:
            self.health.db_ok = False
            log.warning("database error; batch will be retried",
                        error=type(exc).__name__, partitions=sorted(batch.next_offsets))

    async def _apply(self, batch: _Batch) -> None:
        """One attempt at the batch, unless the assignment changed since it was fetched."""
        assert self.pool is not None and self.consumer is not None
        async with self.lock:
            if batch.generation != self.generation:
                # assignment changed or re-seeked: fetched again from stored offsets
                log.info("batch dropped: partitions reassigned or re-seeked since it "
                         "was fetched", records=len(batch.records))
                return
            expected = {p: self.positions[p] for p in batch.next_offsets if p in self.positions}
            if len(expected) != len(batch.next_offsets):
                return
            if not batch.drop_before(expected):
                return
            expected = {p: expected[p] for p in batch.next_offsets}
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    db = store.SqlStore(conn, self.policies, hook=self.batch_hook,
                                        producers=self.producers)
                    outcome = await apply_batch(
                        db, group=self.group, topic=self.topic,
                        expected=expected, next_offsets=batch.next_offsets,
                        parsed=batch.parsed, messages=batch.records, tz=self.tz,
                        now=batch.now)
            except Fenced as fence:
                self.generation += 1   # drop batches fetched before this seek ...
                for p in batch.next_offsets:
                    self.positions[p] = fence.stored.get(p, expected[p])
                for p, offset in self.positions.items():   # ... and fetch theirs again
                    self.consumer.seek(TopicPartition(self.topic, p), offset)
                log.warning("batch fenced: another consumer stored these offsets; "
                            "re-seeking", partitions=sorted(batch.next_offsets))
                return
            self.health.db_ok = True
            self.positions.update(batch.next_offsets)
            self._record(outcome, batch.records)

    def _record(self, outcome: Outcome, records: list) -> None:
        self.batches += 1
        committed = time.time()
        for kind, n in outcome.applied.items():
            metrics.EVENTS.labels(kind, "applied").inc(n)
        for kind, n in outcome.duplicates.items():
            metrics.EVENTS.labels(kind, "duplicate").inc(n)
        for kind, n in outcome.quarantined_events.items():
            metrics.EVENTS.labels(kind, "quarantined").inc(n)
        for reason in outcome.quarantined:
            metrics.QUARANTINED_PLATES.inc()
            log.warning("plate quarantined: its stored history cannot be folded "
                        "(see `platereg quarantine list`)", reason=reason)
        for kind, n in outcome.notices.items():
            metrics.NOTICES.labels(kind).inc(n)
        for rej in outcome.rejected:
            metrics.EVENTS.labels(rej.type_label, "rejected").inc()
            metrics.DLQ.labels(rej.reason).inc()
            log.info("event rejected", partition=rej.partition, offset=rej.offset,
                     reason=rej.reason)
        metrics.APPLY_LATENCY.observe_many(
            max(0.0, committed - ts / 1000) for r in records if (ts := r.timestamp) and ts > 0)
        if outcome.status_changes and self.on_commit is not None:
            self.on_commit.set()
        if outcome.rejected and self.on_commit is not None:
            self.on_commit.set()
        log.debug("batch committed", records=len(records),
                  applied=sum(outcome.applied.values()),
                  duplicates=sum(outcome.duplicates.values()),
                  rejected=len(outcome.rejected), refolded=outcome.refolded,
                  status_changes=outcome.status_changes)

    def _update_lag(self) -> None:
        if self.consumer is None:
            return
        for p, pos in list(self.positions.items()):
            high = self.consumer.highwater(TopicPartition(self.topic, p))
            if high is not None:
                metrics.CONSUMER_LAG.labels(str(p)).set(max(0, high - pos))
