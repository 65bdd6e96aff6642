"""The one aiokafka internal we read (platereg.kafka.producer_dead) is still there."""

from __future__ import annotations

import asyncio
import inspect

from aiokafka import AIOKafkaProducer
from aiokafka.producer.sender import Sender

from platereg.kafka import producer_dead


async def test_producer_dead_reads_the_sender_task() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    assert isinstance(producer._sender, Sender)
    assert isinstance(inspect.getattr_static(Sender, "sender_task"), property)
    assert producer_dead(producer) is False          # not started: no task yet

    async def finished() -> None:
        return None

    task = asyncio.ensure_future(finished())
    await task
    producer._sender._sender_task = task              # what start() sets, then it ended
    assert producer._sender.sender_task is task
    assert producer_dead(producer) is True
