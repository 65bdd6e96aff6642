"""``platereg consume registry``: fold plates.events into PostgreSQL, exactly-once in effect.

One database transaction per ``getmany`` batch holds everything the batch
does: new events into the history, plates updated (incrementally, or re-folded
from the history when an event arrives late), status changes and rejections
recorded in their outboxes, and the consumed offsets stored. Kafka commits are
never made nor trusted: on every partition assignment the consumer seeks to
the offsets stored in the database.

Offsets are also a fence. Each batch locks the stored offset rows of its
partitions and checks they still equal where this consumer started the batch;
if another group member (after a rebalance) got there first, the batch is
rolled back and the partitions re-seek to the stored offsets. So an offset
range is applied by exactly one committed transaction.

Logs carry counts, partitions, offsets, reasons and event ids only: never a
plate, subject, owner or payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from notifications.events import record_batch_notices
from platereg import metrics
from platereg.clock import Clock
from platereg.db import create_pool, ping
from platereg.kafka import broker_reachable, ensure_topics, make_consumer
from platereg.logging import get_logger
from platereg.ops_server import OpsServer
from platereg.settings import Settings
from registry import store
from registry.batch import (
    Parsed,
    Record,
    Rejected,
    Unfoldable,
    authorize,
    classify,
    expand_compact,
    fold_history,
    parse_compact,
    parse_values,
    plan_plates,
    status_changes,
)
from registry.domain import today_in
from registry.policy_store import PolicyCache
from schemas import topics

log = get_logger(__name__)

#: Errors after which the batch is retried with backoff (database or network down).
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncio.TimeoutError, asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # the server went away in the middle of an operation ("cannot switch to state ...")
    asyncpg.InternalClientError,
)
#: Errors after which the batch is retried at once.
RETRY_AT_ONCE: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError, asyncpg.SerializationError,
)


class Fenced(Exception):
    """Another consumer stored offsets for these partitions first."""

    def __init__(self, stored: dict[int, int]) -> None:
        super().__init__("offsets moved by another consumer")
        self.stored = stored


class ConcurrentWriter(Exception):
    """A concurrent transaction wrote the same event id or created the same plate."""


@dataclass
class Outcome:
    applied: Counter = field(default_factory=Counter)       # type -> n
    duplicates: Counter = field(default_factory=Counter)    # type -> n
    rejected: list[Rejected] = field(default_factory=list)
    status_changes: int = 0
    refolded: int = 0
    quarantined: list[str] = field(default_factory=list)   # reasons of plates newly quarantined
    quarantined_events: Counter = field(default_factory=Counter)   # type -> n, stored unfolded
    notices: Counter = field(default_factory=Counter)       # kind -> n


async def apply_batch(
    conn: asyncpg.Connection, *, group: str, topic: str,
    expected: dict[int, int], next_offsets: dict[int, int],
    parsed: Sequence[Parsed | Rejected],
    raw: Mapping[tuple[int, int], tuple[bytes | None, bytes | None]],
    tz: dt.tzinfo, now: dt.datetime, policies: PolicyCache | None = None,
) -> Outcome:
    """Everything one batch does, in the caller's transaction.

    ``expected``: partition -> offset this consumer started the batch at;
    ``next_offsets``: partition -> offset after the batch; ``raw``:
    (partition, offset) -> (key, value) for dead-lettered records;
    ``policies``: the source policy cache (reloaded here when the stored policy
    changed; without one, the stored policy is read).
    """
    out = Outcome()
    stored = await store.lock_offsets(conn, group, topic, sorted(expected))
    if any(stored.get(p) != o for p, o in expected.items()):
        raise Fenced(stored)

    policy = await (policies or PolicyCache()).current(conn)
    events, out.rejected = authorize([p for p in parsed if isinstance(p, Parsed)], policy)
    out.rejected += [p for p in parsed if isinstance(p, Rejected)]
    known = (await store.known_fingerprints(conn, [e.identity for e in events])
             if events else {})
    cls = classify(events, known)
    out.rejected += cls.conflicts
    for ev in cls.duplicates:
        out.duplicates[ev.type] += 1

    if cls.new:
        if await store.insert_events(conn, cls.new) != len(cls.new):
            raise ConcurrentWriter("event id inserted concurrently")
        by_plate: dict[str, list[Parsed]] = {}
        for ev in cls.new:
            by_plate.setdefault(ev.plate_key, []).append(ev)
        await _fold_plates(conn, by_plate, out, tz, now)

    if out.rejected:
        await store.insert_dlq(conn, topic, [
            (r.partition, r.offset, *raw[(r.partition, r.offset)], r.reason, r.detail)
            for r in out.rejected
        ])
    await store.set_offsets(conn, group, topic, next_offsets)
    return out


async def _fold_plates(conn: asyncpg.Connection, by_plate: dict[str, list[Parsed]],
                       out: Outcome, tz: dt.tzinfo, now: dt.datetime) -> None:
    """Fold the batch's new events (already stored) into their plates. A plate whose
    stored state or history cannot be folded is quarantined (its events stay stored,
    its state is left alone); every other plate goes on."""
    held = await store.lock_quarantined(conn, list(by_plate))
    fold_now = {k: v for k, v in by_plate.items() if k not in held} if held else by_plate
    old = await store.lock_plates(conn, list(fold_now))
    broken: dict[str, Unfoldable] = {}
    new_states, refold = plan_plates(old, fold_now, broken)
    if refold:
        out.refolded = len(refold)
        hist = await store.history(conn, refold)
        for key in refold:
            first = fold_now[key][0]
            try:
                new_states[key] = fold_history(first.jurisdiction, first.plate, hist[key])
            except Unfoldable as exc:
                broken[key] = exc
    inserted = await store.upsert_plates(conn, list(new_states.values()))
    if any(k not in old and k not in inserted for k in new_states):
        raise ConcurrentWriter("plate created concurrently")
    changes = status_changes(old, new_states, today_in(tz, now), now)
    await store.insert_status_changes(conn, changes)
    out.status_changes = len(changes)
    # Owner notices of the applied events (contract section 4), in this transaction.
    out.notices = await record_batch_notices(
        conn, old, new_states, {k: v for k, v in fold_now.items() if k in new_states},
        {k: hist[k] for k in refold if k in new_states} if refold else {}, now)
    for key, events in by_plate.items():
        counter = out.applied if key in new_states else out.quarantined_events
        for ev in events:
            counter[ev.type] += 1
    if held or broken:
        out.quarantined = [exc.reason for exc in broken.values()]
        await store.quarantine(conn, [
            (key, exc.reason, exc.event_id, len(by_plate[key])) for key, exc in broken.items()
        ] + [(key, "", None, len(by_plate[key])) for key in held])


class _RawIndex:
    """(partition, offset) -> (key, value) of a batch's records, built on first use
    (only batches with rejections need it)."""

    def __init__(self, records: list) -> None:
        self.records = records
        self._index: dict[tuple[int, int], tuple[bytes | None, bytes | None]] | None = None

    def __getitem__(self, position: tuple[int, int]) -> tuple[bytes | None, bytes | None]:
        if self._index is None:
            self._index = {(r.partition, r.offset): (r.key, r.value) for r in self.records}
        return self._index[position]


class Health:
    """What /readyz reports: both servers reachable (checked in the background)."""

    def __init__(self) -> None:
        self.db_ok = False
        self.kafka_ok = False
        self.started = False

    def ready(self) -> bool:
        return self.started and self.db_ok and self.kafka_ok


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
                 on_commit: asyncio.Event | None = None, clock: Clock | None = None) -> None:
        self.settings = settings
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
            while not self.stop_event.is_set():
                try:
                    await self.consumer.start()
                    break
                except (KafkaError, OSError) as exc:
                    log.warning("broker not reachable; retrying", error=type(exc).__name__)
                    self.health.kafka_ok = False
                    await self._sleep(2)
            if self.stop_event.is_set():
                return
            self.consumer.subscribe([self.topic], listener=_Listener(self))
            self.health.started = True
            log.info("registry consumer started", group=self.group, topic=self.topic)
            await self._loop()
        finally:
            self.health.started = False
            with contextlib.suppress(Exception):
                await self.consumer.stop()   # leaves the group
            await self.pool.close()
            log.info("registry consumer stopped", batches=self.batches)

    async def _connect_db(self) -> asyncpg.Pool | None:
        delay = 0.5
        while not self.stop_event.is_set():
            try:
                pool = await create_pool(self.settings.dsn(), min_size=1, max_size=4,
                                         retry_for=5)
                self.health.db_ok = True
                return pool
            except DB_ERRORS as exc:
                self.health.db_ok = False
                log.warning("database not reachable; retrying", error=type(exc).__name__)
                await self._sleep(delay)
                delay = min(delay * 2, 10)
        return None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)

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
            delay = 0.5
            while True:
                try:
                    await self._seek_to_stored(tps)
                    break
                except (*DB_ERRORS, KafkaError) as exc:
                    log.warning("cannot read stored offsets; retrying",
                                error=type(exc).__name__)
                    if self.stop_event.is_set():
                        return
                    await self._sleep(delay)
                    delay = min(delay * 2, 10)
        log.info("partitions assigned", partitions=[tp.partition for tp in tps],
                 offsets={tp.partition: self.positions.get(tp.partition) for tp in tps})

    async def _seek_to_stored(self, tps: list[TopicPartition]) -> None:
        assert self.consumer is not None and self.pool is not None
        begin = await self.consumer.beginning_offsets(tps)
        end = await self.consumer.end_offsets(tps)
        async with self.pool.acquire() as conn:
            stored = await store.ensure_offsets(
                conn, self.group, self.topic, {tp.partition: begin[tp] for tp in tps})
            for tp in tps:
                offset = stored[tp.partition]
                start = offset
                if offset < begin[tp]:
                    log.warning("stored offset is before the log start (retention); "
                                "continuing at the log start", partition=tp.partition,
                                stored_offset=offset, log_start=begin[tp])
                    start = begin[tp]
                elif offset > end[tp]:
                    # end_offsets is exact on Apache Kafka but only a lower bound on
                    # Tansu: ask a fetch response for the real high watermark.
                    true_end = await self._log_end(tp, end[tp])
                    if true_end is not None and offset > true_end:
                        log.warning(
                            "stored offset is past the log end (topic recreated or broker "
                            "restarted without its data); starting from the log beginning",
                            partition=tp.partition, stored_offset=offset, log_end=true_end,
                            log_start=begin[tp])
                        start = begin[tp]
                if start != offset and not await store.reset_offset(
                        conn, self.group, self.topic, tp.partition, offset, start):
                    raise asyncpg.SerializationError("offset changed concurrently")
                self.consumer.seek(tp, start)
                self.positions[tp.partition] = start

    async def _log_end(self, tp: TopicPartition, reported_end: int) -> int | None:
        """The high watermark from a fetch response at the last reported record."""
        if reported_end == 0:
            return 0
        probe = make_consumer(self.settings, client_id="platereg-probe",
                              max_partition_fetch_bytes=8 * 1024 * 1024)
        try:
            await probe.start()
            probe.assign([tp])
            probe.seek(tp, reported_end - 1)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await probe.getmany(tp, timeout_ms=500, max_records=1)
                high = probe.highwater(tp)
                if high is not None:
                    return high
            log.warning("log end probe got no answer; keeping the stored offset",
                        partition=tp.partition)
            return None
        finally:
            with contextlib.suppress(Exception):
                await probe.stop()

    # ------------------------------------------------------------------ batches
    async def _loop(self) -> None:
        """Fetch, parse and apply; with a parse executor, batch n+1 is parsed while
        batch n is written (a pipeline of depth one)."""
        assert self.consumer is not None
        delay = 0.5
        pending: tuple | None = None
        try:
            while not self.stop_event.is_set():
                try:
                    batch = await self.consumer.getmany(
                        timeout_ms=0 if pending else 500, max_records=self.max_records)
                    delay = 0.5
                except KafkaError as exc:
                    log.warning("fetch failed; retrying", error=type(exc).__name__)
                    await self._sleep(delay)
                    delay = min(delay * 2, 10)
                    continue
                records = [r for tp in sorted(batch, key=lambda t: t.partition)
                           if tp.topic == self.topic for r in batch[tp]]
                fresh = self._start_parse(records, self.generation) if records else None
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

    def _start_parse(self, records: list, generation: int) -> tuple:
        now = self.clock.now()
        if self.parse_executor is None:
            parsed: object = parse_values(
                [Record(r.partition, r.offset, r.value) for r in records], now)
        else:
            parsed = asyncio.get_running_loop().run_in_executor(
                self.parse_executor, parse_compact, [r.value for r in records], now)
        return records, generation, now, parsed

    async def _handle(self, records: list, generation: int, now: dt.datetime,
                      parsed: object) -> None:
        assert self.pool is not None and self.consumer is not None
        if not isinstance(parsed, list):
            parsed = expand_compact(await parsed, records)  # type: ignore[misc]
        next_offsets: dict[int, int] = {}
        for r in records:
            next_offsets[r.partition] = r.offset + 1
        raw = _RawIndex(records)
        delay = 0.2
        while True:
            async with self.lock:
                if generation != self.generation:
                    # assignment changed or re-seeked: fetched again from stored offsets
                    log.info("batch dropped: partitions reassigned or re-seeked since it "
                             "was fetched", records=len(records))
                    return
                expected = {p: self.positions[p] for p in next_offsets if p in self.positions}
                if len(expected) != len(next_offsets):
                    return
                if any(r.offset < expected[r.partition] for r in records):
                    # Records from a fetch made before the last seek (aiokafka can hand
                    # them out after a partition is re-assigned): already applied, since
                    # the positions come from the database. Drop them.
                    kept = [i for i, r in enumerate(records) if r.offset >= expected[r.partition]]
                    log.info("dropped records before the stored offsets",
                             count=len(records) - len(kept))
                    records = [records[i] for i in kept]
                    parsed = [parsed[i] for i in kept]
                    raw = _RawIndex(records)
                    next_offsets = {}
                    for r in records:
                        next_offsets[r.partition] = r.offset + 1
                    if not records:
                        return
                    expected = {p: expected[p] for p in next_offsets}
                try:
                    async with self.pool.acquire() as conn, conn.transaction():
                        outcome = await apply_batch(
                            conn, group=self.group, topic=self.topic, expected=expected,
                            next_offsets=next_offsets, parsed=parsed, raw=raw, tz=self.tz,
                            now=now, policies=self.policies)
                except Fenced as fence:
                    self.generation += 1   # drop batches fetched before this seek
                    for p in next_offsets:
                        self.positions[p] = fence.stored.get(p, expected[p])
                        self.consumer.seek(TopicPartition(self.topic, p), self.positions[p])
                    log.warning("batch fenced: another consumer stored these offsets; "
                                "re-seeking", partitions=sorted(next_offsets))
                    return
                except (ConcurrentWriter, *RETRY_AT_ONCE) as exc:
                    log.info("batch retried after a concurrent write", reason=str(exc)[:80])
                    continue
                except DB_ERRORS as exc:
                    self.health.db_ok = False
                    log.warning("database error; batch will be retried",
                                error=type(exc).__name__, partitions=sorted(next_offsets))
                else:
                    self.health.db_ok = True
                    self.positions.update(next_offsets)
                    self._record(outcome, records)
                    return
            if self.stop_event.is_set():
                log.warning("stopping while the database is unavailable; batch abandoned "
                            "(nothing of it was committed)")
                return
            await self._sleep(delay)
            delay = min(delay * 2, 10)

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
        metrics.observe_many(metrics.APPLY_LATENCY, [
            max(0.0, committed - ts / 1000) for r in records if (ts := r.timestamp) and ts > 0])
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


# ---------------------------------------------------------------------- process

async def watch_health(settings: Settings, health: Health, pool_dsn: str,
                       stop: asyncio.Event, interval: float = 3.0) -> None:
    """Keep ``health`` current: PostgreSQL and the broker answer."""
    conn_pool: asyncpg.Pool | None = None
    try:
        while not stop.is_set():
            try:
                if conn_pool is None:
                    conn_pool = await create_pool(pool_dsn, min_size=1, max_size=1,
                                                  retry_for=1)
                health.db_ok = await ping(conn_pool)
            except Exception:  # noqa: BLE001 - readiness only reports
                health.db_ok = False
            health.kafka_ok = await broker_reachable(settings, timeout=2)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        if conn_pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn_pool.close(), 2)


# How long a graceful stop may take before the process exits hard. Exiting
# mid-batch is safe: the batch's transaction rolls back and its records are
# read again from the stored offsets.
STOP_GRACE_SECONDS = 10.0


def install_stop_signals(stop: asyncio.Event, grace: float = STOP_GRACE_SECONDS) -> None:
    """First SIGTERM/SIGINT: stop gracefully, at most ``grace`` seconds. Second: exit now."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)
        stop.set()
        # A thread, not the loop: it must fire even if the loop is stuck in a
        # retry against a database or broker that has gone away.
        timer = threading.Timer(grace, os._exit, args=(1,))
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


