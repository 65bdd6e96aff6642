"""Helpers of the notices tests: applying events through the consumer's batch
function, a scriptable HTTP sink, an SMTP catcher, and notice queries."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiosmtpd.controller import Controller

from devtools.embedded import free_port
from notifications.dispatcher import Dispatcher
from notifications.relay import run_notices_relay
from platereg.kafka import Record
from platereg.settings import Settings
from registry.consumer import store as registry_store
from registry.consumer.apply import apply_batch
from registry.consumer.batch import parse_values
from tests.integration.seam_support import wait_for
from wiring.cli import batch_hook

GROUP, TOPIC = "notices-test", "notices-test.events"


def event(kind: str, subject: str, time: dt.datetime, data: dict | None = None,
          source: str = "/registry/office/1") -> dict:
    ev = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source, "type": kind,
          "time": time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
          "subject": subject}
    if data is not None:
        ev["data"] = data
    return ev


async def apply_events(pool: asyncpg.Pool, settings: Settings, events: list[dict],
                       now: dt.datetime) -> Any:
    """Apply events with the registry consumer's own batch transaction (no broker)."""
    async with pool.acquire() as conn:
        start = (await registry_store.RegistrySql(conn).ensure_offsets(GROUP, TOPIC, {0: 0}))[0]
        sign = settings.signer().headers   # as the tests' registered producer
        records = [Record(None, value, 0, start + i, tuple(sign(value)))
                   for i, value in enumerate(orjson.dumps(e) for e in events)]
        parsed = parse_values(records, now)
        async with conn.transaction():
            out = await apply_batch(
                registry_store.SqlStore(conn, hook=batch_hook()), group=GROUP, topic=TOPIC,
                expected={0: start},
                next_offsets={0: start + len(events)}, parsed=parsed, messages=records,
                tz=settings.tz, now=now)
    assert not out.rejected, [(r.reason, r.detail) for r in out.rejected]
    return out


@contextlib.asynccontextmanager
async def notices_running(settings: Settings) -> AsyncIterator[Dispatcher]:
    """The notices relay and the dispatcher in this process, stopped cleanly on exit."""
    stop = asyncio.Event()
    dispatcher = Dispatcher(settings, poll=0.05)
    tasks = [asyncio.create_task(run_notices_relay(settings, stop, idle=0.05)),
             asyncio.create_task(dispatcher.run(stop))]
    try:
        yield dispatcher
    finally:
        stop.set()
        for result in await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                             30):
            if isinstance(result, BaseException):
                raise result


def owner(n: int, *, email: bool = True, phone: bool = False, language: str = "en",
          address: bool = False) -> dict:
    o: dict[str, Any] = {"owner_id": f"own-{n}", "name": f"Owner {n}", "language": language}
    if email:
        o["email"] = f"owner{n}@example.org"
    if phone:
        o["phone"] = f"+1555010{n % 100:02d}"
    if address:
        o["address"] = {"lines": [f"{n} Main Street"], "city": "Ottawa", "region": "ON",
                        "postal_code": "K1A 0A1", "country": "CA"}
    return o


def issued(subject: str, expires: dt.date, when: dt.datetime, o: dict,
           device_id: str | None = None) -> dict:
    data = {"plate_class": "passenger", "expires_on": expires.isoformat(),
            "vehicle": {"vin": "V1", "make": "Kia", "model": "Rio", "year": 2020,
                        "colour": "red"}, "owner": o}
    if device_id:
        data["device_id"] = device_id
    return event("plate.issued", subject, when, data)


# --------------------------------------------------------------------------- HTTP sink

@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)     # when it arrived


@dataclass
class HttpSink:
    """A real HTTP server; ``respond(request) -> (status, headers)`` or None to hang."""

    respond: Callable[[Request], tuple[int, dict[str, str]] | None] = (
        lambda r: (200, {}))
    requests: list[Request] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> HttpSink:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                req = Request(path, headers, body)
                self.requests.append(req)
                self.arrived.set()
                answer = self.respond(req)
                if answer is None:
                    await asyncio.sleep(3600)      # hang: the client times out
                    return
                status, extra = answer
                hdrs = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write(f"HTTP/1.1 {status} X\r\n{hdrs}Content-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def http_sink(respond: Callable[[Request], tuple[int, dict[str, str]] | None]
                    = lambda r: (200, {})) -> AsyncIterator[HttpSink]:
    sink = await HttpSink(respond=respond).start()
    try:
        yield sink
    finally:
        await sink.stop()


class MailCatcher:
    """aiosmtpd handler keeping every message (the test's SMTP server); ``port`` is set by
    :func:`smtp_catcher`."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.arrivals: list[float] = []      # time.monotonic() of each message
        self.port = 0

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        self.arrivals.append(time.monotonic())
        return "250 OK"


@contextlib.contextmanager
def smtp_catcher() -> Iterator[MailCatcher]:
    """A real SMTP server (aiosmtpd) on a free local port, keeping what it receives."""
    catcher = MailCatcher()
    controller = Controller(catcher, hostname="127.0.0.1", port=free_port())
    controller.start()
    catcher.port = controller.port
    try:
        yield catcher
    finally:
        controller.stop()


async def wait_until(check: Callable[[], Any], timeout: float = 30.0,
                     what: str = "condition") -> Any:
    """``seam_support.wait_for`` with the notice tests' defaults: 30 s, every 50 ms."""
    return await wait_for(check, what, timeout, every=0.05)
