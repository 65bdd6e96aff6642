"""The read audit trail: every read's rows committed to ``audit_log`` before it is answered,
written in batches, bounded, never skipped.

Routes ``await`` :meth:`AuditWriter.write` with the rows of their answer. The writer
queues them and a background task writes everything queued with one binary ``COPY``
(:func:`insert_rows`: its own transaction, whatever the row count), up to
``concurrency`` copies at once; the rows that arrive meanwhile go into the next one,
so concurrent reads share a round trip and a commit. ``write`` returns once the copy
holding its rows has committed, and only then does the route answer.

What survives what: an answered read's rows are committed, so a SIGKILL, OOM kill or
crash of an API process loses none of them, nor does a power loss of the host (they are
PostgreSQL's). A read whose answer the kill cut off may have its rows written too (it
was looked up). A write that fails (PostgreSQL unreachable, a lock held on ``audit_log``
past ``write_timeout``, any exception) fails every read whose rows it held: they answer
503, and nothing is retried behind their back, so no row is written twice. A write whose
commit answer was lost counts as failed; its rows may be in ``audit_log`` for reads that
answered 503.

The queue is bounded: when ``max_pending`` rows are waiting, :meth:`AuditWriter.write`
raises :class:`AuditUnavailable` at once and the route answers 503. A failed write is
logged by exception type only (never the rows: they hold plates and owner ids) and counted
in ``platereg_audit_write_failures_total{error}``. :meth:`AuditWriter.oldest_age` (the age
of the oldest row not yet committed) drives ``/readyz`` and
``platereg_audit_oldest_unwritten_seconds``; :attr:`AuditWriter.pending`
``platereg_audit_backlog``. Why this path and not a local journal or the read's own
statement: docs/decisions.md; the figures: docs/benchmarks.md.

Rows are tuples in :data:`ROW_COLUMNS` order (missing trailing values of
:data:`EXTRA_COLUMNS` are NULL).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from platereg.logging import get_logger
from platereg.metrics import AUDIT_BACKLOG, AUDIT_OLDEST, AUDIT_REFUSED, AUDIT_WRITE_FAILURES
from platereg.settings import Settings

log = get_logger(__name__)

AUDIT_COLUMNS = ("at", "key_id", "kind", "jurisdiction", "plate", "purpose", "result")
#: Optional trailing values of a row: the owner whose record was read (migration 0011),
#: the reader's case reference and the `at` of a past view (migration 0010).
EXTRA_COLUMNS = ("owner_id", "case_ref", "as_at")
ROW_COLUMNS = AUDIT_COLUMNS + EXTRA_COLUMNS
AuditRow = tuple[Any, ...]
_WIDTH = len(ROW_COLUMNS)

#: Every live writer of this process: the backlog gauges are read at scrape time
#: (nothing on the read path).
_WRITERS: weakref.WeakSet[AuditWriter] = weakref.WeakSet()
AUDIT_BACKLOG.set_function(lambda: sum(w.pending for w in list(_WRITERS)))
AUDIT_OLDEST.set_function(lambda: max((w.oldest_age() for w in list(_WRITERS)), default=0.0))


async def insert_rows(conn: asyncpg.Connection, rows: Sequence[AuditRow], *,
                      timeout: float | None = None) -> None:
    """Full-width ``rows`` into ``audit_log`` by one binary ``COPY`` (it needs only the
    INSERT privilege; the table's row triggers fire as for an INSERT). Cheaper on the
    API's CPU than one INSERT of column arrays: docs/benchmarks.md."""
    await conn.copy_records_to_table("audit_log", records=rows, columns=ROW_COLUMNS,
                                     timeout=timeout)


class AuditUnavailable(RuntimeError):
    """The read's audit rows cannot be written: refuse the read."""


def _full(row: Sequence[Any]) -> AuditRow:
    if len(row) == _WIDTH:
        return tuple(row)
    if not len(AUDIT_COLUMNS) <= len(row) < _WIDTH:
        raise ValueError(f"an audit row has {len(AUDIT_COLUMNS)} to {_WIDTH} values")
    return (*row, *(None,) * (_WIDTH - len(row)))


def stamped(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Audit rows with the time of the real clock: when the read happened, whatever the
    registry's clock says (``PLATEREG_CLOCK_OFFSET_SECONDS`` shifts it in tests); the
    database refuses a row time ahead of its own clock (migration 0021)."""
    now = dt.datetime.now(dt.UTC)
    return [(now, *row[1:]) for row in rows]


class _Waiting:
    """The rows of one answer and the future its route awaits."""

    __slots__ = ("rows", "done", "since")

    def __init__(self, rows: list[AuditRow], done: asyncio.Future[None]) -> None:
        self.rows = rows
        self.done = done
        self.since = time.monotonic()


class AuditWriter:
    """Writes the audit rows of concurrent reads in shared statements (up to ``concurrency``
    at once); each read waits for its own."""

    def __init__(self, pool: asyncpg.Pool, *, batch_size: int = 20_000,
                 max_pending: int = 50_000, write_timeout: float = 10.0,
                 concurrency: int = 2) -> None:
        self.pool = pool
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.write_timeout = write_timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._queue: list[_Waiting] = []
        self._writing: dict[asyncio.Task[None], float] = {}   # batches being written, since
        self._pending = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.writes = 0
        self.failed_writes = 0
        #: When the latest write failed, if none has committed since (monotonic time).
        self.failing_since: float | None = None
        _WRITERS.add(self)

    @property
    def pending(self) -> int:
        """Rows queued or being written."""
        return self._pending

    def failing(self, within: float) -> bool:
        """The latest write failed less than ``within`` seconds ago and none has committed
        since (a full disk, PostgreSQL refusing writes): its reads answered 503."""
        return (self.failing_since is not None
                and time.monotonic() - self.failing_since < within)

    def oldest_age(self) -> float:
        """Seconds the oldest unwritten row has been waiting (0 when none)."""
        since = list(self._writing.values())
        if self._queue:
            since.append(self._queue[0].since)
        return time.monotonic() - min(since) if since else 0.0

    async def write(self, rows: Iterable[Sequence[Any]]) -> None:
        """Commit the rows of one answer (all or none); AuditUnavailable when the queue is
        full, the writer is stopped or the statement holding them failed."""
        full = [_full(r) for r in rows]
        if not full:
            return
        if (self._stopping or self._task is None or self._task.done()
                or self._pending + len(full) > self.max_pending):
            AUDIT_REFUSED.inc()   # stopped, not started or full: nothing would write them
            raise AuditUnavailable("the audit log is not keeping up")
        waiting = _Waiting(full, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        self._pending += len(full)
        self._wake.set()
        try:
            # Not shielded: a cancelled read (its client gone) cancels only its future; its
            # rows stay queued and are written, and the writer skips a future already done.
            await waiting.done
        except AuditUnavailable:
            AUDIT_REFUSED.inc()
            raise

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    def _take(self) -> list[_Waiting]:
        """The oldest queued answers, up to ``batch_size`` rows (at least one answer)."""
        taken, rows = 0, 0
        for waiting in self._queue:
            if taken and rows + len(waiting.rows) > self.batch_size:
                break
            taken += 1
            rows += len(waiting.rows)
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    async def _run(self) -> None:
        """Start a write of what is queued whenever a slot is free; at stop, finish them."""
        while not self._stopping or self._queue:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._slots.acquire()
            batch = self._take()
            task = asyncio.create_task(self._write(batch))
            self._writing[task] = batch[0].since
            task.add_done_callback(self._written)
        await asyncio.gather(*self._writing)

    def _written(self, task: asyncio.Task[None]) -> None:
        del self._writing[task]
        self._slots.release()

    async def _write(self, batch: list[_Waiting]) -> None:
        """One statement with the batch's rows; each waiting read learns how it went."""
        records = [row for waiting in batch for row in waiting.rows]
        error: BaseException | None = None
        try:
            async with self.pool.acquire() as conn:
                await insert_rows(conn, records, timeout=self.write_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure fails these reads (503)
            error = exc
            self._failed(exc, len(records))
        else:
            self.written += len(records)
            self.failing_since = None
            self.writes += 1
        self._pending -= len(records)
        for waiting in batch:
            if waiting.done.done():
                continue
            if error is None:
                waiting.done.set_result(None)
            else:
                waiting.done.set_exception(AuditUnavailable("the audit log cannot be written"))

    def _failed(self, exc: BaseException, rows: int) -> None:
        """Count and log one failed write: the exception type only, never its text or rows."""
        self.failed_writes += 1
        self.failing_since = time.monotonic()
        error = type(exc).__name__
        AUDIT_WRITE_FAILURES.labels(error).inc()
        log.warning("audit write failed; its reads answer 503", error_type=error, rows=rows)

    async def stop(self, timeout: float = 30.0) -> None:
        """Refuse new rows, write those already queued (their reads are waiting), stop."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, timeout)
        except TimeoutError:
            log.error("audit rows left unwritten at shutdown; their reads answer 503",
                      count=self.pending)
        for waiting in self._queue:
            if not waiting.done.done():
                waiting.done.set_exception(AuditUnavailable("the API is stopping"))
        self._queue = []


async def start_writer(pool: asyncpg.Pool, settings: Settings) -> AuditWriter:
    """The registry API's writer, started."""
    writer = AuditWriter(pool, max_pending=settings.audit_max_pending)
    writer.start()
    return writer
