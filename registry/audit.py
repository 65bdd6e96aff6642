"""The read audit trail: buffered, written in the background, bounded, never skipped.

Routes call :meth:`AuditWriter.record` / :meth:`AuditWriter.record_many` (a list
append: no I/O, no await) and answer at once. A background task copies the
buffered rows into ``audit_log`` with ``COPY`` every ``interval`` seconds, or
sooner when ``batch_size`` rows are waiting. :meth:`AuditWriter.stop` (the
API's lifespan shutdown, i.e. SIGTERM/SIGINT through uvicorn) flushes
everything still buffered before the pool closes.

The buffer is bounded: when ``max_pending`` rows are waiting (PostgreSQL down,
a lock held on ``audit_log``, a flood), :meth:`record_many` raises
:class:`AuditUnavailable` and the route answers 503: a read that cannot be
audited is not served. A failed write of any kind (not only database errors)
is logged by exception type only (never the rows: they hold plates and owner
ids), counted in ``platereg_audit_write_failures_total{error}`` and retried
with exponential backoff (tenacity); the rows stay buffered until PostgreSQL
has them. The writer task never ends on its own (it is restarted if it ever
does). :meth:`AuditWriter.oldest_age` (the age of the oldest unwritten row)
drives ``/readyz`` and ``platereg_audit_oldest_unwritten_seconds``. A crash
(SIGKILL, power loss) can lose the rows of the last ``interval`` at most;
that is the price of not writing the audit row inside every read.

Rows are tuples in :data:`AUDIT_COLUMNS` order, optionally followed by the
values of :data:`EXTRA_COLUMNS` (missing trailing values are NULL).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from platereg.logging import get_logger
from platereg.metrics import AUDIT_BACKLOG, AUDIT_OLDEST, AUDIT_REFUSED, AUDIT_WRITE_FAILURES

log = get_logger(__name__)

AUDIT_COLUMNS = ("at", "key_id", "kind", "jurisdiction", "plate", "purpose", "result")
#: Optional trailing values of a row: the owner whose record was read (migration 0011),
#: the reader's case reference and the `at` of a past view (migration 0010).
EXTRA_COLUMNS = ("owner_id", "case_ref", "as_at")
COPY_COLUMNS = AUDIT_COLUMNS + EXTRA_COLUMNS
PURGE_LOCK_ID = 0x706C617465617564  # advisory lock shared by every purge (CLI and schedule)
AuditRow = tuple[Any, ...]
_WIDTH = len(COPY_COLUMNS)

#: Every live writer of this process: the backlog gauges are read at scrape time
#: (nothing on the read path).
_WRITERS: weakref.WeakSet[AuditWriter] = weakref.WeakSet()
AUDIT_BACKLOG.set_function(lambda: sum(w.pending for w in list(_WRITERS)))
AUDIT_OLDEST.set_function(lambda: max((w.oldest_age() for w in list(_WRITERS)), default=0.0))


class AuditUnavailable(RuntimeError):
    """Too many audit rows are waiting for the database: refuse the read."""


def _full(row: Sequence[Any]) -> AuditRow:
    if len(row) == _WIDTH:
        return tuple(row)
    if not len(AUDIT_COLUMNS) <= len(row) < _WIDTH:
        raise ValueError(f"an audit row has {len(AUDIT_COLUMNS)} to {_WIDTH} values")
    return (*row, *(None,) * (_WIDTH - len(row)))


class AuditWriter:
    def __init__(self, pool: asyncpg.Pool, *, batch_size: int = 5000, interval: float = 0.2,
                 max_pending: int = 50_000, max_backoff: float = 5.0,
                 write_timeout: float = 30.0) -> None:
        self.pool = pool
        self.batch_size = batch_size
        self.interval = interval
        self.max_pending = max_pending
        self.max_backoff = max_backoff
        self.write_timeout = write_timeout
        self._buffer: list[AuditRow] = []
        #: [rows, monotonic time buffered] per record call, oldest first (for oldest_age).
        self._marks: deque[list[Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._flush_lock = asyncio.Lock()
        self.written = 0
        self.failed_flushes = 0
        _WRITERS.add(self)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def oldest_age(self) -> float:
        """Seconds the oldest unwritten row has been waiting (0 when none)."""
        return time.monotonic() - self._marks[0][1] if self._marks else 0.0

    def record(self, key_id: str, kind: str, jurisdiction: str | None, plate: str | None,
               purpose: str | None, result: str, at: dt.datetime | None = None,
               owner_id: str | None = None) -> None:
        """Buffer one audit row (never blocks); AuditUnavailable when the buffer is full."""
        self.record_many([(at or dt.datetime.now(dt.UTC), key_id, kind, jurisdiction, plate,
                           purpose, result, owner_id)])

    def record_many(self, rows: Iterable[Sequence[Any]]) -> None:
        """Buffer the rows of one answer, all or none (AuditUnavailable when full)."""
        full = [_full(r) for r in rows]
        if not full:
            return
        if len(self._buffer) + len(full) > self.max_pending:
            AUDIT_REFUSED.inc()
            raise AuditUnavailable("the audit log is not keeping up")
        self._buffer.extend(full)
        self._marks.append([len(full), time.monotonic()])
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def _written(self, n: int) -> None:
        del self._buffer[:n]
        self.written += n
        while n and self._marks:
            mark = self._marks[0]
            taken = min(n, mark[0])
            mark[0] -= taken
            n -= taken
            if mark[0] == 0:
                self._marks.popleft()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The task never ends before stop(); if it somehow does, say so and start again."""
        if self._stopping or task is not self._task:
            return
        self._task = None
        if task.cancelled():
            log.error("audit writer task cancelled; restarting it")
        else:
            log.error("audit writer task ended; restarting it",
                      error_type=type(task.exception()).__name__)
        self.start()

    def _failed(self, exc: BaseException | None) -> None:
        """Count and log one failed write: the exception type only, never its text or rows."""
        self.failed_flushes += 1
        error = type(exc).__name__
        AUDIT_WRITE_FAILURES.labels(error).inc()
        log.warning("audit write failed; retrying", error_type=error, pending=self.pending,
                    oldest_seconds=round(self.oldest_age(), 3))

    def _before_sleep(self, state: RetryCallState) -> None:
        self._failed(state.outcome.exception() if state.outcome else None)

    async def _run(self) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=self.interval, max=self.max_backoff),
            stop=lambda _: self._stopping, before_sleep=self._before_sleep, reraise=True)
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()
            try:
                async for attempt in retrying:
                    with attempt:
                        await self.flush()
            except Exception as exc:  # noqa: BLE001 - stopping: stop() writes the rest
                self._failed(exc)

    async def flush(self) -> int:
        """Write every buffered row now; returns how many were written."""
        total = 0
        async with self._flush_lock:
            while self._buffer:
                batch = self._buffer[: self.batch_size]
                async with self.pool.acquire() as conn:
                    await conn.copy_records_to_table("audit_log", records=batch,
                                                     columns=COPY_COLUMNS,
                                                     timeout=self.write_timeout)
                    # Drop the rows once PostgreSQL has them (new ones were appended
                    # behind), before the release, which can fail if the server goes away.
                    self._written(len(batch))
                    total += len(batch)
        return total

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop the task and flush what is left (retrying until ``timeout``)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task
        deadline = asyncio.get_running_loop().time() + timeout
        while self._buffer:
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - any failure: count, log, retry
                self._failed(exc)
                if asyncio.get_running_loop().time() > deadline:
                    log.error("audit rows lost at shutdown", count=self.pending,
                              error_type=type(exc).__name__)
                    return
                await asyncio.sleep(0.5)


