"""``platereg import FILE``: streaming bulk import of NDJSON or CSV event files.

The file is read in one pass with bounded buffers, so multi-GB files import in
constant memory: at most ``window`` records wait for the broker's
acknowledgement at any time, and no line longer than 64 KiB is ever held.

NDJSON (``.ndjson``, ``.jsonl``, ``.json``, or a first byte ``{``)
    One CloudEvents JSON event per line (UTF-8). Blank lines are skipped; a
    trailing ``\\r`` (CRLF files) and a UTF-8 BOM at the start are ignored.
    A line over 64 KiB is rejected as ``too_large`` without being held in
    memory.

CSV (``.csv``, or anything else)
    RFC 4180, UTF-8 (a BOM is allowed), comma separated, with a header row.
    Column names are case-insensitive:

    * ``id``, ``source``, ``type``, ``time``: the CloudEvents attributes;
    * ``subject`` (a plate key such as ``CA-ON/ABC123``), or the two columns
      ``jurisdiction`` and ``plate`` instead;
    * ``specversion`` (optional, default ``1.0``), ``datacontenttype`` (optional);
    * ``data``: the event's data as a JSON object text, and/or
    * ``data.<path>`` columns for single data fields, e.g. ``data.expires_on``,
      ``data.reason``, ``data.owner.name``, ``data.vehicle.year``. Their
      cells are text, except ``data.vehicle.year`` which must be an integer.

    An empty cell means "absent". Unknown columns stop the import before
    anything is published (exit code 2). A row with a bad quote, invalid
    UTF-8, a cell over 64 KiB, or a cell count different from the header is
    rejected as ``malformed_csv``; the import goes on with the next row.

Every line is validated exactly like the registry validates Kafka messages
(``schemas.validation``); valid events are published keyed by plate key with
normalized subjects (or posted to the ingest API with ``--api``). Rejected
lines go to the report file (NDJSON, mode 0600, rewritten on every run):
``{"line": N, "reason": ..., "detail": ..., "raw": ...}`` where ``raw`` is the
line's text (NDJSON) or its cells by column (CSV).

Re-running a file is harmless: events keep their ``id`` and the registry
deduplicates by ``id``. So after an interruption, run the same command again.

Exit codes: 0 everything published; 1 some lines rejected (all others
published); 2 usage error (unreadable file, bad header); 3 the broker or API
stopped acknowledging (the summary says up to which line everything was
acknowledged; re-run the file).
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ingest.publisher import BrokerUnavailable
from schemas.validation import MAX_EVENT_BYTES, Rejection, parse_event_bytes, parse_event_obj

MALFORMED_CSV = "malformed_csv"
ENVELOPE_COLUMNS = ("id", "source", "type", "time", "subject", "specversion", "datacontenttype")
PLATE_COLUMNS = ("jurisdiction", "plate")
INT_FIELDS = frozenset({"vehicle.year"})
MAX_RAW_IN_REPORT = MAX_EVENT_BYTES + 1024
BOM = b"\xef\xbb\xbf"


class ImportUsageError(Exception):
    """The file cannot be imported at all (exit code 2)."""


class BadRow(Exception):
    """A CSV row that cannot become an event object."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class ImportStats:
    lines: int = 0
    blank: int = 0
    valid: int = 0
    published: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    acked_through: int | None = None
    aborted: str | None = None

    @property
    def exit_code(self) -> int:
        if self.aborted:
            return 3
        return 1 if self.rejected else 0


@dataclass(frozen=True)
class Reject:
    """Why a line was refused: a contract DLQ reason or ``malformed_csv``; no values."""

    reason: str
    detail: str

    @classmethod
    def of(cls, exc: Rejection) -> Reject:
        return cls(exc.reason.value, exc.detail)


@dataclass(frozen=True)
class Line:
    """One record of the input: its line number and either an event or a rejection."""

    number: int
    event: Any = None              # schemas.events.Event
    rejection: Reject | None = None
    raw: Any = None                # for the report


