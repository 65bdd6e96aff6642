"""`platereg consume relay` run twice: one process publishes at a time, and when it is
killed (SIGKILL: no clean release) the other takes over, without publishing anything twice.

Observed only from outside: rows put in the outboxes as the consumer writes them, and
what arrives on plates.status and plates.events.dlq.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

import asyncpg
import pytest
from cli_support import eventually, http_status, popen

from devtools.embedded import free_port, stop_process
from platereg.dead_letter import DeadLetter
from platereg.settings import Settings
from registry.consumer import store
from schemas import topics as contract
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.integration


class Outboxes:
    """Rows added round by round; what the topics must hold, each exactly once."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings, self.pool = settings, pool
        self.status: list[bytes] = []
        self.dlq: list[bytes] = []

    async def add_round(self, n: int, changes: int = 3) -> None:
        """``changes`` status changes (one transaction, as a consumer batch writes them)
        and two rejections."""
        await self.pool.execute(
            """INSERT INTO status_changes (plate_key, view, flagged, was_flagged)
               SELECT 'CA-ON/R' || $1::int || 'X' || g,
                      jsonb_build_object('jurisdiction', 'CA-ON', 'plate',
                                         'R' || $1::int || 'X' || g, 'status', 'stolen',
                                         'flags', jsonb_build_array('stolen')),
                      true, false
               FROM generate_series(1, $2::int) AS g""", n, changes)
        self.status += [f"CA-ON/R{n}X{g}".encode() for g in range(1, changes + 1)]
        async with self.pool.acquire() as conn:
            await store.RegistrySql(conn).insert_dlq([
                DeadLetter(self.settings.topic(contract.EVENTS), 0, 100 * n + i, None,
                           f"round {n} bad {i}".encode(), "malformed_json", "x")
                for i in range(2)])
        self.dlq += [f"round {n} bad {i}".encode() for i in range(2)]

    async def published(self) -> tuple[Counter, Counter]:
        status = await read_topic(self.settings, self.settings.topic(contract.STATUS))
        dlq = await read_topic(self.settings, self.settings.topic(contract.DLQ))
        return Counter(r.key for r in status), Counter(r.value for r in dlq)

    async def wait_all_published(self, procs: list) -> None:
        async def arrived() -> bool:
            status, dlq = await self.published()
            return set(status) >= set(self.status) and set(dlq) >= set(self.dlq)

        await eventually(arrived, "the outboxes were not relayed", timeout=60, procs=procs)
        status, dlq = await self.published()
        assert status == Counter(self.status), "a status change published twice or unknown"
        assert dlq == Counter(self.dlq), "a rejection published twice or unknown"


def start_relay(tmp_path, name: str) -> tuple[object, int]:
    port = free_port()
    with open(tmp_path / f"{name}.log", "wb") as log:
        proc = popen("consume", "relay", "--metrics-port", str(port), stdout=log, stderr=log)
    return proc, port


async def test_one_relay_publishes_and_the_other_takes_over_after_sigkill(
        topics, pool, tmp_path) -> None:
    boxes = Outboxes(topics, pool)
    first, first_port = start_relay(tmp_path, "first")
    second = None
    try:
        await boxes.add_round(1)
        await boxes.wait_all_published([first])            # alone: the first one leads

        second, second_port = start_relay(tmp_path, "second")
        await eventually(lambda: http_status(f"http://127.0.0.1:{second_port}/readyz"),
                         "the second relay did not start", procs=[second])
        # Both running. A big round keeps the leader publishing for a while (batch after
        # batch), long enough for a second publisher, if there were one, to join in.
        await boxes.add_round(2, changes=20_000)
        await boxes.wait_all_published([first, second])
        for n in (3, 4):
            await boxes.add_round(n)
            await boxes.wait_all_published([first, second])

        os.kill(first.pid, signal.SIGKILL)                  # the leader dies without a word
        first.wait(10)
        for n in (5, 6):                                    # the stand-by takes over
            await boxes.add_round(n)
            await boxes.wait_all_published([second])
        assert await http_status(f"http://127.0.0.1:{first_port}/healthz") is None

        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_process(proc, signal.SIGKILL, 10)
