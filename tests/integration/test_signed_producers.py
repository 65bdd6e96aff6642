"""Signed producers and both CloudEvents content modes (contract sections 2 and 5) on the
real servers: messages go through Apache Kafka to the real registry consumer, producers
are managed with the real ``platereg sources producer`` commands, and the official
CloudEvents SDK writes the events (its Kafka and HTTP bindings, structured and binary)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent

from platereg.security.keys import create_key
from registry.consumer import signatures
from schemas.signing import Signer, new_secret, signature
from schemas.topics import DLQ
from tests.integration.api_helpers import bearer, pq, running_api
from tests.integration.cli_support import eventually, platereg
from tests.integration.consumer_support import (
    BASE_TIME,
    consumer_running,
    event,
    produce,
    wait_offsets,
)
from tests.integration.ingest_support import ingest_server
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.integration

ISSUE = {"plate_class": "passenger", "expires_on": "2030-01-31",
         "vehicle": {"vin": "V1", "make": "Honda", "model": "Civic", "year": 2019,
                     "colour": "blue"},
         "owner": {"owner_id": "o1", "name": "A Person"}}


def at(minutes: int) -> dt.datetime:
    return BASE_TIME + dt.timedelta(minutes=minutes)


def add_producer(name: str, *sources: str) -> str:
    """``platereg sources producer add``; returns the secret it printed."""
    made = platereg("sources", "producer", "add", name,
                    *[arg for s in sources for arg in ("--source", s)])
    assert made.returncode == 0, made.stderr
    return made.stdout.split("secret:", 1)[1].split()[0]


def signed(signer: Signer, ev: dict) -> tuple[bytes, bytes, list]:
    value = orjson.dumps(ev)
    return ev["subject"].encode(), value, signer.headers(value)


def unsigned(ev: dict, headers: list | None = None) -> tuple[bytes, bytes, list]:
    return ev["subject"].encode(), orjson.dumps(ev), headers or []


async def refusals(pool: asyncpg.Pool) -> dict[str, tuple[str, str]]:
    """Event id -> (reason, detail) of every dead-lettered structured message."""
    rows = await pool.fetch("SELECT value, reason, detail FROM dlq_messages ORDER BY id")
    return {orjson.loads(r["value"])["id"]: (r["reason"], r["detail"]) for r in rows}


async def producers_of(pool: asyncpg.Pool) -> dict[str, str | None]:
    rows = await pool.fetch("SELECT event_id, producer FROM plate_events")
    return {r["event_id"]: r["producer"] for r in rows}


def header_names(record: Any) -> list[str]:
    return [name for name, _ in record.headers or ()]


# --------------------------------------------------------------------------- the checks

async def test_each_check_of_the_consumer_through_the_broker(topics, pool) -> None:
    office = Signer.of("office-7", add_producer("office-7", "/registry/office/7/"))
    leaving = Signer.of("old-office", add_producer("old-office", "/registry/old/"))
    listed = platereg("sources", "producer", "list")
    assert listed.returncode == 0 and "office-7\t/registry/office/7/\t1 secret(s)" in listed.stdout
    assert office.key.decode() not in listed.stdout + listed.stderr   # never a secret
    key = "CA-ON/SIGN1"

    def ev(id: str, minute: int, source: str = "/registry/office/7/desk") -> dict:
        return event("plate.renewed", key, at(minute), {"expires_on": "2031-01-31"}, id=id,
                     source=source)

    async with consumer_running(topics):
        ends = await produce(topics, [
            signed(office, event("plate.issued", key, at(0), ISSUE, id="good",
                                 source="/registry/office/7/desk")),
            unsigned(ev("unsigned", 1)),
            signed(Signer.of("office-7", new_secret()), ev("wrong-secret", 2)),
            signed(Signer.of("nobody", office.key.decode()), ev("unknown", 3)),
            # the policy lets /registry/ renew; the producer may speak for office 7 only
            signed(office, ev("out-of-scope", 4, source="/registry/office/8/desk")),
            signed(leaving, ev("before-revoke", 5, source="/registry/old/1")),
        ], signer=False)
        await wait_offsets(pool, topics, ends)

        assert platereg("sources", "producer", "revoke", "old-office").returncode == 0
        rotated = platereg("sources", "producer", "rotate", "office-7")
        assert rotated.returncode == 0, rotated.stderr
        renewed = Signer.of("office-7", rotated.stdout.split("new secret:", 1)[1].split()[0])
        ends = await produce(topics, [
            signed(leaving, ev("after-revoke", 6, source="/registry/old/1")),
            signed(office, ev("old-secret-in-rotation", 7)),
            signed(renewed, ev("new-secret", 8)),
        ], signer=False)
        await wait_offsets(pool, topics, ends, at_least=True)

        retired = platereg("sources", "producer", "retire-secret", "office-7")
        assert retired.returncode == 0, retired.stderr
        ends = await produce(topics, [signed(office, ev("retired-secret", 9)),
                                      signed(renewed, ev("after-retire", 10))], signer=False)
        await wait_offsets(pool, topics, ends, at_least=True)
        await eventually(lambda: pool.fetchval(
            "SELECT bool_and(published_at IS NOT NULL) FROM dlq_messages"), "DLQ not relayed")
        dead = await read_topic(topics, topics.topic(DLQ), at_least=6)

    refused = "unauthorized_source"
    assert await refusals(pool) == {
        "unsigned": (refused, signatures.UNSIGNED),
        "wrong-secret": (refused, signatures.BAD_SIGNATURE),
        "unknown": (refused, signatures.UNKNOWN),
        "out-of-scope": (refused, signatures.OUT_OF_SCOPE),
        "after-revoke": (refused, signatures.REVOKED),
        "retired-secret": (refused, signatures.BAD_SIGNATURE),
    }
    assert await producers_of(pool) == {
        "good": "office-7", "before-revoke": "old-office", "old-secret-in-rotation": "office-7",
        "new-secret": "office-7", "after-retire": "office-7"}
    # The dead-letter copies keep the original headers (the signature) beside the verdict.
    by_id = {orjson.loads(r.value)["id"]: header_names(r) for r in dead}
    assert by_id["wrong-secret"][:2] == ["platereg-producer", "platereg-signature"]
    assert "x-dlq-reason" in by_id["wrong-secret"] and by_id["unsigned"][0] == "x-dlq-reason"


async def test_a_replayed_rejection_keeps_its_signature_and_is_never_signed_anew(
        topics, pool) -> None:
    """`platereg dlq replay` re-sends the original headers: a signed message the source
    policy refused passes once the policy allows it; an unsigned one is refused again."""
    office = Signer.of("office-9", add_producer("office-9", "/registry/office/9/"))
    ev = event("plate.stolen_reported", "CA-ON/LATE1", at(0),
               {"agency": "OPP", "report_id": "r1"}, id="late-1",
               source="/registry/office/9/desk")
    async with consumer_running(topics):
        ends = await produce(topics, [signed(office, ev), unsigned({**ev, "id": "late-2"})],
                             signer=False)
        await wait_offsets(pool, topics, ends)
        first = await refusals(pool)
        assert first["late-2"] == ("unauthorized_source", signatures.UNSIGNED)
        assert "source policy" in first["late-1"][1]
        granted = platereg("sources", "set", "/registry/office/9/", "plate.stolen_reported")
        assert granted.returncode == 0, granted.stderr
        replayed = platereg("dlq", "replay", "--reason", "unauthorized_source")
        assert replayed.returncode == 0, replayed.stderr
        await eventually(lambda: pool.fetchval(
            "SELECT count(*) = 3 FROM dlq_messages"), "the unsigned replay not refused")
        await eventually(lambda: pool.fetchval(
            "SELECT producer FROM plate_events WHERE event_id = 'late-1'"),
            "replayed message not applied")
    rows = await pool.fetch("SELECT value, detail FROM dlq_messages ORDER BY id")
    assert (orjson.loads(rows[-1]["value"])["id"], rows[-1]["detail"]) == (
        "late-2", signatures.UNSIGNED)


async def test_only_the_consumers_and_operators_role_reads_the_secrets(database_url) -> None:
    """The consumer's and the operator commands' roles read the producers' secrets; every
    other service's role and a role in no group (PUBLIC) read nothing of the producers."""
    from urllib.parse import urlsplit, urlunsplit

    from platereg.security.roles import ROLES, ensure_roles

    def login(user: str, password: str) -> str:
        parts = urlsplit(database_url)
        return urlunsplit(parts._replace(
            netloc=f"{user}:{password}@{parts.netloc.rsplit('@', 1)[-1]}"))

    prefix = f"t{uuid.uuid4().hex[:8]}"
    logins = {role: login(f"{prefix}_{role}", new_secret()) for role in ROLES}
    nobody = login(f"{prefix}_nobody", new_secret())
    ensure_roles(database_url, logins)
    users = [urlsplit(dsn).username for dsn in (*logins.values(), nobody)]
    admin = await asyncpg.connect(database_url)
    try:
        password = urlsplit(nobody).password
        await admin.execute(f'CREATE ROLE "{users[-1]}" LOGIN PASSWORD \'{password}\'')
        for role in ("consumer", "operator"):
            conn = await asyncpg.connect(logins[role])
            try:
                assert await conn.fetchval("SELECT count(*) FROM producer_secrets") == 1, role
            finally:
                await conn.close()
        refused = [dsn for role, dsn in logins.items() if role not in ("consumer", "operator")]
        for dsn in (*refused, nobody):
            conn = await asyncpg.connect(dsn)
            try:
                for table in ("producer_secrets", "producers", "producers_version"):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.fetch(f"SELECT * FROM {table}")  # noqa: S608 - our names
            finally:
                await conn.close()
    finally:
        for user in users:
            await admin.execute(f'DROP OWNED BY "{user}"')
            await admin.execute(f'DROP ROLE IF EXISTS "{user}"')
        await admin.close()


