"""Kafka plumbing: topic creation, producer and consumer factories.

Only standard Kafka APIs are used, so Apache Kafka and the embedded Tansu
broker behave the same. Tansu has no idempotent or transactional producer, so
producers here are plain acks=all producers; exactly-once effects come from
the idempotent registry consumer.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from platereg.logging import get_logger
from platereg.settings import Settings
from schemas import topics

log = get_logger(__name__)


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Real topic name -> partition count for the four contract topics."""
    return {
        settings.topic(topics.EVENTS): settings.events_partitions,
        settings.topic(topics.DLQ): settings.dlq_partitions,
        settings.topic(topics.STATUS): settings.status_partitions,
        settings.topic(topics.NOTICES): settings.notices_partitions,
    }


async def ensure_topics(settings: Settings, *, retry_for: float = 30.0) -> list[str]:
    """Create the contract topics that do not exist yet; returns those created."""
    wanted = topic_partitions(settings)
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((KafkaError, OSError, asyncio.TimeoutError)),
        wait=wait_exponential(multiplier=0.2, max=3),
        stop=stop_after_delay(retry_for),
        reraise=True,
    ):
        with attempt:
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap(),
                                        request_timeout_ms=10_000)
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                missing = [
                    NewTopic(name, partitions, settings.replication_factor)
                    for name, partitions in wanted.items()
                    if name not in existing
                ]
                if missing:
                    try:
                        await admin.create_topics(missing)
                    except TopicAlreadyExistsError:
                        pass  # another process won the race
                    log.info("topics created", topics=[t.name for t in missing])
                return [t.name for t in missing]
            finally:
                await admin.close()
    raise AssertionError("unreachable")


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """acks=all producer; no idempotence (unsupported by Tansu, see module doc)."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap(),
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": int(settings.kafka_timeout_seconds * 1000),
        "client_id": "platereg",
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)  # type: ignore[arg-type]


def make_consumer(settings: Settings, *topic_names: str, **overrides: object) -> AIOKafkaConsumer:
    options: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap(),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "client_id": "platereg",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topic_names, **options)  # type: ignore[arg-type]


async def broker_reachable(settings: Settings, timeout: float = 3.0) -> bool:
    """Readiness probe: can we fetch cluster metadata?"""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap(),
                                request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
        return True
    except Exception:  # noqa: BLE001 - readiness only reports
        return False
    finally:
        try:
            await asyncio.wait_for(admin.close(), timeout)
        except Exception:  # noqa: BLE001, S110
            pass
