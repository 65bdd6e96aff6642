"""The notices processes: ``platereg notices schedule`` and ``platereg notices dispatch``.

Each serves /healthz, /readyz and /metrics like the registry consumer (the
same ops server, health watch and stop signals: ``platereg.process``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client.registry import Collector

from notifications.dispatcher import Dispatcher
from notifications.relay import run_notices_relay
from notifications.scheduler import run_scheduler
from platereg import metrics
from platereg.kafka import require_topics
from platereg.process import service_process
from platereg.settings import Settings
from schemas import topics


async def _serve(settings: Settings, port: int, families: tuple[Collector, ...],
                 uses: tuple[str, ...],
                 work: Callable[[asyncio.Event], list[Coroutine[Any, Any, Any]]]) -> int:
    async with service_process(settings, port=port, metrics=families) as proc:
        await require_topics(settings, uses)
        proc.health.started = True
        await asyncio.gather(*work(proc.stop))
    return 0


async def serve_scheduler(settings: Settings, *, port: int | None = None,
                          every: float = 30.0) -> int:
    """The scheduler and the notices outbox relay until SIGTERM/SIGINT."""
    wakeup = asyncio.Event()
    return await _serve(
        settings, settings.notices_scheduler_port if port is None else port,
        metrics.NOTICE_SCHEDULER, (topics.NOTICES,),
        lambda stop: [run_scheduler(settings, stop, every=every, wakeup=wakeup),
                      run_notices_relay(settings, stop, wakeup)])


async def serve_dispatcher(settings: Settings, *, port: int | None = None) -> int:
    """The dispatcher until SIGTERM/SIGINT."""
    dispatcher = Dispatcher(settings)
    return await _serve(settings, settings.notices_dispatcher_port if port is None else port,
                        metrics.NOTICE_DISPATCHER, (topics.NOTICES, topics.DLQ),
                        lambda stop: [dispatcher.run(stop)])
