"""Each Kafka principal through the real SASL_SSL listener, with the ACLs of
``deploy/kafka/acls`` applied (the ``kafka_acls`` fixture): it can do what its
service does, with the real aiokafka clients the services use, and the broker
refuses it the rest (write plates.events, read others' topics, read or commit
another group, create or delete topics, alter configs).

What each service does is written here, from its code (:data:`USES`), not read
from the ACL file: the file is what is under test. Only the list of principals is
compared with the file, so a principal added there without a row here fails.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from devtools.kafka_acls import service_principals
from platereg.kafka import ensure_topics, make_admin, make_consumer, make_producer
from platereg.settings import Settings, load_settings
from schemas import topics
from tests.broker import TEST_PRODUCERS, AclBroker

pytestmark = pytest.mark.integration

EVENTS, STATUS, NOTICES, DLQ = topics.EVENTS, topics.STATUS, topics.NOTICES, topics.DLQ
REGISTRY_GROUP = "platereg-registry"                       # PLATEREG_CONSUMER_GROUP
DISPATCHER_GROUP = "platereg-registry.notices-dispatcher"  # notifications.dispatcher
GROUPS = (REGISTRY_GROUP, DISPATCHER_GROUP, "someone-else")
REFUSED = TopicAuthorizationFailedError.errno


@dataclass(frozen=True)
class Uses:
    """What a principal's service does on the broker."""

    writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()       # in ``group``
    group: str | None = None
    commits: bool = False             # commits its offsets to ``group``
    creates_topics: bool = False


USES: dict[str, Uses] = {
    # platereg topics (prestart): list the topics, create the missing ones
    "platereg-admin": Uses(creates_topics=True),
    # consume registry: plates.events in its group (offsets in PostgreSQL); the status and
    # DLQ relays (registry.relay)
    "platereg-registry": Uses(writes=(STATUS, DLQ), reads=(EVENTS,), group=REGISTRY_GROUP),
    # serve registry: PostgreSQL only; /readyz fetches cluster metadata
    "platereg-registry-api": Uses(),
    # serve ingest: ingest.publisher
    "platereg-ingest": Uses(writes=(EVENTS,)),
    # notices schedule: the notices relay (notifications.relay)
    "platereg-notices-scheduler": Uses(writes=(NOTICES,)),
    # notices dispatch: plates.notices in its group, committing; dead letters
    "platereg-notices-dispatcher": Uses(writes=(DLQ,), reads=(NOTICES,),
                                        group=DISPATCHER_GROUP, commits=True),
    # dlq replay (registry.dlq), import and simulate straight to Kafka
    "platereg-operator": Uses(writes=(EVENTS,)),
    **{producer: Uses(writes=(EVENTS,)) for producer in TEST_PRODUCERS},
}
PRINCIPALS = sorted(USES)


def test_every_principal_of_the_acl_file_has_its_uses_here() -> None:
    assert set(USES) == {*service_principals(), *TEST_PRODUCERS}


# --------------------------------------------------------------------------- allowed

@pytest.mark.parametrize("principal", PRINCIPALS)
async def test_each_principal_can_do_what_its_service_does(
        kafka_acls: AclBroker, principal: str) -> None:
    settings = kafka_acls.settings(principal)
    uses = USES[principal]
    await _lists_metadata(settings)
    for topic in uses.writes:
        await _produces(settings, topic)
    for topic in uses.reads:
        assert uses.group is not None
        await _reads_in_group(kafka_acls, settings, topic, uses.group, commit=uses.commits)
    if uses.creates_topics:
        await _creates_topics(kafka_acls, settings)


async def _lists_metadata(settings: Settings) -> None:
    """What every /readyz does (platereg.kafka.broker_reachable)."""
    admin = make_admin(settings)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


async def _produces(settings: Settings, topic: str) -> None:
    """The services' own producer (acks=all, idempotent) writes a record."""
    producer = make_producer(settings)
    await producer.start()
    try:
        sent = await producer.send_and_wait(settings.topic(topic), b"acl-test", key=b"acl")
        assert sent.offset >= 0
    finally:
        await producer.stop()


async def _reads_in_group(kafka_acls: AclBroker, settings: Settings, topic: str, group: str,
                          *, commit: bool) -> None:
    """Joins ``group`` on ``topic``, reads a record the super user wrote, commits if asked."""
    name = settings.topic(topic)
    marker = uuid.uuid4().hex.encode()
    await _produce_as_super_user(kafka_acls, name, marker)
    consumer = make_consumer(settings, name, group_id=kafka_acls.prefix + group,
                             session_timeout_ms=6_000, heartbeat_interval_ms=1_000)
    await consumer.start()
    try:
        seen = await _read_until(consumer, marker)
        if commit:
            await consumer.commit({seen: (await consumer.position(seen))})
            assert await consumer.committed(seen) is not None
    finally:
        await consumer.stop()


async def _read_until(consumer: AIOKafkaConsumer, marker: bytes,
                      timeout: float = 30) -> TopicPartition:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for tp, records in (await consumer.getmany(timeout_ms=500)).items():
            if any(r.value == marker for r in records):
                return tp
    raise AssertionError("the record written for the test was not read")


async def _produce_as_super_user(kafka_acls: AclBroker, topic: str, value: bytes) -> None:
    producer = make_producer(_super_user(kafka_acls))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"acl")
    finally:
        await producer.stop()


def _super_user(kafka_acls: AclBroker) -> Settings:
    return load_settings(kafka_bootstrap_servers=kafka_acls.plaintext,
                         topic_prefix=kafka_acls.prefix)


