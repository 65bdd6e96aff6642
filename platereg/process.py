"""Process plumbing of the long-running services without an API, in one place.

The registry consumer, the relays and any other background service use it the
same way::

    async def serve_thing(settings: Settings) -> int:
        async with service_process(settings, port=settings.consumer_metrics_port,
                                   metrics=metrics.REGISTRY_CONSUMER) as proc:
            proc.spawn(helper(settings, proc.stop))      # gathered when the block ends
            proc.health.started = True                     # or let the main loop set it
            await main_loop(settings, proc.stop, proc.health)
        return 0

What this module owns:

* :func:`service_process` - the whole life of such a process: stop signals, the
  ops server, the health watcher, background tasks; on the way out ``stop`` is
  set, the tasks are awaited and the ops server is stopped.
* :class:`Health` - what ``/readyz`` reports: ``started and db_ok and kafka_ok``;
  :func:`watch_health` keeps ``db_ok`` and ``kafka_ok`` current.
* :func:`install_stop_signals` - the first SIGTERM/SIGINT sets ``stop`` (graceful
  stop, at most ``grace`` seconds, then a hard exit from a timer thread); a
  second one exits at once.
* worker processes exit when the process that started them is gone
  (``platereg.parent_watch.exit_with_parent``, a module of its own so that a worker
  imports none of this one).
* :func:`wait` - the one stop-aware sleep: returns when ``stop`` (or ``wakeup``)
  is set or ``seconds`` have passed.
* :func:`retry` - await a call until it succeeds, with exponential backoff
  (tenacity) and stop-aware sleeps; :class:`Stopped` when ``stop`` comes first.
* :func:`repeat` - a periodic background job (a scheduler run, a sweep) until ``stop``.
* :func:`ops_app` and :class:`OpsServer` - ``/healthz``, ``/readyz`` and
  ``/metrics``: a small Starlette app under uvicorn, in the process's own event
  loop, leaving the process's signal handlers alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from platereg.db import close_pool, create_pool, ping
from platereg.kafka import broker_reachable
from platereg.logging import get_logger
from platereg.metrics import exported, exposition
from platereg.settings import Settings

log = get_logger(__name__)

T = TypeVar("T")

#: How long a graceful stop may take before the process exits hard. Exiting
#: mid-batch is safe for our services: a batch's transaction rolls back and its
#: records are read again from the stored offsets.
STOP_GRACE_SECONDS = 10.0


# --------------------------------------------------------------------------- health

class Health:
    """What /readyz reports: the process has started and both servers are reachable."""

    def __init__(self, *, started: bool = False) -> None:
        self.db_ok = False
        self.kafka_ok = False
        self.started = started

    def ready(self) -> bool:
        return self.started and self.db_ok and self.kafka_ok


async def watch_health(settings: Settings, health: Health, stop: asyncio.Event,
                       interval: float = 3.0) -> None:
    """Keep ``health`` current until ``stop``: PostgreSQL and the broker answer."""
    pool = None
    try:
        while not stop.is_set():
            try:
                if pool is None:
                    pool = await create_pool(settings.dsn(), min_size=1, max_size=1,
                                             retry_for=1)
                health.db_ok = await ping(pool)
            except Exception:  # noqa: BLE001 - readiness only reports
                health.db_ok = False
            health.kafka_ok = await broker_reachable(settings, timeout=2)
            await wait(stop, interval)
    finally:
        await close_pool(pool)


# --------------------------------------------------------------------------- stopping

def install_stop_signals(stop: asyncio.Event, grace: float = STOP_GRACE_SECONDS) -> None:
    """First SIGTERM/SIGINT: set ``stop``, exit hard after ``grace`` seconds. Second: exit now."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)
        stop.set()
        # A thread, not the loop: it must fire even if the loop is stuck in a
        # retry against a database or broker that has gone away.
        timer = threading.Timer(grace, os._exit, args=(1,))
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