class CountingReader(io.RawIOBase):
    """Wraps a binary file and counts the bytes read (for the progress bar)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def detect_format(path: Path, head: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".jsonl", ".json"):
        return "ndjson"
    if suffix == ".csv":
        return "csv"
    return "ndjson" if head.removeprefix(BOM).lstrip()[:1] == b"{" else "csv"


# --------------------------------------------------------------------------- NDJSON


def ndjson_lines(stream: BinaryIO, now: datetime) -> Iterator[Line]:
    limit = MAX_EVENT_BYTES + 2           # room for CR LF
    number = 0
    while True:
        chunk = stream.readline(limit + 1)
        if not chunk:
            return
        number += 1
        if number == 1:
            chunk = chunk.removeprefix(BOM)
        if len(chunk) > limit or (len(chunk) == limit + 1 and not chunk.endswith(b"\n")):
            head = chunk[:200]
            while chunk and not chunk.endswith(b"\n"):   # skip the rest of the line
                chunk = stream.readline(1 << 20)
            yield Line(number, rejection=Reject("too_large",
                                                f"line is over {MAX_EVENT_BYTES} bytes"),
                       raw=head.decode("utf-8", "backslashreplace") + "...")
            continue
        text = chunk.rstrip(b"\r\n")
        if not text.strip():
            yield Line(number)             # blank
            continue
        try:
            yield Line(number, event=parse_event_bytes(text, now=now))
        except Rejection as exc:
            yield Line(number, rejection=Reject.of(exc),
                       raw=text.decode("utf-8", "backslashreplace"))


# --------------------------------------------------------------------------- CSV


def _columns(header: list[str]) -> list[str]:
    names = [h.strip().lower() for h in header]
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0][1:]
    unknown = [n for n in names if n not in ENVELOPE_COLUMNS and n not in PLATE_COLUMNS
               and n != "data" and not (n.startswith("data.") and len(n) > 5)]
    if unknown:
        shown = ", ".join(repr(n[:40]) for n in unknown[:5])
        raise ImportUsageError(f"unknown CSV column(s): {shown}; see `platereg import --help`")
    if len(set(names)) != len(names):
        raise ImportUsageError("the CSV header names a column twice")
    missing = [n for n in ("id", "source", "type", "time") if n not in names]
    if "subject" not in names and not all(n in names for n in PLATE_COLUMNS):
        missing.append("subject (or jurisdiction and plate)")
    if missing:
        raise ImportUsageError(f"the CSV header lacks: {', '.join(missing)}")
    return names


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise BadRow("schema_invalid", f"data.{path}: conflicts with another column")
        node = child
    if parts[-1] in node:
        raise BadRow("schema_invalid", f"data.{path}: given twice")
    node[parts[-1]] = value


def row_to_event(names: list[str], cells: list[str]) -> dict[str, Any]:
    """The event object of one CSV row (see the module doc), or :class:`BadRow`."""
    if len(cells) != len(names):
        raise BadRow(MALFORMED_CSV, f"row has {len(cells)} cells, the header has {len(names)}")
    for cell in cells:
        if any("\udc80" <= ch <= "\udcff" for ch in cell):
            raise BadRow(MALFORMED_CSV, "row is not valid UTF-8")
    row = dict(zip(names, cells, strict=True))
    event: dict[str, Any] = {"specversion": "1.0"}
    for name in ENVELOPE_COLUMNS:
        if row.get(name):
            event[name] = row[name]
    if "subject" not in event and ("jurisdiction" in row or "plate" in row):
        if row.get("jurisdiction") and row.get("plate"):
            event["subject"] = f"{row['jurisdiction']}/{row['plate']}"
        elif row.get("jurisdiction") or row.get("plate"):
            raise BadRow("invalid_plate", "jurisdiction and plate must both be given")
    data: dict[str, Any] = {}
    if row.get("data"):
        try:
            parsed = orjson.loads(row["data"])
        except orjson.JSONDecodeError:
            raise BadRow("malformed_json", "data: not valid JSON") from None
        if not isinstance(parsed, dict):
            raise BadRow("schema_invalid", "data: must be a JSON object")
        data = parsed
    for name, cell in row.items():
        if name.startswith("data.") and cell:
            path = name[5:]
            value: Any = cell
            if path in INT_FIELDS:
                if not cell.strip().isascii() or not cell.strip().isdigit():
                    raise BadRow("schema_invalid", f"data.{path}: must be an integer")
                value = int(cell.strip())
            _set_path(data, path, value)
    if data or row.get("data") or any(n.startswith("data.") for n in names):
        event["data"] = data
    return event


def csv_lines(stream: BinaryIO, now: datetime) -> Iterator[Line]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text, strict=True)
    previous_end = 0
    names: list[str] | None = None
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            start = previous_end + 1
            previous_end = reader.line_num
            if names is None:
                raise ImportUsageError(f"the CSV header is not readable: {exc}") from None
            detail = "a cell is over the size limit" if "field limit" in str(exc) else (
                f"bad CSV quoting ({exc})")
            yield Line(start, rejection=Reject(MALFORMED_CSV, detail[:200]), raw=None)
            continue
        start = previous_end + 1
        previous_end = reader.line_num
        if names is None:
            names = _columns(cells)
            continue
        if not any(c.strip() for c in cells):
            yield Line(start)              # blank
            continue
        raw = dict(zip(names, cells, strict=False)) if len(cells) == len(names) else cells
        try:
            obj = row_to_event(names, cells)
            yield Line(start, event=parse_event_obj(obj, now=now))
        except (Rejection, BadRow) as exc:
            if isinstance(raw, dict):
                raw = {k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                       for k, v in raw.items()}
            else:
                raw = [c.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                       for c in raw]
            reject = Reject(exc.reason, exc.detail) if isinstance(exc, BadRow) else Reject.of(exc)
            yield Line(start, rejection=reject, raw=raw)


# --------------------------------------------------------------------------- the import


class Report:
    """The rejected-lines report: NDJSON, created 0600, truncated at the start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fh = os.fdopen(fd, "wb")

    def write(self, line: Line) -> None:
        assert line.rejection is not None
        raw = line.raw
        if isinstance(raw, str) and len(raw) > MAX_RAW_IN_REPORT:
            raw = raw[:MAX_RAW_IN_REPORT] + "..."
        entry = {"line": line.number, "reason": line.rejection.reason,
                 "detail": line.rejection.detail, "raw": raw}
        self._fh.write(orjson.dumps(entry) + b"\n")

    def close(self) -> None:
        self._fh.close()