def _watch_owner(owner_pid: int) -> None:
    """Parse-worker initializer: exit when the consumer that owns us is gone.

    A ``kill -9`` of the consumer must not leave its worker processes behind.
    """

    def watch() -> None:
        while True:
            try:
                os.kill(owner_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="owner-watch").start()


def _worker_ready() -> bool:
    return True


def _warm_up(executor: Executor, workers: int) -> None:
    """Have the parse workers started (a worker imports this module, so the parse code
    too) before the first batch."""
    for f in [executor.submit(_worker_ready) for _ in range(workers)]:
        f.result()


async def serve_registry_consumer(settings: Settings, *, relays: bool = True,
                                  sweep: bool = True, metrics_port: int | None = None,
                                  max_records: int = 5000, parse_workers: int = 0) -> int:
    """The whole ``platereg consume registry`` process until SIGTERM/SIGINT."""
    from registry.expiry import run_sweeper
    from registry.relay import run_relays

    stop = asyncio.Event()
    install_stop_signals(stop)
    health = Health()
    ops = OpsServer(settings.host, settings.consumer_metrics_port if metrics_port is None
                    else metrics_port, health.ready)
    await ops.start()
    executor = None
    warm_up: asyncio.Task | None = None
    if parse_workers > 0:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(parse_workers,
                                       mp_context=multiprocessing.get_context("forkserver"),
                                       initializer=_watch_owner, initargs=(os.getpid(),))
        # Start the workers now (in a thread: starting the fork server blocks), so
        # they are up by the end of the group join instead of at the first batch.
        warm_up = asyncio.create_task(asyncio.to_thread(_warm_up, executor, parse_workers))
    wakeup = asyncio.Event()
    consumer = RegistryConsumer(settings, max_records=max_records, parse_executor=executor,
                                health=health, on_commit=wakeup)
    tasks = [asyncio.create_task(watch_health(settings, health, settings.dsn(), stop))]
    with contextlib.suppress(Exception):
        await ensure_topics(settings, retry_for=10)
    if relays:
        tasks.append(asyncio.create_task(run_relays(settings, stop, wakeup)))
    if sweep:
        tasks.append(asyncio.create_task(run_sweeper(settings, stop, wakeup)))
    try:
        await consumer.run(stop)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ops.stop()
        if executor is not None:
            if warm_up is not None:
                with contextlib.suppress(Exception):
                    await warm_up
            executor.shutdown(cancel_futures=True)
    return 0
