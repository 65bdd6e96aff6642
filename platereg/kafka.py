"""Kafka plumbing: topic creation, producer and consumer factories.

Only standard Kafka APIs are used. Every client (producer, consumer, admin)
gets its connection options from :func:`client_options`: the bootstrap servers
and the TLS / SASL settings (``PLATEREG_KAFKA_SECURITY_PROTOCOL``,
``..._SASL_MECHANISM``, ``..._SASL_USERNAME``, ``..._SASL_PASSWORD``,
``..._SSL_CAFILE``). Producers are acks=all and idempotent (a retried send is
neither duplicated nor reordered in its partition); exactly-once *effects* do not
rest on that: they come from the registry consumer, which stores its offsets in
the same PostgreSQL transaction as the state and recognises an event it has
applied by its (source, id). ``PLATEREG_KAFKA_IDEMPOTENCE=false`` is for brokers
without idempotent producers (``make run``'s embedded fallback broker).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from platereg.logging import get_logger
from platereg.settings import ConfigError, Settings, kafka_security_problems
from schemas import topics

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka record as our code passes it around: what to produce (key, value), or
    what was consumed (value, partition, offset, headers)."""

    key: bytes | None
    value: bytes | None
    partition: int = -1
    offset: int = -1
    headers: tuple[tuple[str, bytes], ...] = ()


def security_options(settings: Settings) -> dict[str, object]:
    """The aiokafka keyword arguments for TLS and SASL; :class:`ConfigError` naming the
    variable when the settings do not fit together."""
    problems = kafka_security_problems(settings)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    protocol = settings.kafka_security_protocol
    options: dict[str, object] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        cafile = settings.kafka_ssl_cafile
        options["ssl_context"] = create_ssl_context(
            cafile=str(cafile) if cafile is not None else None)
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password.get_secret_value())
    return options


def client_options(settings: Settings, **overrides: object) -> dict[str, object]:
    """Bootstrap servers and security options for any aiokafka client, then ``overrides``."""
    options: dict[str, object] = {"bootstrap_servers": settings.bootstrap(),
                                  **security_options(settings)}
    options.update(overrides)
    return options


def make_admin(settings: Settings, **overrides: object) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(settings, **overrides))  # type: ignore[arg-type]


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
            admin = make_admin(settings, request_timeout_ms=10_000)
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
    """acks=all producer, idempotent unless ``PLATEREG_KAFKA_IDEMPOTENCE`` is off."""
    options = client_options(settings, acks="all",
                             enable_idempotence=settings.kafka_idempotence, linger_ms=5,
                             max_batch_size=256 * 1024,
                             request_timeout_ms=int(settings.kafka_timeout_seconds * 1000),
                             client_id="platereg")
    options.update(overrides)
    return AIOKafkaProducer(**options)  # type: ignore[arg-type]


def make_consumer(settings: Settings, *topic_names: str, **overrides: object) -> AIOKafkaConsumer:
    options = client_options(settings, enable_auto_commit=False, auto_offset_reset="earliest",
                             client_id="platereg")
    options.update(overrides)
    return AIOKafkaConsumer(*topic_names, **options)  # type: ignore[arg-type]


def producer_dead(producer: AIOKafkaProducer) -> bool:
    """True when a started producer's background sender has stopped: it sends nothing more.

    aiokafka has no public API for this; this is the one place that reads its
    internals (``_sender.sender_task``), and tests/unit/test_kafka_internals.py
    fails when they change.
    """
    task = producer._sender.sender_task
    return task is not None and task.done()


async def broker_reachable(settings: Settings, timeout: float = 3.0) -> bool:
    """Readiness probe: can we fetch cluster metadata?"""
    admin = make_admin(settings, request_timeout_ms=int(timeout * 1000))
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
