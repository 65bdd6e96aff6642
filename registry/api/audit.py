"""The read audit trail: journaled, buffered, written in the background, bounded, never
skipped, each row once.

Routes call :meth:`AuditWriter.record` / :meth:`AuditWriter.record_many` (no await, no
database round trip) and answer at once. In the API (:func:`start_writer`) the rows of
each answer are first appended to the process's journal (``registry.api.audit_journal``: one
``os.write`` on an ``O_APPEND`` file in ``PLATEREG_AUDIT_JOURNAL_DIR``, no fsync) and
given ids (``row_id``: the journal's random writer id and a sequence number, unique in
``audit_log``, migration 0013), then buffered in memory. A background task copies the
buffered rows into ``audit_log`` with ``COPY`` every ``interval`` seconds, or sooner when
``batch_size`` rows are waiting; before each flush it seals the journal segment
(fdatasync in a thread) and deletes a sealed segment once all its rows are committed.
:meth:`AuditWriter.stop` (the API's lifespan shutdown, i.e. SIGTERM/SIGINT through
uvicorn) flushes everything still buffered and deletes the journal.

Exactly once, and what survives what:

* SIGKILL, OOM kill or crash of an API process: each row answered is in the journal (the
  write returned before the answer was sent; the kernel keeps it after the process is
  gone). The next API process to start on the host (a restarted one, uvicorn's
  replacement worker, a sibling checking every ``claim_every`` seconds, or one stopping
  cleanly) claims journals whose ``fcntl.flock`` nobody holds, so a live process's
  journal is never taken, and inserts their rows with ``ON CONFLICT (row_id) DO
  NOTHING``: rows the dead process had already committed are not written twice. Then it
  deletes them. A row of a read whose answer the kill cut off may be written too (it was
  looked up); a torn last line (killed inside ``write``) was never answered and is
  skipped.
* A COPY that committed but whose answer was lost (connection dropped) is retried; the
  unique ``row_id`` makes the retry fail, and the batch is inserted again with ``ON
  CONFLICT DO NOTHING``: no row twice.
* Power loss or a kernel crash of the host: not covered for the newest rows. Every flush
  attempt seals and fdatasyncs the segment first, and committed rows are PostgreSQL's;
  the rows appended since the last seal (the last ``interval``, up to ``max_backoff``
  while PostgreSQL is unreachable) may be lost with the page cache. Losing the
  journal's disk loses the rows not yet committed.
* A journal left for longer than the retention (the database's, which ``platereg migrate``
  writes from ``PLATEREG_AUDIT_RETENTION_DAYS``) is replayed without its rows past
  retention, less an hour (the purge would delete them, and may have; the database
  refuses a row past retention, migration 0021).
* A journal written for another database (same directory, another
  ``PLATEREG_DATABASE_URL``) is left alone and reported once (by writer id only).

The buffer is bounded: when ``max_pending`` rows are waiting (PostgreSQL down, a lock
held on ``audit_log``, a flood), :meth:`record_many` raises :class:`AuditUnavailable`
and the route answers 503: a read that cannot be audited is not served; so does a
journal write that fails (disk full, I/O error). A failed write of any kind (not only
database errors) is logged by exception type only (never the rows: they hold plates and
owner ids; nor the journal's contents), counted in
``platereg_audit_write_failures_total{error}`` and retried with exponential backoff
(tenacity); the rows stay buffered until PostgreSQL has them. The writer task never ends
on its own (it is restarted if it ever does). :meth:`AuditWriter.oldest_age` (the age of
the oldest unwritten row) drives ``/readyz`` and
``platereg_audit_oldest_unwritten_seconds``. Rows replayed from other processes'
journals are counted in ``platereg_audit_replayed_total``.

Rows are tuples in :data:`COPY_COLUMNS` order (missing trailing values of
:data:`EXTRA_COLUMNS` are NULL); the writer adds the ``row_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import time
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from platereg.logging import get_logger
from platereg.metrics import (
    AUDIT_BACKLOG,
    AUDIT_OLDEST,
    AUDIT_REFUSED,
    AUDIT_REPLAYED,
    AUDIT_WRITE_FAILURES,
)
from platereg.settings import ConfigError, Settings
from registry.api.audit_journal import (
    AuditJournal,
    Orphan,
    claim_orphans,
    row_id,
    sync_and_close,
)

log = get_logger(__name__)

AUDIT_COLUMNS = ("at", "key_id", "kind", "jurisdiction", "plate", "purpose", "result")
#: Optional trailing values of a row: the owner whose record was read (migration 0011),
#: the reader's case reference and the `at` of a past view (migration 0010).
EXTRA_COLUMNS = ("owner_id", "case_ref", "as_at")
COPY_COLUMNS = AUDIT_COLUMNS + EXTRA_COLUMNS
#: What the writer stores: the route's values and the row's unique id (migration 0013).
DB_COLUMNS = COPY_COLUMNS + ("row_id",)
_TYPES = ("timestamptz",) + ("text",) * 8 + ("timestamptz", "uuid")
#: Rows that may already be there (a journal replayed, a COPY whose commit answer was
#: lost): each kept once, by its row_id.
INSERT_NEW = (f"INSERT INTO audit_log ({', '.join(DB_COLUMNS)}) SELECT * FROM unnest("
              + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_TYPES, 1))
              + ") ON CONFLICT (row_id) DO NOTHING")
AuditRow = tuple[Any, ...]
#: A replayed journal's rows this close to the retention are left out too: the database,
#: whose clock may differ a little, would refuse a row past it.
REPLAY_MARGIN = dt.timedelta(hours=1)
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


def stamped(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Audit rows with the time of the real clock: when the read happened, whatever the
    registry's clock says (``PLATEREG_CLOCK_OFFSET_SECONDS`` shifts it in tests); the
    database refuses a row time ahead of its own clock (migration 0021)."""
    now = dt.datetime.now(dt.UTC)
    return [(now, *row[1:]) for row in rows]



