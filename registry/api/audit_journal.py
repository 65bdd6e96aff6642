"""The audit journal: each registry API process's local write-ahead log of its audit rows.

A process (one :class:`AuditJournal`, owned by its :class:`registry.api.audit.AuditWriter`)
appends the rows of each answer to its current segment file with one ``os.write`` on an
``O_APPEND`` descriptor before the route answers: no fsync, no database round trip. Data
handed to the kernel survives the process (SIGKILL, OOM kill, a crash); it does not
survive a power loss of the host before the kernel writes it back (see the writer's
docstring). The writer seals the segment before each COPY (fdatasync, in a thread) and
deletes a sealed segment once every row in it is committed.

Files, in one directory on local disk (``PLATEREG_AUDIT_JOURNAL_DIR``), mode 0600 (they
hold plates and owner ids; their contents are never logged):

* ``<writer>.lock``: held with ``fcntl.flock`` for the life of the process; created
  under a temporary name, locked, then linked into place, so it is never seen unlocked
  while its writer lives.
* ``<writer>.<n>.jnl``: segment ``n``; a header line ``{"v": 1, "writer", "db"}``, then one
  JSON line per answer: ``[first sequence number, [row, ...]]``, rows in
  ``registry.api.audit.COPY_COLUMNS`` order. Row ``i`` of a line has the id
  ``<writer><first + i as 16 hex digits>`` (a UUID): unique across processes.

:func:`claim_orphans` takes the journals whose lock nobody holds (their process is gone):
the caller replays their rows (:meth:`Orphan.read`) with ``ON CONFLICT DO NOTHING`` and
then :meth:`Orphan.remove` s them. A torn last line (the process died inside ``write``)
was never answered and is skipped; so is a journal written for another database, which
is left alone for a process of that database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

VERSION = 1
_NAME = re.compile(r"^([0-9a-f]{16})\.(?:(\d{8})\.jnl|lock)$")
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
#: Positions of the timestamps in a row (``at`` and ``as_at`` of COPY_COLUMNS).
TIME_FIELDS = (0, 9)
WIDTH = 10


def row_id(writer: str, seq: int) -> str:
    """The UUID (as 32 hex digits) of row ``seq`` of ``writer``."""
    return f"{writer}{seq:016x}"


def _lock_path(directory: Path, writer: str) -> Path:
    return directory / f"{writer}.lock"


def _create_locked(path: Path) -> int | None:
    """Create ``path`` already locked (temporary name, flock, link); None if it exists."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            os.link(tmp, path)
        except FileExistsError:
            os.close(fd)
            return None
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@dataclass
class _Segment:
    path: Path
    fd: int | None
    last_seq: int = -1          # -1: no row yet


class AuditJournal:
    """One process's journal (see the module docstring). Not thread-safe: the event loop's."""

    def __init__(self, directory: Path, database: str, lock_fd: int, writer: str) -> None:
        self.directory = directory
        self.database = database
        self.writer = writer
        self._lock_fd = lock_fd
        self._number = 0
        self._current: _Segment | None = None
        self._sealed: list[_Segment] = []
        self._committed = -1

    @classmethod
    def open(cls, directory: Path, database: str) -> AuditJournal:
        """Create the directory (0700) if needed and this process's lock; OSError if not."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            writer = secrets.token_hex(8)
            fd = _create_locked(_lock_path(directory, writer))
            if fd is not None:
                journal = cls(directory, database, fd, writer)
                journal._open_segment()
                return journal

    def _open_segment(self) -> None:
        self._number += 1
        path = self.directory / f"{self.writer}.{self._number:08d}.jnl"
        fd = os.open(path, _FLAGS, 0o600)
        self._current = _Segment(path, fd)
        try:
            _write_all(fd, orjson.dumps({"v": VERSION, "writer": self.writer,
                                         "db": self.database}) + b"\n")
        except OSError:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Give up the current segment (a failed write): sealed as it is, never written again."""
        seg, self._current = self._current, None
        if seg is not None:
            with contextlib.suppress(OSError):
                os.close(seg.fd)  # type: ignore[arg-type]
            seg.fd = None
            self._sealed.append(seg)

    def append(self, first_seq: int, rows: list[tuple[Any, ...]]) -> None:
        """One line for the rows of one answer, in one write; OSError when it failed."""
        if self._current is None:
            self._open_segment()
        seg = self._current
        assert seg is not None and seg.fd is not None
        data = orjson.dumps([first_seq, rows]) + b"\n"
        seg.last_seq = max(seg.last_seq, first_seq + len(rows) - 1)
        try:
            _write_all(seg.fd, data)
        except OSError:
            self._abandon()   # maybe torn: the next answer starts a new segment
            raise

    def seal(self) -> int | None:
        """Close the current segment to appends (if it has rows) and start the next.

        Returns its descriptor, for the caller to :func:`sync_and_close` (in a thread)."""
        seg = self._current
        if seg is None or seg.last_seq < 0:
            return None
        fd, seg.fd = seg.fd, None
        self._sealed.append(seg)
        self._current = None
        with contextlib.suppress(OSError):   # else the next append tries again
            self._open_segment()
        self.committed(self._committed)
        return fd

    def committed(self, seq: int) -> None:
        """Every row up to ``seq`` is in ``audit_log``: delete the segments holding only such."""
        self._committed = max(self._committed, seq)
        keep = []
        for seg in self._sealed:
            if seg.last_seq <= self._committed:
                with contextlib.suppress(FileNotFoundError):
                    seg.path.unlink()
            else:
                keep.append(seg)
        self._sealed = keep

    def close(self, *, remove: bool) -> None:
        """Release the journal; ``remove`` (every row committed) deletes its files first,
        else they stay, synced, for the next process to replay."""
        segments = [*self._sealed, *([self._current] if self._current else [])]
        self._sealed, self._current = [], None
        for seg in segments:
            if seg.fd is not None:
                if not remove:
                    with contextlib.suppress(OSError):
                        os.fdatasync(seg.fd)
                os.close(seg.fd)
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    seg.path.unlink()
        if remove:
            with contextlib.suppress(FileNotFoundError):
                _lock_path(self.directory, self.writer).unlink()
        os.close(self._lock_fd)

    def files(self) -> list[Path]:
        """This journal's segment files (for tests and checks)."""
        return sorted(self.directory.glob(f"{self.writer}.*.jnl"))


