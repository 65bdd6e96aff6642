"""The notices processes: ``platereg notices schedule`` and ``platereg notices dispatch``.

Each serves /healthz, /readyz and /metrics like the registry consumer (the
same ops server, health watch and stop signals).
"""

from __future__ import annotations

import asyncio

from notifications.dispatcher import Dispatcher
from notifications.relay import run_notices_relay
from notifications.scheduler import run_scheduler
from platereg.kafka import ensure_topics
from platereg.ops_server import OpsServer
from platereg.settings import Settings
from registry.consumer import Health, install_stop_signals, watch_health


async def _serve(settings: Settings, port: int, health: Health, stop: asyncio.Event,
                 work: list) -> int:
    ops = OpsServer(settings.host, port, health.ready)
    await ops.start()
    tasks = [asyncio.create_task(watch_health(settings, health, settings.dsn(), stop))]
    try:
        try:
            await ensure_topics(settings, retry_for=10)
        except Exception:  # noqa: BLE001, S110 - the loops retry on their own
            pass
        health.started = True
        await asyncio.gather(*work)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ops.stop()
    return 0


async def serve_scheduler(settings: Settings, *, port: int | None = None,
                          every: float = 30.0) -> int:
    """The scheduler and the notices outbox relay until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    wakeup = asyncio.Event()
    return await _serve(
        settings, settings.notices_scheduler_port if port is None else port, Health(), stop,
        [run_scheduler(settings, stop, every=every, wakeup=wakeup),
         run_notices_relay(settings, stop, wakeup)])


async def serve_dispatcher(settings: Settings, *, port: int | None = None) -> int:
    """The dispatcher until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    health = Health()
    dispatcher = Dispatcher(settings)

    async def run() -> None:
        await dispatcher.run(stop)

    return await _serve(settings, settings.notices_dispatcher_port if port is None else port,
                        health, stop, [run()])
