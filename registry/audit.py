"""The lookup audit trail: written in the background, in batches, never lost on a clean stop.

Routes call :meth:`AuditWriter.record` (a list append: no I/O, no await) and
answer at once. A background task copies the buffered rows into
``audit_log`` with ``COPY`` every ``interval`` seconds, or sooner when
``batch_size`` rows are waiting. :meth:`AuditWriter.stop` (the API's
lifespan shutdown, i.e. SIGTERM/SIGINT through uvicorn) flushes everything
still buffered before the pool closes.

If PostgreSQL refuses a batch, the rows stay buffered and are retried with
backoff. When more than ``max_pending`` rows are waiting, :meth:`record`
raises :class:`AuditUnavailable` and the route answers 503: a lookup that
cannot be audited is not served. A crash (SIGKILL, power loss) can lose the
rows of the last ``interval`` at most; that is the price of not writing the
audit row inside every lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import weakref
from collections.abc import Iterable

import asyncpg

from platereg.logging import get_logger
from platereg.metrics import AUDIT_BACKLOG

log = get_logger(__name__)

AUDIT_COLUMNS = ("at", "key_id", "kind", "jurisdiction", "plate", "purpose", "result")
PURGE_LOCK_ID = 0x706C617465617564  # advisory lock shared by every purge (CLI and schedule)
#: A flush that fails with one of these is retried. asyncpg raises InternalClientError
#: ("release() called on a free connection holder", "cannot switch to state ...") when
#: the server goes away in the middle of an operation.
FLUSH_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
AuditRow = tuple[dt.datetime, str, str, str, str, str | None, str]


#: Every live writer of this process: ``platereg_audit_backlog`` is the sum of their
#: buffered rows, read at scrape time (nothing on the lookup path).
_WRITERS: weakref.WeakSet[AuditWriter] = weakref.WeakSet()
AUDIT_BACKLOG.set_function(lambda: sum(w.pending for w in list(_WRITERS)))


class AuditUnavailable(RuntimeError):
    """Too many audit rows are waiting for the database: refuse the lookup."""


class AuditWriter:
    def __init__(self, pool: asyncpg.Pool, *, batch_size: int = 5000, interval: float = 0.2,
                 max_pending: int = 500_000) -> None:
        self.pool = pool
        self.batch_size = batch_size
        self.interval = interval
        self.max_pending = max_pending
        self._buffer: list[AuditRow] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._flush_lock = asyncio.Lock()
        self.written = 0
        _WRITERS.add(self)
        self.failed_flushes = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def record(self, key_id: str, kind: str, jurisdiction: str, plate: str,
               purpose: str | None, result: str, at: dt.datetime | None = None) -> None:
        """Buffer one audit row (never blocks)."""
        self._check_room(1)
        self._buffer.append((at or dt.datetime.now(dt.UTC), key_id, kind, jurisdiction, plate,
                             purpose, result))
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def record_many(self, rows: Iterable[AuditRow]) -> None:
        rows = list(rows)
        self._check_room(len(rows))
        self._buffer.extend(rows)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def _check_room(self, n: int) -> None:
        if len(self._buffer) + n > self.max_pending:
            raise AuditUnavailable("the audit log is not keeping up")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def _run(self) -> None:
        backoff = self.interval
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            try:
                await self.flush()
                backoff = self.interval
            except FLUSH_ERRORS as exc:
                self.failed_flushes += 1
                log.warning("audit flush failed; will retry", error_type=type(exc).__name__,
                            pending=self.pending)
                backoff = min(5.0, backoff * 2)

    async def flush(self) -> int:
        """Write every buffered row now; returns how many were written."""
        total = 0
        async with self._flush_lock:
            while self._buffer:
                batch = self._buffer[: self.batch_size]
                async with self.pool.acquire() as conn:
                    await conn.copy_records_to_table("audit_log", records=batch,
                                                     columns=AUDIT_COLUMNS)
                    # Drop the rows once PostgreSQL has them (new ones were appended
                    # behind), before the release, which can fail if the server goes away.
                    del self._buffer[: len(batch)]
                    total += len(batch)
                    self.written += len(batch)
        return total

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop the task and flush what is left (retrying until ``timeout``)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = asyncio.get_running_loop().time() + timeout
        while self._buffer:
            try:
                await self.flush()
            except FLUSH_ERRORS as exc:
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
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("audit purge failed", error_type=type(exc).__name__)
        await asyncio.sleep(every)
