"""A tiny HTTP server for processes that have no API: /healthz, /readyz, /metrics.

Runs in the process's own asyncio loop (``asyncio.start_server``), answers GET
only and closes each connection; it never logs paths.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from platereg.logging import get_logger

log = get_logger(__name__)


class OpsServer:
    """``ready`` is called for every /readyz: True gives 200, False 503."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("ops server listening", host=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def _respond(self, target: str) -> tuple[int, str, bytes]:
        route = target.split("?", 1)[0]
        if route == "/healthz":
            return 200, "application/json", b'{"status":"ok"}'
        if route == "/readyz":
            if self.ready():
                return 200, "application/json", b'{"status":"ready"}'
            return 503, "application/json", b'{"status":"not ready"}'
        if route == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest()
        return 404, "application/json", b'{"status":"not found"}'

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "application/json", b'{"status":"method not allowed"}'
            else:
                status, ctype, body = self._respond(target)
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