def sync_and_close(fd: int) -> None:
    """fdatasync a sealed segment (its rows survive a power loss from now on) and close it."""
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- orphans


@dataclass
class Orphan:
    """The journal of a process that is gone, locked by this process until released."""

    directory: Path
    writer: str
    lock_fd: int
    segments: list[Path] = field(default_factory=list)

    def read(self, not_before: dt.datetime | None = None
             ) -> tuple[str | None, list[tuple[Any, ...]], int]:
        """(its database, its rows with their ids last, lines skipped as unreadable).

        Rows older than ``not_before`` (past retention: the purge would delete them) are
        left out."""
        database: str | None = None
        rows: list[tuple[Any, ...]] = []
        skipped = 0
        for path in self.segments:
            try:
                lines = path.read_bytes().split(b"\n")
            except FileNotFoundError:
                continue
            skipped += lines[-1] != b""   # a torn last line: never answered
            header, *body = lines[:-1] or [b""]
            try:
                head = orjson.loads(header)
                if head["v"] != VERSION or head["writer"] != self.writer:
                    raise ValueError("not this journal's header")
            except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
                skipped += len(body)
                continue
            database = head["db"]
            for line in body:
                skipped += not _parse_line(self.writer, line, rows, not_before)
        return database, rows, skipped

    def remove(self) -> None:
        """Delete the replayed journal (segments first, the lock file last) and unlock it."""
        for path in self.segments:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(FileNotFoundError):
            _lock_path(self.directory, self.writer).unlink()
        os.close(self.lock_fd)

    def release(self) -> None:
        """Leave the journal as it is (e.g. another database's) and unlock it."""
        os.close(self.lock_fd)


def _parse_line(writer: str, line: bytes, rows: list[tuple[Any, ...]],
                not_before: dt.datetime | None) -> bool:
    try:
        first, values = orjson.loads(line)
        parsed = []
        for i, row in enumerate(values):
            if len(row) != WIDTH:
                raise ValueError("row width")
            for pos in TIME_FIELDS:
                if row[pos] is not None:
                    row[pos] = dt.datetime.fromisoformat(row[pos])
            parsed.append((*row, row_id(writer, int(first) + i)))
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return False
    rows.extend(r for r in parsed if not_before is None or r[0] >= not_before)
    return True


def _claim(directory: Path, writer: str) -> Orphan | None:
    path = _lock_path(directory, writer)
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:   # segments without a lock file: take them by creating it
        created = _create_locked(path)
        if created is None:
            return None
        fd = created
    else:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError("replaced")   # another claimer removed it meanwhile
        except (BlockingIOError, FileNotFoundError):  # alive, or just claimed elsewhere
            os.close(fd)
            return None
    segments = sorted(directory.glob(f"{writer}.*.jnl"))
    return Orphan(directory, writer, fd, segments)


def claim_orphans(directory: Path, own: str) -> list[Orphan]:
    """Lock and return the journals in ``directory`` of processes that are gone."""
    writers = set()
    for name in os.listdir(directory):
        match = _NAME.match(name)
        if match and match.group(1) != own:
            writers.add(match.group(1))
    return [orphan for writer in sorted(writers)
            if (orphan := _claim(directory, writer)) is not None]
