"""`platereg serve registry` /readyz through a database outage and a broker outage: 503
naming the dependency that is down while /healthz stays 200, ready again once it is back.

Stops and starts the session's embedded servers (the ``embedded`` fixture), restoring them
whatever happens. The embedded broker keeps topics in memory: after its restart they are
gone, which /readyz (metadata reachable) does not depend on.
"""

from __future__ import annotations

import httpx
import pytest
from api_helpers import served_registry
from cli_support import eventually

pytestmark = pytest.mark.integration


async def _probe(url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        ready = await client.get("/readyz")
        assert (await client.get("/healthz")).status_code == 200   # the process is up
        return ready.status_code, ready.json()["checks"]


async def _wait_probe(url: str, expected: tuple[int, dict], message: str) -> None:
    async def matches() -> bool:
        return await _probe(url) == expected

    await eventually(matches, f"{message}; last /readyz: {await _probe(url)}", timeout=60)


async def test_readyz_follows_database_and_broker_outages(embedded, settings, tmp_path) -> None:
    ok = {"postgres": "ok", "kafka": "ok", "audit": "ok"}
    with served_registry(str(tmp_path / "api.log")) as served:
        await _wait_probe(served.url, (200, ok), "not ready at start")
        try:
            embedded.pg.stop()
            await _wait_probe(served.url, (503, {**ok, "postgres": "unreachable"}),
                              "still ready with the database down")
        finally:
            if not embedded.pg.running:
                embedded.pg.start()                 # same port, same data
        await _wait_probe(served.url, (200, ok), "not ready again after the database returned")

        try:
            embedded.kafka.stop()
            await _wait_probe(served.url, (503, {**ok, "kafka": "unreachable"}),
                              "still ready with the broker down")
        finally:
            if not embedded.kafka.running:
                embedded.kafka.start()              # same port, its log kept
        await _wait_probe(served.url, (200, ok), "not ready again after the broker returned")
