"""platereg.outbox.send_keyed: the partitions and per-partition order that send() would give.

The partition of each key is checked against aiokafka's own DefaultPartitioner
(murmur2, as the Java client), so the relay and ``producer.send`` agree.
"""

from __future__ import annotations

import asyncio

from aiokafka.partitioner import murmur2

from platereg.outbox import OutboxRecord, partition_for, send_keyed


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes, bytes, list]] = []
        self.capacity = capacity

    def append(self, *, key: bytes, value: bytes, timestamp: None,
               headers: list) -> object | None:
        assert timestamp is None
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value, headers))
        return object()


class FakeProducer:
    """Only the public producer API send_keyed may use."""

    def __init__(self, partitions: int, capacity: int) -> None:
        self.partitions = partitions
        self.capacity = capacity
        self.sent: list[tuple[str, int, list]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future:
        self.sent.append((topic, partition, list(batch.records)))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def java_partition(key: bytes, n: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % n


def test_each_message_goes_to_its_keys_partition_in_order() -> None:
    messages = [(f"CA-ON/P{i % 7}".encode(), f"v{i}".encode()) for i in range(50)]
    producer = FakeProducer(partitions=3, capacity=4)

    async def run() -> int:
        futures = await send_keyed(producer, "t", messages)
        await asyncio.gather(*futures)
        return len(futures)

    assert asyncio.run(run()) == len(producer.sent)
    assert {p for _, p, _ in producer.sent} == {java_partition(k, 3) for k, _ in messages}
    for partition in range(3):
        got = [(k, v) for topic, p, records in producer.sent if p == partition
               for k, v, _ in records]
        assert got == [m for m in messages if java_partition(m[0], 3) == partition]
    assert all(topic == "t" and 1 <= len(records) <= 4 for topic, _, records in producer.sent)


def test_records_keep_their_headers() -> None:
    records = [OutboxRecord(i, b"CA-QC/X1", b"v", [("h", str(i).encode())]) for i in range(3)]
    producer = FakeProducer(partitions=5, capacity=10)
    asyncio.run(send_keyed(producer, "t", records))
    [(_, partition, sent)] = producer.sent
    assert partition == java_partition(b"CA-QC/X1", 5) == partition_for(b"CA-QC/X1", range(5))
    assert [h for _, _, h in sent] == [[("h", b"0")], [("h", b"1")], [("h", b"2")]]