async def _creates_topics(kafka_acls: AclBroker, settings: Settings) -> None:
    """`platereg topics` sees every topic; a missing one it creates."""
    assert await ensure_topics(settings, retry_for=5) == []
    name = settings.topic(f"plates.acl-{uuid.uuid4().hex[:8]}")
    admin = make_admin(settings)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, 1, 1)])
        assert [(t, code) for t, code, *_ in response.topic_errors] == [(name, 0)]
    finally:
        await admin.close()
    await _delete_as_super_user(kafka_acls, name)


async def _delete_as_super_user(kafka_acls: AclBroker, name: str) -> None:
    admin = make_admin(_super_user(kafka_acls))
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


# --------------------------------------------------------------------------- refused

@pytest.mark.parametrize("principal", PRINCIPALS)
async def test_each_principal_is_refused_writes_to_topics_its_service_does_not_write(
        kafka_acls: AclBroker, principal: str) -> None:
    settings = kafka_acls.settings(principal)
    # Not idempotent: its start needs no write grant, so the refusal names the topic.
    producer = make_producer(settings, enable_idempotence=False)
    await producer.start()
    try:
        for topic in set(topics.ALL_TOPICS) - set(USES[principal].writes):
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(settings.topic(topic), b"refused", key=b"acl")
    finally:
        await producer.stop()


@pytest.mark.parametrize("principal", PRINCIPALS)
async def test_each_principal_is_refused_reading_topics_its_service_does_not_read(
        kafka_acls: AclBroker, principal: str) -> None:
    """A topic it may not even describe it cannot read (Read implies Describe); one it may
    describe (it writes there) it may not fetch from."""
    settings = kafka_acls.settings(principal)
    unread = [settings.topic(t) for t in set(topics.ALL_TOPICS) - set(USES[principal].reads)]
    admin = make_admin(settings)
    await admin.start()
    try:
        described = {t["topic"]: t["error_code"] for t in await admin.describe_topics(unread)}
    finally:
        await admin.close()
    for name in (name for name, code in described.items() if code != REFUSED):
        consumer = make_consumer(settings)    # no group: only the topic is in question
        await consumer.start()
        try:
            consumer.assign([TopicPartition(name, 0)])
            with pytest.raises(TopicAuthorizationFailedError):
                for _ in range(50):
                    await consumer.getmany(timeout_ms=200)
        finally:
            await consumer.stop()


@pytest.mark.parametrize("principal", PRINCIPALS)
async def test_each_principal_is_refused_other_groups(
        kafka_acls: AclBroker, principal: str) -> None:
    """Neither its offsets (read) nor a commit into it, nor joining it on a topic the
    principal may read."""
    settings = kafka_acls.settings(principal)
    uses = USES[principal]
    for group in (kafka_acls.prefix + g for g in GROUPS if g != uses.group):
        admin = make_admin(settings)
        await admin.start()
        try:
            with pytest.raises(GroupAuthorizationFailedError):
                await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        await _commit_refused(settings, group)
        if uses.reads:
            await _join_refused(settings, settings.topic(uses.reads[0]), group)


async def _commit_refused(settings: Settings, group: str) -> None:
    consumer = make_consumer(settings, group_id=group)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(EVENTS), 0)
        consumer.assign([tp])
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.commit({tp: 0})
    finally:
        await consumer.stop()


async def _join_refused(settings: Settings, topic: str, group: str) -> None:
    consumer = make_consumer(settings, topic, group_id=group)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()
            await consumer.getmany(timeout_ms=2000)
    finally:
        await consumer.stop()


@pytest.mark.parametrize("principal", PRINCIPALS)
async def test_each_principal_is_refused_creating_deleting_and_configuring_topics(
        kafka_acls: AclBroker, principal: str) -> None:
    settings = kafka_acls.settings(principal)
    scratch = settings.topic(f"plates.scratch-{uuid.uuid4().hex[:8]}")
    await _create_as_super_user(kafka_acls, scratch)
    creatable = settings.topic("plates.new") if not USES[principal].creates_topics else None
    admin = make_admin(settings)
    await admin.start()
    try:
        for name in filter(None, (creatable, f"{kafka_acls.prefix}elsewhere")):
            created = await admin.create_topics([NewTopic(name, 1, 1)])
            assert [code for _, code, *_ in created.topic_errors] == [REFUSED], name
        deleted = await admin.delete_topics([scratch])
        assert [code for _, code in deleted.topic_error_codes] == [REFUSED]
        for name in (scratch, settings.topic(EVENTS)):
            [altered] = await admin.alter_configs([ConfigResource(
                ConfigResourceType.TOPIC, name, configs={"retention.ms": "1000"})])
            assert [r[0] for r in altered.resources] == [REFUSED], name
    finally:
        await admin.close()
        await _delete_as_super_user(kafka_acls, scratch)


async def _create_as_super_user(kafka_acls: AclBroker, name: str) -> None:
    admin = make_admin(_super_user(kafka_acls))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()


# --------------------------------------------------------------------------- logins

async def test_a_wrong_password_or_unknown_principal_is_refused(
        kafka_acls: AclBroker, caplog: pytest.LogCaptureFixture) -> None:
    for settings in (kafka_acls.settings("platereg-ingest", kafka_sasl_password="wrong"),
                     kafka_acls.settings("platereg-ingest", kafka_sasl_username="nobody")):
        caplog.clear()
        admin = make_admin(settings, request_timeout_ms=5_000)
        with caplog.at_level(logging.ERROR, logger="aiokafka"), \
                pytest.raises(KafkaConnectionError):
            await admin.start()
        await admin.close()
        assert "SaslAuthenticationFailed" in caplog.text
    await _lists_metadata(kafka_acls.settings("platereg-ingest"))   # the right one logs in
