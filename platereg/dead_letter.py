"""Dead-lettering: a message a consumer cannot use goes to the dead-letter topic with a reason.

The contract's DLQ record (section 2, "Rejections"): the original key, bytes and
headers, and the headers ``x-dlq-reason``, ``x-dlq-detail``, ``x-original-topic``,
``x-original-partition``, ``x-original-offset``; where the broker cannot take the
original bytes back, no value and ``x-dlq-value-omitted: true``.

The registry consumer records its rejections in an outbox (``dlq_messages``,
relayed by ``registry.consumer.relay``). A consumer that keeps no such table (the notice
dispatcher) sends them with :class:`DeadLetters` after the broker acknowledged
them and before it commits its offsets: a crash in between sends them again (at
least once, as the outbox relays publish) and none is lost. Details are short
texts without personal data; nothing here logs a key or a value.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from platereg import metrics
from platereg.kafka import make_producer
from platereg.logging import get_logger
from platereg.outbox import MAX_REQUEST_SIZE
from platereg.settings import Settings
from schemas import topics

log = get_logger(__name__)

VALUE_OMITTED_HEADER = "x-dlq-value-omitted"


def dlq_headers(reason: str, detail: str, topic: str, partition: int,
                offset: int) -> list[tuple[str, bytes]]:
    """The contract's headers of a dead-lettered message."""
    return [
        (topics.DLQ_REASON_HEADER, reason.encode()),
        (topics.DLQ_DETAIL_HEADER, detail.encode()),
        (topics.ORIGINAL_TOPIC_HEADER, topic.encode()),
        (topics.ORIGINAL_PARTITION_HEADER, str(partition).encode()),
        (topics.ORIGINAL_OFFSET_HEADER, str(offset).encode()),
    ]


#: Original headers that are not copied to the dead-letter record: the DLQ's own names
#: (a producer cannot pass off its headers as the registry's verdict).
_OWN_HEADERS = frozenset((*topics.DLQ_HEADERS, VALUE_OMITTED_HEADER))


def kept_headers(original: Iterable[tuple[str, bytes | None]]) -> list[tuple[str, bytes]]:
    """The original headers a dead-letter copy keeps, in their order."""
    return [(name, value or b"") for name, value in original if name not in _OWN_HEADERS]


def headers_json(headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    """Headers as stored in ``dlq_messages.headers``: JSON ``[[name, base64], ...]``."""
    if not headers:
        return None
    return orjson.dumps([[name, base64.b64encode(value or b"").decode()]
                         for name, value in headers]).decode()


def headers_of_json(stored: Any) -> list[tuple[str, bytes]]:
    """:func:`headers_json` read back (a decoded jsonb value, its text, or NULL)."""
    if stored is None:
        return []
    if isinstance(stored, str):
        stored = orjson.loads(stored)
    return [(str(name), base64.b64decode(value)) for name, value in stored]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One consumed message that goes to the DLQ, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    original_headers: tuple[tuple[str, bytes | None], ...] = ()

    def headers(self) -> list[tuple[str, bytes]]:
        """The original headers, then the contract's DLQ headers."""
        return [*kept_headers(self.original_headers),
                *dlq_headers(self.reason, self.detail, self.topic, self.partition, self.offset)]


class DeadLetters:
    """Sends :class:`DeadLetter` s to the DLQ topic; the producer starts on first use (a
    consumer that never meets a bad message never connects one)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = make_producer(self.settings, max_request_size=MAX_REQUEST_SIZE)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self.producer = producer
        return self.producer

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Send ``letters`` and wait for the broker's acknowledgements (KafkaError: none
        is known to be sent; the caller sends them again)."""
        if not letters:
            return
        producer = await self._started()
        topic = self.settings.topic(topics.DLQ)
        futures = []
        for letter in letters:
            value, headers = letter.value, letter.headers()
            if len(letter.key or b"") + len(value or b"") + 1024 > MAX_REQUEST_SIZE:
                value, headers = None, [*headers, (VALUE_OMITTED_HEADER, b"true")]
            futures.append(await producer.send(topic, key=letter.key, value=value,
                                               headers=headers))
        for future in futures:
            await future
        for letter in letters:
            metrics.DLQ.labels(letter.reason).inc()
            log.warning("message dead-lettered", topic=letter.topic, partition=letter.partition,
                        offset=letter.offset, reason=letter.reason)

    async def close(self) -> None:
        if self.producer is not None:
            producer, self.producer = self.producer, None
            await producer.stop()
