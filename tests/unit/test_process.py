"""platereg.process: the ops server, the stop signals, the stop-aware sleep, retry and repeat."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from platereg import metrics
from platereg.process import Health, OpsServer, Stopped, repeat, retry, wait


async def test_ops_server_answers_health_readiness_and_metrics() -> None:
    health = Health()
    ops = OpsServer("127.0.0.1", 0, health.ready, metrics.NOTICE_SCHEDULER)
    port = await ops.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            assert (await client.get("/readyz")).status_code == 503
            health.started = health.db_ok = health.kafka_ok = True
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
            exported = await client.get("/metrics")
            assert exported.status_code == 200
            assert exported.headers["content-type"].startswith("text/plain")
            families = {f.name for f in text_string_to_metric_families(exported.text)}
            assert {"platereg_notices", "platereg_notice_scheduler_last_run_timestamp_seconds",
                    "process_cpu_seconds", "python_info"} <= families
            assert not {"platereg_events", "platereg_lookups"} & families   # not its own
            assert "_created" not in exported.text
            assert (await client.head("/healthz")).status_code == 200
            assert (await client.post("/healthz")).status_code == 405
            assert (await client.get("/other")).status_code == 404
    finally:
        await ops.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


async def test_ops_server_leaves_the_process_signal_handlers_alone() -> None:
    """uvicorn's own signal capture is off: SIGINT still reaches the process's handler."""
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, got.set)
    before = signal.getsignal(signal.SIGINT)
    ops = OpsServer("127.0.0.1", 0, lambda: True)
    await ops.start()
    try:
        async with httpx.AsyncClient() as client:   # uvicorn's serve() has begun
            assert (await client.get(f"http://127.0.0.1:{ops.port}/healthz")).status_code == 200
            assert signal.getsignal(signal.SIGINT) is before
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.wait_for(got.wait(), 5)
            # the server was not stopped by the signal
            assert (await client.get(f"http://127.0.0.1:{ops.port}/healthz")).status_code == 200
    finally:
        await ops.stop()
        loop.remove_signal_handler(signal.SIGINT)


async def test_an_address_in_use_fails_at_start() -> None:
    first = OpsServer("127.0.0.1", 0, lambda: True)
    port = await first.start()
    try:
        with pytest.raises(OSError):
            await OpsServer("127.0.0.1", port, lambda: True).start()
    finally:
        await first.stop()


async def test_wait_returns_on_stop_or_wakeup_and_clears_wakeup() -> None:
    stop, wakeup = asyncio.Event(), asyncio.Event()
    wakeup.set()
    assert await wait(stop, 60, wakeup) is False
    assert not wakeup.is_set()
    stop.set()
    assert await wait(stop, 60) is True


async def test_retry_retries_listed_errors_then_returns() -> None:
    stop = asyncio.Event()
    calls: list[int] = []
    seen: list[str] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("down")
        return "up"

    result = await retry(flaky, stop, on=(OSError,), message="down; retrying", first=0.001,
                         on_error=lambda exc: seen.append(type(exc).__name__))
    assert (result, len(calls), seen) == ("up", 3, ["OSError", "OSError"])


async def test_retry_stops_when_stop_is_set_and_lets_other_errors_through() -> None:
    stop = asyncio.Event()

    async def down() -> None:
        stop.set()
        raise OSError("down")

    with pytest.raises(Stopped):
        await retry(down, stop, on=(OSError,), message="m",
                    first=60)

    async def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await retry(broken, asyncio.Event(), on=(OSError,), message="m")


async def test_retry_lets_a_never_error_through_at_once_though_its_base_is_listed() -> None:
    """The broker refusing this principal is a KafkaError, but waiting will not help."""
    from aiokafka.errors import GroupAuthorizationFailedError, KafkaError

    from platereg.kafka import AUTHORIZATION_ERRORS

    calls: list[int] = []

    async def refused() -> None:
        calls.append(1)
        raise GroupAuthorizationFailedError("platereg-registry")

    with pytest.raises(GroupAuthorizationFailedError):
        await retry(refused, asyncio.Event(), on=(KafkaError,), never=AUTHORIZATION_ERRORS,
                    message="m", first=0.001)
    assert calls == [1]


async def test_repeat_runs_the_job_again_retries_listed_errors_and_ends_on_stop() -> None:
    stop = asyncio.Event()
    outcomes = ["ok", "down", "ok", "down", "ok"]
    seen: list[str] = []

    async def job() -> None:
        outcome = outcomes.pop(0)
        seen.append(outcome)
        if outcome == "down":
            raise OSError("down")
        if not outcomes:
            stop.set()

    await repeat(job, stop, every=0.001, retry_every=0.001, on=(OSError,), message="m")
    assert seen == ["ok", "down", "ok", "down", "ok"]

    async def down_then_stop() -> None:
        stop.set()
        raise OSError("down")

    stop.clear()
    await repeat(down_then_stop, stop, every=60, retry_every=60, on=(OSError,), message="m")

    async def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await repeat(broken, asyncio.Event(), every=60, retry_every=60, on=(OSError,),
                     message="m")
