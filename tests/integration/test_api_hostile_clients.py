"""Hostile and broken clients against the real servers (`platereg serve ...` processes):
dropped uploads, slow bodies, idle keep-alive connections, more concurrent requests than the
cap, rate limits under load. Each must cost the server little, answer fast and log nothing
private. (Slow headers are the reverse proxy's to cut off: docs/operations.md.)"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import httpx
import pytest
from api_helpers import bearer, insert_plate, role_keys, served_registry

pytestmark = pytest.mark.integration

DROPS = 300
CAP1 = {"jurisdiction": "CA-ON", "plate": "CAP1", "purpose": "testing"}
PLATE = "DROPPL8"


async def _drop_upload(port: int, key: str, path: bytes = b"/v1/plates/lookup") -> None:
    """Announce 500 bytes, send part of them (a plate included), then close the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"plates": [{"jurisdiction": "CA-ON", "plate": "' + PLATE.encode() + b'"}, '
    writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: registry\r\n"
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
                "plates": [{"jurisdiction": "CA-ON", "plate": PLATE}], "purpose": "testing"})
        served.stop()
    log = served.log()
    assert ok.status_code == 200
    assert log.count("route=/v1/plates/lookup") >= DROPS, log[-3000:]
    assert "status=499" in log
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    for secret in (key, key.split("_")[-1], "Bearer", PLATE, '"plates"'):
        assert secret not in log, secret
    assert len(log.splitlines()) - baseline <= 2 * DROPS + 20


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def _trickle(port: int, head: bytes, drip: bytes) -> bytes:
    """Send ``head``, then one byte of ``drip`` every 0.2 s until the server answers or
    closes (at most 30 s); returns everything the server sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    answer = asyncio.create_task(_read_all(reader))
    try:
        for i in range(150):
            if answer.done():
                break
            if drip:
                with contextlib.suppress(ConnectionError):
                    writer.write(drip[i % len(drip):i % len(drip) + 1])
                    await writer.drain()
            await asyncio.wait([answer], timeout=0.2)
        assert answer.done(), "the server kept a trickling client for 30 s"
        return answer.result()
    finally:
        writer.close()


async def _idle_after_answer(port: int) -> tuple[bytes, float]:
    """One request on a keep-alive connection, then nothing: (what the server sent, seconds
    from the answer until it closed the connection; at most 30)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
    await writer.drain()
    answered = time.monotonic()
    try:
        data = await asyncio.wait_for(_read_all(reader), 30)
    finally:
        writer.close()
    return data, time.monotonic() - answered


async def test_slow_bodies_and_idle_connections_are_cut_off(settings, pool, tmp_path) -> None:
    key = (await role_keys(pool))["enforcement"]
    env = {"PLATEREG_HTTP_BODY_TIMEOUT_SECONDS": "1",
           "PLATEREG_HTTP_KEEPALIVE_TIMEOUT_SECONDS": "1"}
    with served_registry(str(tmp_path / "api.log"), env=env) as served:
        port = int(served.url.rsplit(":", 1)[1])
        body_head = (b"POST /v1/plates/lookup HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer "
                     + key.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        slow_body, (idle, idle_for) = await asyncio.gather(
            _trickle(port, body_head, b" "), _idle_after_answer(port))
        async with httpx.AsyncClient(base_url=served.url) as client:  # still serving
            assert (await client.get("/healthz")).status_code == 200
        served.stop()
    assert slow_body.startswith(b"HTTP/1.1 408 "), slow_body[:200]
    assert b"application/problem+json" in slow_body
    assert idle.startswith(b"HTTP/1.1 200 ") and idle_for < 10, (idle[:100], idle_for)
    log = served.log()
    assert "status=408" in log and "Traceback" not in log


async def _hold_upload(port: int, key: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A lookup whose body is never finished: it stays in progress on the server."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/plates/lookup HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer "
                 + key.encode() + b"\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{")
    await writer.drain()
    return reader, writer


async def test_requests_over_the_cap_get_503_at_once(settings, pool, tmp_path) -> None:
    await insert_plate(pool, "CA-ON", "CAP1")
    key = (await role_keys(pool))["enforcement"]
    env = {"PLATEREG_HTTP_MAX_CONCURRENT_REQUESTS": "2"}
    with served_registry(str(tmp_path / "api.log"), env=env) as served:
        port = int(served.url.rsplit(":", 1)[1])
        held = [await _hold_upload(port, key) for _ in range(2)]
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
            refused = None
            for _ in range(200):  # until the server counts both held requests
                r = await client.post("/v1/plates/query", headers=bearer(key), json=CAP1)
                if r.status_code == 503:
                    refused = r
                    break
                assert r.status_code == 200
            assert refused is not None, "never refused with 2 requests in progress"
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["content-type"] == "application/problem+json"
            # The held requests wait for their bodies (30 s): the 503 did not queue behind them.
            assert (await client.get("/healthz")).status_code == 200  # probes are not capped
            for _, writer in held:
                writer.close()
            for _ in range(200):  # the closed uploads end; capacity comes back
                r = await client.post("/v1/plates/query", headers=bearer(key), json=CAP1)
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert r.status_code == 200
        served.stop()
    log = served.log()
    assert "status=503" in log and "status=499" in log


async def test_dropped_uploads_to_the_ingest_api_are_one_line_each(settings, pool,
                                                                   tmp_path) -> None:
    import os
    import subprocess
    import sys

    from devtools.embedded import free_port, stop_process

    key = (await role_keys(pool))["ingest"]
    port = free_port()
    log_path = tmp_path / "ingest.log"
    env = {**os.environ, "PLATEREG_INGEST_PORT": str(port)}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "wiring.cli", "serve", "ingest"],
                                env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1) as c:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await c.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            for _ in range(5):
                await asyncio.gather(*(_drop_upload(port, key, b"/v1/events")
                                       for _ in range(20)))
                assert (await c.get("/healthz")).status_code == 200
            for _ in range(300):  # until the server has handled the 100 drops
                if log_path.read_text().count("status=499") >= 100:
                    break
                await asyncio.sleep(0.1)
    finally:
        stop_process(proc, signal.SIGTERM, 30)
    log = log_path.read_text()
    assert log.count("status=499") == 100, log[-3000:]
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    for secret in (key, "Bearer", PLATE):
        assert secret not in log, secret