async def wait(stop: asyncio.Event, seconds: float, wakeup: asyncio.Event | None = None) -> bool:
    """Sleep up to ``seconds``, less if ``stop`` (or ``wakeup``) is set.

    Clears ``wakeup`` before returning; returns whether ``stop`` is set.
    """
    waiters = [asyncio.ensure_future(stop.wait())]
    if wakeup is not None:
        waiters.append(asyncio.ensure_future(wakeup.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    if wakeup is not None:
        wakeup.clear()
    return stop.is_set()


class Stopped(Exception):
    """``stop`` was set before the call succeeded."""


async def retry(call: Callable[[], Awaitable[T]], stop: asyncio.Event, *,
                on: tuple[type[BaseException], ...], message: str | None = None,
                first: float = 0.5, cap: float = 10.0,
                at_once: tuple[type[BaseException], ...] = (),
                never: tuple[type[BaseException], ...] = (),
                on_error: Callable[[BaseException], object] | None = None) -> T:
    """``await call()`` until it succeeds (tenacity); :class:`Stopped` once ``stop`` is set.

    After an error of a type in ``on``: log ``message`` (a warning with the error's
    type only, if given), call ``on_error(exc)``, then wait ``first``, ``2 * first``,
    ... up to ``cap`` seconds (stop-aware) before the next attempt. Errors in
    ``at_once`` are retried without waiting; errors in ``never`` (e.g. the broker
    refusing this principal) and any other errors propagate at once. The first attempt
    is always made; a retry is not once ``stop`` is set.
    """
    backoff = wait_exponential(multiplier=first, max=cap)

    def error(state: RetryCallState) -> BaseException | None:
        return state.outcome.exception() if state.outcome is not None else None

    def pause(state: RetryCallState) -> float:
        return 0.0 if isinstance(error(state), at_once) else backoff(state)

    def before_sleep(state: RetryCallState) -> None:
        exc = error(state)
        if message is not None and not isinstance(exc, at_once):
            log.warning(message, error=type(exc).__name__)
        if on_error is not None and exc is not None:
            on_error(exc)

    async def sleep(seconds: float) -> None:
        await wait(stop, seconds)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, (*on, *at_once))
                                 and not isinstance(exc, never)), wait=pause,
        sleep=sleep, before_sleep=before_sleep, reraise=True,
    ):
        with attempt:
            if attempt.retry_state.attempt_number > 1 and stop.is_set():
                raise Stopped
            return await call()
    raise AssertionError("unreachable")


async def repeat(job: Callable[[], Awaitable[object]], stop: asyncio.Event, *, every: float,
                 retry_every: float, on: tuple[type[BaseException], ...], message: str) -> None:
    """Until ``stop``: ``await job()`` (retried every ``retry_every`` s after an error in
    ``on``, see :func:`retry`), then wait ``every`` s (stop-aware)."""
    try:
        while not stop.is_set():
            await retry(job, stop, on=on, message=message, first=retry_every, cap=retry_every)
            await wait(stop, every)
    except Stopped:
        pass


# --------------------------------------------------------------------------- ops server

def ops_app(ready: Callable[[], bool], metrics: Iterable[Collector] = ()) -> Starlette:
    """/healthz (200), /readyz (200 or 503 by ``ready()``) and /metrics (the ``metrics``
    families, see :func:`platereg.metrics.exported`); GET and HEAD."""
    registry = exported(metrics)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def metrics_page(_: Request) -> Response:
        return Response(exposition(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"]),
                             Route("/readyz", readyz, methods=["GET"]),
                             Route("/metrics", metrics_page, methods=["GET"])])


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The process's own handlers (install_stop_signals) decide how it stops; the
        # ops server is stopped by OpsServer.stop. tests/unit/test_process.py checks it.
        yield


class OpsServer:
    """:func:`ops_app` on ``host:port`` (port 0: any free port, see ``port`` after start)."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool],
                 metrics: Iterable[Collector] = ()) -> None:
        self.host = host
        self.port = port
        self._server = _Server(uvicorn.Config(
            ops_app(ready, metrics), log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=2))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind now (an address in use fails here) and serve in the background."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family)
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="ops-server")
        log.info("ops server listening", host=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
            self._task = None


# --------------------------------------------------------------------------- the process

@dataclass
class ServiceProcess:
    """What :func:`service_process` hands its block."""

    stop: asyncio.Event
    health: Health
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` beside the main work; awaited (errors ignored) at the end."""
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task


@contextlib.asynccontextmanager
async def service_process(settings: Settings, *, port: int, metrics: Iterable[Collector],
                          started: bool = False) -> AsyncIterator[ServiceProcess]:
    """Stop signals, the ops server on ``port`` (its /metrics: the ``metrics`` families the
    process moves) and the health watcher for the block."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    proc = ServiceProcess(stop, Health(started=started))
    ops = OpsServer(settings.host, port, proc.health.ready, metrics)
    await ops.start()
    proc.spawn(watch_health(settings, proc.health, stop))
    try:
        yield proc
    finally:
        stop.set()
        await asyncio.gather(*proc.tasks, return_exceptions=True)
        await ops.stop()