# --------------------------------------------------------------------------- content modes

def sdk_event(id: str, kind: str, data: dict, source: str = "/registry/office/7/sdk",
              subject: str = "CA-ON/SDK1", minute: int = 0, **extra: Any) -> CloudEvent:
    attributes = {"id": id, "source": source, "type": kind, "subject": subject,
                  "time": at(minute), "datacontenttype": "application/json", **extra}
    return CloudEvent(attributes, data)


def by_subject(event: Any) -> bytes:
    return event.get_subject().encode()


def kafka_message(message: Any, signer: Signer | None) -> tuple[bytes, bytes, list]:
    headers = list(message.headers.items())
    return (message.key, message.value,
            signer.headers(message.value, headers) if signer else headers)


async def test_the_sdks_kafka_binding_in_both_modes(topics, pool) -> None:
    office = Signer.of("office-7", add_producer("office-7", "/registry/office/7/"))
    issued = sdk_event("sdk-issued", "plate.issued", ISSUE)
    renewed = sdk_event("sdk-renewed", "plate.renewed", {"expires_on": "2031-05-31"}, minute=1)
    binary = ce_kafka.to_binary_event(issued, key_mapper=by_subject)
    assert any(name.startswith("ce_") for name in binary.headers)
    # A signed binary message, then its ce_source forged under a signature of the value:
    # what a producer signing "the value" only would leave open.
    forged_headers = [(n, b"/police/forged" if n == "ce_source" else v)
                      for n, v in binary.headers.items()]
    forged = (binary.key, binary.value, [
        *forged_headers, ("platereg-producer", b"office-7"),
        ("platereg-signature", signature(office.key, [], binary.value))])
    legit_signature = office.headers(binary.value, list(binary.headers.items()))[-2:]
    stolen = sdk_event("sdk-stolen", "plate.stolen_reported",
                       {"agency": "OPP", "report_id": "r1"}, source="/police/forged", minute=2)
    invalid = sdk_event("sdk-invalid", "plate.renewed", {"expires_on": "2031-13-45"}, minute=3)
    async with consumer_running(topics):
        ends = await produce(topics, [
            kafka_message(binary, office),
            kafka_message(ce_kafka.to_structured_event(issued, key_mapper=by_subject), office),
            kafka_message(ce_kafka.to_binary_event(renewed, key_mapper=by_subject), office),
            (binary.key, binary.value, [*forged_headers, *legit_signature]),
            forged,
            kafka_message(ce_kafka.to_binary_event(stolen, key_mapper=by_subject), None),
            kafka_message(ce_kafka.to_binary_event(invalid, key_mapper=by_subject), office),
        ], signer=False)
        await wait_offsets(pool, topics, ends)
        await eventually(lambda: pool.fetchval(
            "SELECT count(*) = 4 AND bool_and(published_at IS NOT NULL) FROM dlq_messages"),
            "DLQ not relayed")
        dead = await read_topic(topics, topics.topic(DLQ), at_least=4)

    row = await pool.fetchrow("SELECT * FROM plates WHERE plate_key = 'CA-ON/SDK1'")
    assert row["issued"] and not row["stolen"] and row["event_count"] == 2
    assert row["expires_on"] == dt.date(2031, 5, 31)
    # binary and structured copies of one event are one event (a duplicate, not a conflict)
    assert await producers_of(pool) == {"sdk-issued": "office-7", "sdk-renewed": "office-7"}
    rows = await pool.fetch("SELECT reason, detail, headers FROM dlq_messages ORDER BY id")
    assert [(r["reason"], r["detail"]) for r in rows[:3]] == [
        ("unauthorized_source", signatures.BAD_SIGNATURE),   # forged under its signature
        ("unauthorized_source", signatures.BAD_SIGNATURE),   # forged under a value signature
        ("unauthorized_source", signatures.UNSIGNED)]
    assert rows[3]["reason"] == "schema_invalid" and "expires_on" in rows[3]["detail"]
    # the dead-letter copy of a binary message keeps its ce_ headers, value = the data
    copy = next(r for r in dead if dict(r.headers).get("ce_id") == b"sdk-invalid")
    original = ce_kafka.to_binary_event(invalid, key_mapper=by_subject)
    assert [(n, v) for n, v in copy.headers if n.startswith("ce_") or n == "content-type"] == \
        list(original.headers.items())
    assert copy.value == original.value and dict(copy.headers)["x-dlq-reason"] == b"schema_invalid"


