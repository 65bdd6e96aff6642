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

Topics are created by ``platereg topics`` only (the deployment's prestart step,
as a principal allowed to create them); a service checks at start that its
topics exist (:func:`require_topics`) and stops with a message naming the
topic and that command when one does not. A refusal by the broker's ACLs is
not retried: it does not go away by waiting (:class:`KafkaAccessError`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    BrokerResponseError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnknownTopicOrPartitionError,
)
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from platereg.logging import get_logger
from platereg.settings import ConfigError, Settings, kafka_security_problems
from schemas import topics

log = get_logger(__name__)

#: The broker's "no" to this principal: an ACL does not allow it, or the login failed.
#: Waiting does not change it, so it is never retried.
AUTHORIZATION_ERRORS: tuple[type[BrokerResponseError], ...] = (
    TopicAuthorizationFailedError, GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError, TransactionalIdAuthorizationFailed,
    SaslAuthenticationFailed)
_REFUSED = frozenset(error.errno for error in AUTHORIZATION_ERRORS)


class KafkaAccessError(ConfigError):
    """The broker refuses what this process needs, or a topic it needs does not exist: a
    deployment problem the message names (the topic, the principal, what to run or
    grant), never retried."""


def _transient(exc: BaseException) -> bool:
    """Worth another attempt: the broker unreachable or busy, not a refusal."""
    if isinstance(exc, (*AUTHORIZATION_ERRORS, KafkaAccessError)):
        return False
    return isinstance(exc, KafkaError | OSError | TimeoutError)


def principal(settings: Settings) -> str:
    """This process's Kafka principal, as an error message names it."""
    if settings.kafka_security_protocol.startswith("SASL_"):
        return f"Kafka principal {settings.kafka_sasl_username!r}"
    return "this process's Kafka principal"


def refused(settings: Settings, exc: BaseException, what: str) -> KafkaAccessError:
    """The error ending a process whose principal the broker refuses ``what``."""
    return KafkaAccessError(f"{principal(settings)} is refused {what} ({type(exc).__name__}):"
                            " grant it in deploy/kafka/acls")


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


def _log_retry(state: RetryCallState) -> None:
    """tenacity's before_sleep: one line per retry of a transient broker error."""
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("broker not answering; retrying", error=type(error).__name__,
                attempt=state.attempt_number)


async def ensure_topics(settings: Settings, *, retry_for: float = 30.0) -> list[str]:
    """Create the contract topics that do not exist yet; returns those created.

    Retries while the broker cannot be reached (up to ``retry_for`` seconds);
    :class:`KafkaAccessError` at once when the broker refuses (the principal may not
    create or describe them)."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_transient),
        wait=wait_exponential(multiplier=0.2, max=3),
        stop=stop_after_delay(retry_for),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            admin = make_admin(settings, request_timeout_ms=10_000)
            await admin.start()
            try:
                return await _create_missing(settings, admin)
            finally:
                await admin.close()
    raise AssertionError("unreachable")


async def _create_missing(settings: Settings, admin: AIOKafkaAdminClient) -> list[str]:
    existing = set(await admin.list_topics())
    missing = [NewTopic(name, partitions, settings.replication_factor)
               for name, partitions in topic_partitions(settings).items()
               if name not in existing]
    if not missing:
        return []
    response = await admin.create_topics(missing)
    created = []
    for name, code, *_ in response.topic_errors:
        if not code:
            created.append(name)
        elif code == TopicAlreadyExistsError.errno:
            continue   # another process won the race
        elif code in _REFUSED:
            raise KafkaAccessError(
                f"{principal(settings)} may not create topic {name!r}: run `platereg "
                "topics` as a principal allowed to (deploy/kafka/acls: platereg-admin)")
        else:
            raise KafkaError(f"creating topic {name!r}: broker error code {code}")
    if created:
        log.info("topics created", topics=created)
    return created


async def require_topics(settings: Settings, names: Sequence[str], *,
                         retry_for: float = 10.0) -> bool:
    """Check that the contract topics ``names`` exist and this principal may see them.

    :class:`KafkaAccessError` naming the first missing topic and ``platereg topics``
    (services never create topics: least privilege), or the refusal. False when the
    broker could not be reached within ``retry_for`` seconds (unchecked: the caller's
    loops retry and /readyz says so); True when every topic is there."""
    wanted = [settings.topic(name) for name in names]
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_transient), wait=wait_exponential(multiplier=0.2, max=2),
            stop=stop_after_delay(retry_for), before_sleep=_log_retry, reraise=True,
        ):
            with attempt:
                admin = make_admin(settings, request_timeout_ms=5_000)
                await admin.start()
                try:
                    described = await admin.describe_topics(wanted)
                finally:
                    await admin.close()
    except AUTHORIZATION_ERRORS as exc:
        raise KafkaAccessError(f"{principal(settings)} is refused by the broker: "
                               f"{type(exc).__name__}") from None
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("broker not reachable; topics not checked", error=type(exc).__name__)
        return False
    for topic in described:
        _check_described(settings, topic["topic"], topic["error_code"])
    return True


def _check_described(settings: Settings, name: str, code: int) -> None:
    if not code:
        return
    if code == UnknownTopicOrPartitionError.errno:
        raise KafkaAccessError(
            f"topic {name!r} does not exist: create the topics with `platereg topics` "
            "(the deployment's prestart step) before starting this service")
    if code in _REFUSED:   # Kafka does not tell it whether the topic exists
        raise KafkaAccessError(
            f"{principal(settings)} may not describe topic {name!r}: grant it in "
            "deploy/kafka/acls, check PLATEREG_TOPIC_PREFIX, and create the topics with "
            "`platereg topics` if they are missing")
    raise KafkaError(f"describing topic {name!r}: broker error code {code}")


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
