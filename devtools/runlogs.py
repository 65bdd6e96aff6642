"""The log files of ``platereg run``: one per service in ``PLATEREG_DATA_DIR/logs``.

Each service writes its standard output and error to ``logs/<service>.log`` (the
terminal keeps the banner and the status block). A run rotates them: the previous
run's log becomes ``<service>.log.1`` (one generation), so the log of a run that
failed is still there after the restart that usually follows, and two runs' worth
is the most the directory holds.

``platereg logs [SERVICE] [-f]`` reads them (:func:`follow` is ``tail -F``: it
reopens a file that a new run rotated or truncated); the status block counts their
error lines (:class:`LogScanner`, :class:`ErrorWindow`).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

SUFFIX = ".log"
PREVIOUS = ".log.1"

#: An error line: the console renderer's ``[error    ]``/``[critical ]``, the JSON
#: renderer's ``"level":"error"``, or the start of a traceback that bypassed logging.
_ERROR = re.compile(rb'^\S+ \[(?:error|critical)\s*\]|"level":\s*"(?:error|critical)"'
                    rb"|^Traceback \(most recent call last\)")


def logs_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / "logs"


def log_path(directory: Path, name: str) -> Path:
    return directory / f"{name}{SUFFIX}"


def open_for_run(directory: Path, name: str) -> BinaryIO:
    """A new ``<name>.log`` for this run (the previous one kept as ``<name>.log.1``),
    opened for appending (the child writes through its own descriptor)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = log_path(directory, name)
    if path.exists():
        os.replace(path, directory / f"{name}{PREVIOUS}")
    return open(path, "ab", buffering=0)  # noqa: SIM115 - the caller closes it


def available(directory: Path) -> list[str]:
    """The names of the services with a log, sorted."""
    if not directory.is_dir():
        return []
    return sorted(p.name.removesuffix(SUFFIX) for p in directory.glob(f"*{SUFFIX}"))


_STAMP = re.compile(rb'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) '
                    rb'|"timestamp":\s*"(\d{4}-\d\d-\d\dT[^"]+)"')


def is_error(line: bytes) -> bool:
    return _ERROR.search(line) is not None


def line_time(line: bytes) -> float | None:
    """The Unix time a log line gives (both renderers write an ISO time in UTC)."""
    found = _STAMP.search(line)
    if found is None:
        return None
    text = (found.group(1) or found.group(2)).decode().replace("Z", "+00:00")
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


@dataclass
class ErrorWindow:
    """Error lines of the last ``seconds`` seconds (Unix times), by service."""

    seconds: float = 60.0
    seen: list[tuple[float, str]] = field(default_factory=list)

    def add(self, service: str, times: list[float], now: float) -> None:
        self.seen.extend((t, service) for t in times)
        self._expire(now)

    def count(self, now: float) -> tuple[int, list[str]]:
        """(errors in the window, the services they came from, sorted)."""
        self._expire(now)
        return len(self.seen), sorted({service for _, service in self.seen})

    def _expire(self, now: float) -> None:
        self.seen = [(t, service) for t, service in self.seen if t >= now - self.seconds]


class LogScanner:
    """Reads what each log file gained since the last call: the times of its error lines
    (the line's own, else the time it is read)."""

    def __init__(self, directory: Path, names: list[str]) -> None:
        self.paths = {name: log_path(directory, name) for name in names}
        self.offsets = dict.fromkeys(names, 0)
        self.partial = dict.fromkeys(names, b"")

    def errors(self, now: float) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for name, path in self.paths.items():
            try:
                size = path.stat().st_size
                if size < self.offsets[name]:          # truncated or replaced: start again
                    self.offsets[name], self.partial[name] = 0, b""
                with open(path, "rb") as f:
                    f.seek(self.offsets[name])
                    chunk = f.read(4 << 20)
            except OSError:
                continue
            self.offsets[name] += len(chunk)
            lines = (self.partial[name] + chunk).split(b"\n")
            self.partial[name] = lines.pop()
            found[name] = [line_time(line) or now for line in lines if is_error(line)]
        return found


def follow(path: Path, write: Callable[[bytes], None], *, lines: int = 20,
           poll: float = 0.25, running: Callable[[], bool] = lambda: True) -> None:
    """``tail -F``: the last ``lines`` lines, then what is appended, reopening the file
    when a new run replaces or truncates it, while ``running()``."""
    handle, inode = _open_at_tail(path, lines, write)
    while running():
        chunk = handle.read(1 << 16) if handle else b""
        if chunk:
            write(chunk)
            continue
        time.sleep(poll)
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if handle is None or stat.st_ino != inode or stat.st_size < handle.tell():
            if handle:
                handle.close()
            handle, inode = open(path, "rb"), stat.st_ino  # noqa: SIM115
    if handle:
        handle.close()


def _open_at_tail(path: Path, lines: int, write: Callable[[bytes], None]
                  ) -> tuple[BinaryIO | None, int]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by follow
    except FileNotFoundError:
        return None, -1
    for chunk in last_lines(handle, lines):
        write(chunk)
    return handle, os.fstat(handle.fileno()).st_ino


def last_lines(handle: BinaryIO, count: int) -> Iterator[bytes]:
    """The last ``count`` lines of an open file (read from its end), leaving it at its end."""
    end = handle.seek(0, os.SEEK_END)
    start, data = end, b""
    while start > 0 and data.count(b"\n") <= count:
        start = max(0, start - (64 << 10))
        handle.seek(start)
        data = handle.read(end - start)
    handle.seek(end)
    kept = data.split(b"\n")
    if kept and kept[-1] == b"":
        kept.pop()
    yield from (line + b"\n" for line in kept[-count:] if count > 0)
