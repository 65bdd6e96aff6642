"""Hostile and broken clients against the real servers (`platereg serve ...` processes):
dropped uploads, slow headers and bodies, more concurrent requests than the cap, rate limits
under load. Each must cost the server little, answer fast and log nothing private."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
from api_helpers import bearer, insert_plate, role_keys, served_registry

pytestmark = pytest.mark.integration

DROPS = 300
PLATE = "DROPPL8"


async def _drop_upload(port: int, key: str) -> None:
    """Announce 500 bytes, send part of them (a plate included), then close the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"plates": [{"jurisdiction": "CA-ON", "plate": "' + PLATE.encode() + b'"}, '
    writer.write(b"POST /v1/plates/lookup HTTP/1.1\r\nHost: registry\r\n"
                 b"Authorization: Bearer " + key.encode() + b"\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n" + body)
    await writer.drain()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_dropped_uploads_cost_one_log_line_and_never_stall(settings, pool,
                                                                 tmp_path) -> None:
    await insert_plate(pool, "CA-ON", PLATE)
    key = (await role_keys(pool))["enforcement"]
    with served_registry(str(tmp_path / "api.log")) as served:  # console log format
        port = int(served.url.rsplit(":", 1)[1])
        baseline = len(served.log().splitlines())
        slow_health: list[float] = []
        async with httpx.AsyncClient(base_url=served.url, timeout=1.0) as client:
            done = asyncio.Event()

            async def watch_health() -> None:
                while not done.is_set():
                    started = time.monotonic()
                    try:
                        r = await client.get("/healthz")
                        assert r.status_code == 200
                    except httpx.TimeoutException:
                        slow_health.append(time.monotonic() - started)
                        done.set()  # the test has failed: stop at once
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch_health())
            for _ in range(DROPS // 20):  # 20 at a time
                await asyncio.gather(*(_drop_upload(port, key) for _ in range(20)))
                if done.is_set():
                    break

            def handled() -> int:
                return served.log().count("route=/v1/plates/lookup")

            deadline = time.monotonic() + 60
            while (not done.is_set() and handled() < DROPS
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.1)
            done.set()
            await watcher
            assert slow_health == [], f"/healthz took over 1 s:\n{served.log()[-3000:]}"
            ok = await client.post("/v1/plates/lookup", headers=bearer(key), json={
                "plates": [{"jurisdiction": "CA-ON", "plate": PLATE}]})
        served.stop()
    log = served.log()
    assert ok.status_code == 200
    assert log.count("route=/v1/plates/lookup") >= DROPS, log[-3000:]
    assert "status=499" in log
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    for secret in (key, key.split("_")[-1], "Bearer", PLATE, '"plates"'):
        assert secret not in log, secret
    assert len(log.splitlines()) - baseline <= 2 * DROPS + 20
