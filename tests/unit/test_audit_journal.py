"""The audit journal on real files (registry/api/audit_journal.py): appends, sealing and deletion
of committed segments, claiming the journal of a SIGKILLed process (never a live one),
reading it back (torn last line, another database, past retention), and the writer's
refusal when the journal cannot be written."""

from __future__ import annotations

import datetime as dt
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from platereg.settings import ConfigError, load_settings
from registry.api.audit import (
    COPY_COLUMNS,
    DB_COLUMNS,
    AuditUnavailable,
    AuditWriter,
    open_journal,
)
from registry.api.audit_journal import (
    TIME_FIELDS,
    WIDTH,
    AuditJournal,
    Orphan,
    claim_orphans,
    row_id,
)

NOW = dt.datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=dt.UTC)


def _row(plate: str, at: dt.datetime = NOW, **extra: object) -> tuple:
    """A full row in COPY_COLUMNS order (at, key, kind, j, plate, purpose, result, owner,
    case_ref, as_at)."""
    return (at, "k1", "single", "CA-ON", plate, "testing", "valid", extra.get("owner"),
            extra.get("case_ref"), extra.get("as_at"))


def _dead_journal(directory: Path, lines: str) -> str:
    """A real process opens a journal, appends, prints its writer id and is SIGKILLed."""
    code = textwrap.dedent(f"""
        import datetime as dt, sys, time
        from pathlib import Path
        from registry.api.audit_journal import AuditJournal
        at = dt.datetime(2026, 11, 26, 1, 2, 3, tzinfo=dt.UTC)
        j = AuditJournal.open(Path({str(directory)!r}), "db1")
        {lines}
        print(j.writer, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        writer = proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert len(writer) == 16, writer
    return writer


def test_the_journal_knows_the_row_layout() -> None:
    assert WIDTH == len(COPY_COLUMNS)
    assert [COPY_COLUMNS[i] for i in TIME_FIELDS] == ["at", "as_at"]
    assert DB_COLUMNS == (*COPY_COLUMNS, "row_id")


def test_segments_are_private_and_deleted_once_their_rows_are_committed(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    j = AuditJournal.open(directory, "db1")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    j.append(0, [_row("A0"), _row("A1")])
    first = j.files()
    assert len(first) == 1 and stat.S_IMODE(first[0].stat().st_mode) == 0o600
    fd = j.seal()                    # rows 0..1 sealed, a new segment started
    assert fd is not None
    os.close(fd)
    j.append(2, [_row("A2")])
    assert len(j.files()) == 2
    j.committed(0)                   # row 1 is not committed yet: both kept
    assert len(j.files()) == 2
    j.committed(1)
    assert j.files() == [p for p in j.files() if p != first[0]] and len(j.files()) == 1
    assert j.seal() is not None      # row 2 sealed; rows up to 1 committed: kept
    j.committed(2)
    assert len(j.files()) == 1       # only the new, empty, current segment
    assert j.seal() is None          # nothing to seal in an empty segment
    j.close(remove=True)
    assert os.listdir(directory) == []


def test_a_live_journal_is_never_claimed_and_a_closed_one_is_kept_for_replay(
        tmp_path: Path) -> None:
    live = AuditJournal.open(tmp_path, "db1")
    live.append(0, [_row("LIVE")])
    other = AuditJournal.open(tmp_path, "db1")
    assert claim_orphans(tmp_path, other.writer) == []     # flock held by `live`
    live.close(remove=False)        # stopped with rows unwritten: files stay, lock released
    orphans = claim_orphans(tmp_path, other.writer)
    assert [o.writer for o in orphans] == [live.writer]
    assert claim_orphans(tmp_path, other.writer) == []     # one claimer at a time
    database, rows, skipped = orphans[0].read()
    assert (database, skipped) == ("db1", 0)
    assert rows == [(*_row("LIVE"), row_id(live.writer, 0))]
    orphans[0].remove()
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in other.files()) + [
        f"{other.writer}.lock"]
    other.close(remove=True)


def test_the_journal_of_a_sigkilled_process_is_claimed_and_read_back(tmp_path: Path) -> None:
    writer = _dead_journal(tmp_path, """
        j.append(0, [(at, "k1", "single", "CA-ON", "K0", "testing", "valid", None, "c/1", None),
                     (at, "k1", "batch", None, None, "testing", "empty", "own-1", None, at)])
        j.append(2, [(at, "k2", "single", "CA-ON", "K2", "testing", "stolen", None, None, None)])
        j.seal()
        j.append(3, [(at, "k2", "single", "CA-ON", "K3", "testing", "valid", None, None, None)])
        j._current.fd and __import__("os").write(j._current.fd, b'[4, [["2026-11-2')
    """)
    mine = AuditJournal.open(tmp_path, "db1")
    orphans = claim_orphans(tmp_path, mine.writer)
    assert [o.writer for o in orphans] == [writer]
    database, rows, skipped = orphans[0].read()
    at = dt.datetime(2026, 11, 26, 1, 2, 3, tzinfo=dt.UTC)
    assert database == "db1" and skipped == 1          # the torn last line only
    assert [r[4] for r in rows] == ["K0", None, "K2", "K3"]
    assert rows[1] == (at, "k1", "batch", None, None, "testing", "empty", "own-1", None, at,
                       row_id(writer, 1))
    assert [r[-1] for r in rows] == [row_id(writer, i) for i in range(4)]
    assert len({r[-1] for r in rows}) == 4
    # Past retention (the purge would delete them): left out.
    assert orphans[0].read(not_before=at + dt.timedelta(seconds=1))[1] == []
    orphans[0].remove()
    assert not any(name.startswith(writer) for name in os.listdir(tmp_path))
    mine.close(remove=True)


def test_segments_without_a_lock_file_are_claimed_and_another_database_is_told(
        tmp_path: Path) -> None:
    writer = _dead_journal(tmp_path, 'j.append(0, [(at, "k", "single", "CA-ON", "X", None, '
                                     '"valid", None, None, None)])')
    (tmp_path / f"{writer}.lock").unlink()
    (tmp_path / "notes.txt").write_text("not a journal")
    orphans = claim_orphans(tmp_path, "0" * 16)
    assert [o.writer for o in orphans] == [writer]
    assert orphans[0].read()[0] == "db1"
    orphans[0].release()                                 # left as it is
    assert len([n for n in os.listdir(tmp_path) if n.startswith(writer)]) == 2
    again = claim_orphans(tmp_path, "0" * 16)
    assert [o.writer for o in again] == [writer]
    again[0].release()


def test_a_journal_that_cannot_be_written_refuses_the_read_and_moves_on(
        tmp_path: Path) -> None:
    journal = AuditJournal.open(tmp_path, "db1")
    writer = AuditWriter(None, journal=journal)  # type: ignore[arg-type]  # no database use
    writer.record_many([_row("OK1")])
    broken = journal._current
    assert broken is not None and broken.fd is not None
    os.close(broken.fd)
    broken.fd = os.open(os.devnull, os.O_RDONLY)     # the next write fails (EBADF)
    with pytest.raises(AuditUnavailable):
        writer.record_many([_row("NO")])
    assert writer.pending == 1                       # nothing buffered for the refused read
    writer.record_many([_row("OK2")])                # a new segment
    assert writer.pending == 2 and len(journal.files()) == 2
    orphan = Orphan(tmp_path, journal.writer, -1, journal.files())
    assert [r[4] for r in orphan.read()[1]] == ["OK1", "OK2"]
    assert [r[-1] for r in writer._buffer] == [row_id(journal.writer, 0),
                                               row_id(journal.writer, 2)]


def test_the_journal_directory_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLATEREG_AUDIT_JOURNAL_DIR", raising=False)
    monkeypatch.setenv("PLATEREG_DATA_DIR", str(tmp_path / "data"))
    assert load_settings().audit_journal_path() == tmp_path / "data" / "audit-journal"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("PLATEREG_AUDIT_JOURNAL_DIR", str(blocker))
    settings = load_settings()
    assert settings.audit_journal_path() == blocker
    with pytest.raises(ConfigError, match="PLATEREG_AUDIT_JOURNAL_DIR"):
        open_journal(settings, "db1")
    monkeypatch.setenv("PLATEREG_AUDIT_JOURNAL_DIR", str(tmp_path / "j"))
    journal = open_journal(load_settings(), "db1")
    assert journal.directory == tmp_path / "j"
    journal.close(remove=True)
