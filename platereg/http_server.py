"""How both HTTP APIs are served by uvicorn: one set of options, and a header deadline.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``), but has no
deadline for a request's *headers*: a connection that sends nothing, or
trickles a header byte every few seconds, stays open for ever. The protocol
here adds that deadline (``PLATEREG_HTTP_HEADER_TIMEOUT_SECONDS``): from the
connection's start, and from the first byte of each later request, until its
headers are complete; past it the client gets a bare 408 and the connection is
closed. The body has its own deadline in :class:`platereg.http.ObservabilityMiddleware`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from platereg.settings import Settings, load_settings

PROTOCOL = "platereg.http_server:HeaderDeadlineProtocol"
#: A corked transport sends at once when this much is buffered.
FLUSH_BYTES = 64 * 1024
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n"
                     b"connection: close\r\n\r\n")


class CorkedTransport:
    """A transport whose writes of one event-loop turn leave as one send.

    uvicorn writes a response's status line and headers, then its body, with two
    ``write`` calls: two system calls and two TCP segments for every small answer
    (a sizeable share of the registry API's CPU on single lookups; see
    docs/benchmarks.md). Here the writes
    are joined and sent once, at the end of the loop turn; ``close`` and
    ``write_eof`` send what is buffered first, ``abort`` drops it. Everything
    else is the wrapped transport's. From :data:`FLUSH_BYTES` buffered, a write
    sends at once.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data if type(data) is bytes else bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_BYTES:   # a big answer goes out at once, as before
            self.flush()

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        pending, self._pending, self._size = self._pending, [], 0
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending, self._size = [], 0
        self._transport.abort()


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers."""

    #: Seconds; set by :func:`uvicorn_options`, read from the environment in worker
    #: processes that did not inherit it.
    header_timeout: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if HeaderDeadlineProtocol.header_timeout is None:
            HeaderDeadlineProtocol.header_timeout = load_settings().http_header_timeout_seconds
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                HeaderDeadlineProtocol.header_timeout or 10.0, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` shared by both APIs."""
    HeaderDeadlineProtocol.header_timeout = settings.http_header_timeout_seconds
    return {
        "http": PROTOCOL,
        "timeout_keep_alive": settings.http_keepalive_timeout_seconds,
        "log_config": None,        # platereg.logging configures logging
        "access_log": False,       # uvicorn's access log prints raw paths (plates)
        "server_header": False,
        # X-Forwarded-* are believed only from PLATEREG_TRUSTED_PROXIES, by the registry
        # app itself (registry.owner.app); uvicorn would believe them from 127.0.0.1.
        "proxy_headers": False,
    }