CSV_FIELD_LIMIT = MAX_EVENT_BYTES


async def import_file(path: Path, *, fmt: str = "auto", sink: Any, report_path: Path,
                      progress: Callable[[int, ImportStats], None] | None = None,
                      now: datetime | None = None) -> ImportStats:
    """Import ``path`` into ``sink`` (``KafkaLineSink`` or ``ApiLineSink``); see the module doc."""
    now = now or datetime.now(UTC)
    try:
        raw = open(path, "rb")  # noqa: SIM115, ASYNC230 - streamed, closed below
    except OSError as exc:
        raise ImportUsageError(f"cannot read {path}: {exc.strerror}") from None
    counting = CountingReader(raw)
    stream = io.BufferedReader(counting, buffer_size=1 << 20)
    stats = ImportStats()
    try:
        if fmt == "auto":
            fmt = detect_format(path, stream.peek(64)[:64])
        if fmt == "csv":
            csv.field_size_limit(CSV_FIELD_LIMIT)
            lines = csv_lines(stream, now)
        elif fmt == "ndjson":
            lines = ndjson_lines(stream, now)
        else:
            raise ImportUsageError(f"unknown format {fmt!r} (use auto, ndjson or csv)")
        report = Report(report_path)
        try:
            await _run(lines, sink, stats, report, counting, progress)
        finally:
            report.close()
        stats.published = sink.acked
        stats.acked_through = sink.acked_through
        if progress is not None:
            progress(counting.count, stats)
    finally:
        stream.close()
    return stats


