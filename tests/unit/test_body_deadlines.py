"""The request-body deadline (platereg.http.BodyDeadlines): one timer for every request
waiting for its body, on a real event loop, no server."""

from __future__ import annotations

import asyncio

import pytest

from platereg.http import BodyDeadlines, _BodyTimeout


def _receive_after(delay: float | None):
    """An ASGI receive whose body arrives after ``delay`` seconds (None: never)."""
    async def receive():
        if delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": b"{}", "more_body": False}
    return receive


async def test_a_body_that_arrives_in_time_is_returned() -> None:
    deadlines = BodyDeadlines(tick=0.01)
    loop = asyncio.get_running_loop()
    message = await deadlines.receive(_receive_after(0.05), loop.time() + 1)
    assert message["body"] == b"{}"
    assert not deadlines._waiting and not deadlines._expired


async def test_a_body_past_its_deadline_raises_body_timeout_near_the_deadline() -> None:
    deadlines = BodyDeadlines(tick=0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(deadlines.receive(_receive_after(None), started + 0.2))
    done, _ = await asyncio.wait({task}, timeout=3)
    took = loop.time() - started
    assert task in done, "the deadline never fired"
    with pytest.raises(_BodyTimeout):
        task.result()
    assert 0.2 <= took < 1.0, took
    assert task.cancelling() == 0   # the timeout's own cancel was taken back
    assert not deadlines._waiting and not deadlines._expired


async def test_each_request_has_its_own_deadline() -> None:
    deadlines = BodyDeadlines(tick=0.02)
    loop = asyncio.get_running_loop()
    now = loop.time()
    slow = asyncio.create_task(deadlines.receive(_receive_after(None), now + 0.1))
    fast = asyncio.create_task(deadlines.receive(_receive_after(0.3), now + 5))
    with pytest.raises(_BodyTimeout):
        await asyncio.wait_for(slow, 3)
    assert (await fast)["type"] == "http.request"   # the other request kept waiting


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    """A server cancelling a request (shutdown, disconnect) is not a body timeout."""
    deadlines = BodyDeadlines(tick=0.02)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(deadlines.receive(_receive_after(None), loop.time() + 5))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._waiting


async def test_the_timer_stops_when_nobody_waits_and_starts_again() -> None:
    deadlines = BodyDeadlines(tick=0.01)
    loop = asyncio.get_running_loop()
    await deadlines.receive(_receive_after(0), loop.time() + 1)
    await asyncio.sleep(0.05)
    assert deadlines._timer_loop is None   # no request waits: no timer armed
    with pytest.raises(_BodyTimeout):
        await asyncio.wait_for(deadlines.receive(_receive_after(None), loop.time() + 0.05), 3)
