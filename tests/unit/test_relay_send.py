"""registry.relay.send_keyed: the partitions and per-partition order that send() would give."""

from __future__ import annotations

import asyncio

from registry.relay import send_keyed


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.capacity = capacity

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object | None:
        assert timestamp is None
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    def __init__(self, partitions: int, capacity: int) -> None:
        self.partitions = partitions
        self.capacity = capacity
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes]]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def _partition(self, topic, partition, key, value, key_bytes, value_bytes):  # noqa: ANN001, ANN202
        assert partition is None and key == key_bytes and value == value_bytes
        return sum(key) % self.partitions

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future:
        self.sent.append((topic, partition, list(batch.records)))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def test_each_message_goes_to_its_keys_partition_in_order() -> None:
    messages = [(f"CA-ON/P{i % 7}".encode(), f"v{i}".encode()) for i in range(50)]
    producer = FakeProducer(partitions=3, capacity=4)

    async def run() -> int:
        futures = await send_keyed(producer, "t", messages)
        await asyncio.gather(*futures)
        return len(futures)

    assert asyncio.run(run()) == len(producer.sent)
    for partition in range(3):
        got = [r for topic, p, records in producer.sent if p == partition for r in records]
        assert got == [m for m in messages if sum(m[0]) % 3 == partition]
    assert all(topic == "t" and 1 <= len(records) <= 4 for topic, _, records in producer.sent)
