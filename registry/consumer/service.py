"""The wiring of ``platereg consume registry`` and ``platereg consume relay``: which parts
run in the process, started and stopped together.

The registry consumer (``registry.consumer.loop``), the outbox relays
(``registry.consumer.relay``) and the expiry sweep (``registry.consumer.expiry``) run in one
process by default, with the ops server and health watcher of
``platereg.process``; parsing can go to worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor

from platereg import metrics
from platereg.kafka import require_topics
from platereg.logging import get_logger
from platereg.process import service_process
from platereg.settings import Settings
from registry.consumer import parse_worker
from registry.consumer.expiry import run_sweeper
from registry.consumer.loop import RegistryConsumer
from registry.consumer.relay import run_relays
from registry.consumer.store import BatchHook
from schemas import topics

log = get_logger(__name__)

#: The topics the relays write (the consumer reads plates.events besides).
RELAYED = (topics.STATUS, topics.DLQ)


def _warm_up(executor: Executor, workers: int) -> None:
    """Have the parse workers started (a worker imports ``parse_worker``, so the parse code
    too) before the first batch."""
    for f in [executor.submit(parse_worker.ready) for _ in range(workers)]:
        f.result()


async def _start_workers(executor: Executor, workers: int) -> None:
    """:func:`_warm_up` in a thread (starting a worker blocks), then say so: until
    then a batch may wait for a worker that is still importing."""
    await asyncio.to_thread(_warm_up, executor, workers)
    log.info("parse workers ready", workers=workers)


async def serve_registry_consumer(settings: Settings, *, batch_hook: BatchHook,
                                  relays: bool = True, sweep: bool = True,
                                  metrics_port: int | None = None, max_records: int = 5000,
                                  parse_workers: int = 0) -> int:
    """The whole ``platereg consume registry`` process until SIGTERM/SIGINT; ``batch_hook``
    runs in every batch's transaction (the composition root, ``wiring.cli``, gives it)."""
    port = settings.consumer_metrics_port if metrics_port is None else metrics_port
    families = metrics.REGISTRY_CONSUMER + (metrics.EXPIRY_SWEEPER if sweep else ())
    async with service_process(settings, port=port, metrics=families) as proc:
        await require_topics(settings, (topics.EVENTS, *(RELAYED if relays else ())))
        executor = None
        warm_up: asyncio.Task | None = None
        if parse_workers > 0:
            # spawn: a fresh interpreter per worker, which imports only the command tree
            # and the parse code (``parse_worker``); no fork server process beside it.
            executor = ProcessPoolExecutor(
                parse_workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=parse_worker.start, initargs=(os.getpid(),))
            # Start the workers now, so they are up by the end of the group join instead
            # of at the first batch.
            warm_up = asyncio.create_task(_start_workers(executor, parse_workers))
        wakeup = asyncio.Event()
        consumer = RegistryConsumer(settings, max_records=max_records, parse_executor=executor,
                                    health=proc.health, on_commit=wakeup,
                                    batch_hook=batch_hook)
        if relays:
            proc.spawn(run_relays(settings, proc.stop, wakeup))
        if sweep:
            proc.spawn(run_sweeper(settings, proc.stop, wakeup))
        try:
            await consumer.run(proc.stop)
        finally:
            proc.stop.set()
            if executor is not None:
                if warm_up is not None:
                    with contextlib.suppress(Exception):
                        await warm_up
                executor.shutdown(cancel_futures=True)
    return 0


async def serve_relays(settings: Settings, *, metrics_port: int | None = None) -> int:
    """``platereg consume relay``: the relays and the expiry sweep without the consumer."""
    port = settings.consumer_metrics_port if metrics_port is None else metrics_port
    async with service_process(settings, port=port, metrics=metrics.EXPIRY_SWEEPER,
                               started=True) as proc:
        await require_topics(settings, RELAYED)
        wakeup = asyncio.Event()
        proc.spawn(run_sweeper(settings, proc.stop, wakeup))
        await run_relays(settings, proc.stop, wakeup)
    return 0