async def _run(lines: Iterator[Line], sink: Any, stats: ImportStats, report: Report,
               counting: CountingReader,
               progress: Callable[[int, ImportStats], None] | None) -> None:
    try:
        async with sink:
            for n, line in enumerate(lines, 1):
                stats.lines = line.number
                if line.rejection is not None:
                    _reject(stats, report, line)
                elif line.event is None:
                    stats.blank += 1
                else:
                    stats.valid += 1
                    await sink.send(line)
                    for rejected in sink.take_rejections():
                        _reject(stats, report, rejected)
                if progress is not None and n % 2048 == 0:
                    progress(counting.count, stats)
            await sink.flush()
            for rejected in sink.take_rejections():
                _reject(stats, report, rejected)
    except BrokerUnavailable as exc:
        stats.aborted = exc.detail


def _reject(stats: ImportStats, report: Report, line: Line) -> None:
    assert line.rejection is not None
    stats.rejected += 1
    stats.reasons[line.rejection.reason] += 1
    report.write(line)


class KafkaLineSink:
    """Valid lines straight to ``plates.events`` (normalized, keyed by plate key)."""

    def __init__(self, settings: Any, *, window: int = 5000) -> None:
        from ingest.publisher import StreamPublisher

        self.publisher = StreamPublisher(settings, window=window)

    async def __aenter__(self) -> KafkaLineSink:
        await self.publisher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.publisher.stop()

    async def send(self, line: Line) -> None:
        event = line.event
        await self.publisher.send(event.plate_key.encode(), event.to_json(), tag=line.number)

    async def flush(self) -> None:
        await self.publisher.flush()

    def take_rejections(self) -> list[Line]:
        return []

    @property
    def acked(self) -> int:
        return self.publisher.acked

    @property
    def acked_through(self) -> int | None:
        return self.publisher.acked_through  # type: ignore[return-value]


class ApiLineSink:
    """Valid lines to the ingest API in batches (``--api URL --key KEY``).

    A 422 answer (e.g. a clock difference with the server) rejects the lines it
    names; the rest of that batch is posted again without them.
    """

    def __init__(self, url: str, key: str, *, batch_size: int = 500) -> None:
        from ingest.publisher import ApiPoster

        self.poster = ApiPoster(url, key)
        self.batch_size = batch_size
        self.batch: list[Line] = []
        self.acked = 0
        self.acked_through: int | None = None
        self._rejected: list[Line] = []

    async def __aenter__(self) -> ApiLineSink:
        await self.poster.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.poster.__aexit__()

    async def send(self, line: Line) -> None:
        self.batch.append(line)
        if len(self.batch) >= self.batch_size:
            await self.flush()

    async def flush(self) -> None:
        batch, self.batch = self.batch, []
        while batch:
            result = await self.poster.post([line.event.to_json() for line in batch])
            if result.ok:
                self.acked += result.accepted
                self.acked_through = batch[-1].number
                return
            if result.status == 422 and result.errors:
                bad = {int(e.get("index", -1)): e for e in result.errors}
                keep = []
                for index, line in enumerate(batch):
                    if index in bad:
                        err = bad[index]
                        self._rejected.append(Line(line.number, rejection=Reject(
                            str(err.get("reason", "schema_invalid"))[:40],
                            str(err.get("detail", ""))[:1000]),
                            raw=line.event.to_json().decode()))
                    else:
                        keep.append(line)
                batch = keep
                continue
            raise BrokerUnavailable(f"the ingest API answered {result.status or 'nothing'}: "
                                    f"{result.detail}", 5)

    def take_rejections(self) -> list[Line]:
        out, self._rejected = self._rejected, []
        return out
