"""``platereg.db.FifoGate``: permits in arrival order and its own count of waiters."""

from __future__ import annotations

import asyncio

from platereg.db import FifoGate


async def test_waiters_are_counted_and_served_in_arrival_order() -> None:
    gate = FifoGate(1)
    await gate.enter()
    order: list[int] = []

    async def waiter(n: int) -> None:
        await gate.enter()
        order.append(n)
        gate.leave()

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert gate.waiting == 3
    gate.leave()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and gate.waiting == 0


async def test_a_cancelled_waiter_is_no_longer_counted() -> None:
    gate = FifoGate(1)
    await gate.enter()
    task = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert gate.waiting == 0