async def purge(conn: asyncpg.Connection, retention_days: int, *,
                chunk: int = 10_000) -> int | None:
    """Delete audit rows older than ``retention_days``, in chunks.

    Returns the number deleted, or None when another process is purging
    (session advisory lock, so only one purge runs at a time however many API
    processes schedule it).
    """
    if retention_days < 1:
        raise ValueError("retention must be at least one day")
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PURGE_LOCK_ID):
        return None
    try:
        deleted = 0
        while True:
            status = await conn.execute(
                "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log"
                " WHERE at < now() - make_interval(days => $1) ORDER BY at LIMIT $2)",
                retention_days, chunk,
            )
            n = int(status.split()[-1])
            deleted += n
            if n < chunk:
                return deleted
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK_ID)


async def purge_periodically(pool: asyncpg.Pool, retention_days: int,
                             every: float = 3600.0, first_after: float = 60.0) -> None:
    """The in-process schedule: purge every ``every`` seconds (one process at a time)."""
    await asyncio.sleep(first_after)
    while True:
        try:
            async with pool.acquire() as conn:
                deleted = await purge(conn, retention_days)
            if deleted:
                log.info("audit rows purged", count=deleted, retention_days=retention_days)
        except Exception as exc:  # noqa: BLE001 - the schedule keeps going whatever failed
            log.warning("audit purge failed", error_type=type(exc).__name__)
        await asyncio.sleep(every)