class AuditWriter:
    """Buffers audit rows (journaled first when it has a journal) and writes them in batches.

    Without a ``journal`` (tests of the writer alone) a SIGKILL loses the buffered rows;
    the API always gives it one (:func:`start_writer`)."""

    def __init__(self, pool: asyncpg.Pool, *, batch_size: int = 5000, interval: float = 0.2,
                 max_pending: int = 50_000, max_backoff: float = 5.0,
                 write_timeout: float = 30.0, journal: AuditJournal | None = None,
                 claim_every: float = 60.0) -> None:
        self.pool = pool
        self.batch_size = batch_size
        self.interval = interval
        self.max_pending = max_pending
        self.max_backoff = max_backoff
        self.write_timeout = write_timeout
        self.journal = journal
        self.claim_every = claim_every
        self._id = journal.writer if journal is not None else secrets.token_hex(8)
        self._seq = 0
        self._buffer: list[AuditRow] = []
        #: [rows, monotonic time buffered] per record call, oldest first (for oldest_age).
        self._marks: deque[list[Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._flush_lock = asyncio.Lock()
        self._foreign: set[str] = set()   # other databases' journals, reported once
        self.written = 0
        self.replayed = 0
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
        """Journal and buffer the rows of one answer, all or none (AuditUnavailable when
        the buffer is full or the journal cannot be written)."""
        full = [_full(r) for r in rows]
        if not full:
            return
        if len(self._buffer) + len(full) > self.max_pending:
            AUDIT_REFUSED.inc()
            raise AuditUnavailable("the audit log is not keeping up")
        first = self._seq
        self._seq += len(full)
        if self.journal is not None:
            try:
                self.journal.append(first, full)
            except OSError as exc:   # disk full, I/O error: the read cannot be audited
                AUDIT_REFUSED.inc()
                AUDIT_WRITE_FAILURES.labels(f"journal_{type(exc).__name__}").inc()
                log.error("audit journal write failed; refusing the read",
                          error_type=type(exc).__name__)
                raise AuditUnavailable("the audit journal cannot be written") from None
        writer = self._id
        self._buffer.extend([(*row, row_id(writer, first + i)) for i, row in enumerate(full)])
        self._marks.append([len(full), time.monotonic()])
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def _written(self, n: int) -> None:
        if self.journal is not None:
            self.journal.committed(int(self._buffer[n - 1][-1][16:], 16))
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
        next_claim = 0.0   # at once: the journals of processes gone before this one started
        while not self._stopping:
            if self.journal is not None and time.monotonic() >= next_claim:
                try:
                    await self.recover()
                    next_claim = time.monotonic() + self.claim_every
                except Exception as exc:  # noqa: BLE001 - retried on the next round
                    self._failed(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()
            try:
                async for attempt in retrying:
                    with attempt:
                        await self.flush()
            except Exception as exc:  # noqa: BLE001 - stopping: stop() writes the rest
                self._failed(exc)

    async def _seal(self) -> None:
        """Close the journal segment that the rows being written are in (synced, in a
        thread: from now on they survive a power loss too) and start the next."""
        fd = self.journal.seal() if self.journal is not None else None
        if fd is not None:
            try:
                await asyncio.to_thread(sync_and_close, fd)
            except OSError as exc:   # the rows are still in the page cache and the buffer
                log.warning("audit journal sync failed", error_type=type(exc).__name__)

    async def flush(self) -> int:
        """Write every buffered row now; returns how many were written."""
        total = 0
        async with self._flush_lock:
            await self._seal()
            while self._buffer:
                batch = self._buffer[: self.batch_size]
                async with self.pool.acquire() as conn:
                    await _write(conn, batch, self.write_timeout)
                    # Drop the rows once PostgreSQL has them (new ones were appended
                    # behind), before the release, which can fail if the server goes away.
                    self._written(len(batch))
                    total += len(batch)
        return total

    async def recover(self) -> int:
        """Write the rows of the journals of processes that are gone (each row once), then
        delete those journals; returns how many rows were new to ``audit_log``."""
        if self.journal is None:
            return 0
        orphans = await asyncio.to_thread(claim_orphans, self.journal.directory, self._id)
        inserted = 0
        try:
            while orphans:
                inserted += await self._replay(orphans[0])
                orphans.pop(0)
        finally:
            for orphan in orphans:
                orphan.release()
        return inserted

    async def _replay(self, orphan: Orphan) -> int:
        async with self.pool.acquire() as conn:
            days = await conn.fetchval("SELECT days FROM retention WHERE kind = 'audit'")
        not_before = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days) + REPLAY_MARGIN
                      if days else None)
        database, rows, skipped = await asyncio.to_thread(orphan.read, not_before)
        assert self.journal is not None
        if database is not None and database != self.journal.database:
            if orphan.writer not in self._foreign:
                self._foreign.add(orphan.writer)
                log.warning("audit journal of another database left alone",
                            journal=orphan.writer)
            orphan.release()
            return 0
        inserted = 0
        for i in range(0, len(rows), self.batch_size):
            async with self.pool.acquire() as conn:
                inserted += await insert_new(conn, rows[i:i + self.batch_size],
                                             self.write_timeout)
        orphan.remove()
        self.replayed += inserted
        AUDIT_REPLAYED.inc(inserted)
        log.info("audit journal replayed", journal=orphan.writer, rows=len(rows),
                 inserted=inserted, unreadable_lines=skipped)
        return inserted

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop the task, replay what other processes left, flush what is left (retrying
        until ``timeout``) and close the journal: deleted when every row is written, else
        kept for the next process to start."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            await asyncio.wait_for(self.recover(), timeout)
        except Exception as exc:  # noqa: BLE001 - the journals stay for the next process
            log.warning("audit journal replay failed at shutdown", error_type=type(exc).__name__)
        while self._buffer:
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - any failure: count, log, retry
                self._failed(exc)
                if asyncio.get_running_loop().time() > deadline:
                    log.error("audit rows left unwritten at shutdown" if self.journal is None
                              else "audit rows left in the journal for the next process",
                              count=self.pending, error_type=type(exc).__name__)
                    break
                await asyncio.sleep(0.5)
        journal, self.journal = self.journal, None   # later rows (none in the API) buffer only
        if journal is not None:
            journal.close(remove=not self._buffer)


async def _write(conn: asyncpg.Connection, batch: list[AuditRow], timeout: float) -> None:
    """COPY the batch; if some row is already there (an earlier COPY of it committed but its
    answer was lost), insert the others."""
    try:
        await conn.copy_records_to_table("audit_log", records=batch, columns=DB_COLUMNS,
                                         timeout=timeout)
    except asyncpg.UniqueViolationError:
        await insert_new(conn, batch, timeout)


async def insert_new(conn: asyncpg.Connection, rows: Sequence[AuditRow],
                     timeout: float | None = None) -> int:
    """Insert the rows not in ``audit_log`` yet (by ``row_id``); returns how many were new."""
    if not rows:
        return 0
    columns = [list(column) for column in zip(*rows, strict=True)]
    status = await conn.execute(INSERT_NEW, *columns, timeout=timeout)
    return int(status.split()[-1])


def open_journal(settings: Settings, database: str) -> AuditJournal:
    """This process's journal in PLATEREG_AUDIT_JOURNAL_DIR; ConfigError naming it if the
    directory cannot be made or written."""
    directory = settings.audit_journal_path()
    try:
        return AuditJournal.open(directory, database)
    except OSError as exc:
        raise ConfigError(
            f"PLATEREG_AUDIT_JOURNAL_DIR: {directory} cannot hold the audit journal "
            f"({type(exc).__name__}); set it to a writable directory on local disk") from None


async def start_writer(pool: asyncpg.Pool, settings: Settings) -> AuditWriter:
    """The registry API's writer: journaled, started (it replays orphaned journals first)."""
    database = await pool.fetchval("SELECT current_database()")
    writer = AuditWriter(pool, interval=settings.audit_flush_seconds,
                         max_pending=settings.audit_max_pending,
                         journal=open_journal(settings, database))
    writer.start()
    return writer