async def test_the_sdks_http_binding_in_both_modes_and_who_sent_it(topics, pool) -> None:
    key_id, key = await create_key(pool, role="ingest", name="office",
                                   sources=["/registry/office/7/"])
    binary = sdk_event("http-binary", "plate.issued", ISSUE, subject="ca-on/http 1")
    plain = CloudEvent({"id": "http-plain", "source": "/registry/office/7/sdk",
                        "type": "plate.renewed", "subject": "CA-ON/HTTP1", "time": at(1)},
                       {"expires_on": "2032-01-31"})            # no datacontenttype at all
    structured = sdk_event("http-structured", "plate.renewed", {"expires_on": "2033-01-31"},
                           subject="CA-ON/HTTP1", minute=2)
    no_type = ce_http.to_binary_event(sdk_event(str(uuid.uuid4()), "plate.renewed",
                                                {"expires_on": "2033-01-31"}))
    async with ingest_server(topics) as url, httpx.AsyncClient(base_url=url) as client:
        answers = []
        for message in (ce_http.to_binary_event(binary), ce_http.to_binary_event(plain),
                        ce_http.to_structured_event(structured)):
            answers.append(await client.post("/v1/events", content=message.body,
                                             headers={**message.headers, **bearer(key)}))
        missing = await client.post("/v1/events", content=no_type.body, headers={
            **{k: v for k, v in no_type.headers.items() if k != "ce-type"}, **bearer(key)})
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    assert "content-type" not in {k.lower() for k in ce_http.to_binary_event(plain).headers}
    assert missing.status_code == 422
    assert missing.json()["errors"] == [{"index": 0, "reason": "schema_invalid",
                                         "detail": "type: field required"}]
    records = await read_topic(topics, at_least=3)
    published = {orjson.loads(r.value)["id"]: orjson.loads(r.value) for r in records}
    assert published["http-binary"]["subject"] == "CA-ON/HTTP1"
    assert published["http-binary"]["data"]["owner"]["language"] == "en"
    assert all(dict(r.headers)["platereg-producer"] == b"tests" for r in records)

    async with consumer_running(topics):
        ends: dict[int, int] = {}
        for r in records:
            ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
        await wait_offsets(pool, topics, ends, at_least=True)
    async with running_api(topics) as api:
        operator = (await create_key(pool, role="operator", name="op"))[1]
        history = await api.client.post("/v1/plates/history", json=pq("CA-ON", "HTTP1"),
                                        headers=bearer(operator))
    assert history.status_code == 200, history.text
    who = [(e["id"], e["producer"], e["authtype"], e["authid"]) for e in history.json()["events"]]
    assert who == [("http-binary", "tests", "api_key", key_id),
                   ("http-plain", "tests", "api_key", key_id),
                   ("http-structured", "tests", "api_key", key_id)]
