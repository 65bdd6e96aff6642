"""Who may say what (contract section 2) on the real servers: the ingest API refuses what a
key's sources or the source policy do not allow, the consumer dead-letters it with
``unauthorized_source``, policy changes reach a running consumer, events are identified by
(source, id), and migration 0008 keeps the stored history."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import httpx
import orjson
import pytest

from platereg.db import connect, migrate
from platereg.security.keys import create_key
from registry.consumer import store
from registry.consumer.batch import fold_history
from schemas.topics import DLQ
from tests.integration.cli_support import eventually, platereg
from tests.integration.consumer_support import (
    BASE_TIME,
    consumer_running,
    encoded,
    event,
    produce,
    wait_offsets,
)
from tests.integration.ingest_support import header, ingest_server, issued
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.integration

CE = "application/cloudevents+json"
ISSUE = {"plate_class": "passenger", "expires_on": "2030-01-31",
         "vehicle": {"vin": "V1", "make": "Honda", "model": "Civic", "year": 2019,
                     "colour": "blue"},
         "owner": {"owner_id": "o1", "name": "A Person"}}
STOLEN = {"agency": "ACME", "report_id": "r1"}


def at(minutes: int) -> dt.datetime:
    return BASE_TIME + dt.timedelta(minutes=minutes)


async def plate(pool: asyncpg.Pool, key: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM plates WHERE plate_key = $1", key)


async def dlq_reasons(pool: asyncpg.Pool) -> list[str]:
    return [r[0] for r in await pool.fetch("SELECT reason FROM dlq_messages ORDER BY id")]


# --------------------------------------------------------------------------- ingest API

async def test_an_insurers_key_cannot_report_a_theft_and_nothing_is_published(
        topics, pool) -> None:
    key_id, key = await create_key(pool, role="ingest", name="acme",
                                   sources=["/insurance/acme/"])
    headers = {"Authorization": f"Bearer {key}", "Content-Type": CE}
    stolen = event("plate.stolen_reported", "CA-ON/SRC1", at(1), STOLEN,
                   source="/insurance/acme/claims")
    police = event("plate.stolen_reported", "CA-ON/SRC1", at(1), STOLEN, source="/police/opp")
    court = event("plate.suspended", "CA-ON/SRC1", at(1), {"reason": "court_order"},
                  source="/insurance/acme/claims")
    lapse = event("plate.suspended", "CA-ON/SRC1", at(2), {"reason": "insurance_lapsed"},
                  source="/insurance/acme/claims", id="lapse-1")
    async with ingest_server(topics) as url, httpx.AsyncClient(base_url=url) as client:
        refused = [await client.post("/v1/events", content=orjson.dumps(ev), headers=headers)
                   for ev in (stolen, police, court)]
        batch = await client.post("/v1/events", json=[lapse, stolen],
                                  headers={"Authorization": f"Bearer {key}"})
        assert [r.status_code for r in refused] == [422, 422, 422]
        assert batch.status_code == 422
        for r in refused:
            assert [e["reason"] for e in r.json()["errors"]] == ["unauthorized_source"]
        assert "acme" not in refused[0].text                  # the detail names no source
        assert [(e["index"], e["reason"]) for e in batch.json()["errors"]] == [
            (1, "unauthorized_source")]
        assert await read_topic(topics) == []                 # nothing published
        ok = await client.post("/v1/events", content=orjson.dumps(lapse), headers=headers)
    assert ok.status_code == 202, ok.text
    [record] = await read_topic(topics)
    published = orjson.loads(record.value)
    assert (published["id"], published["authtype"], published["authid"]) == (
        "lapse-1", "api_key", key_id)


async def test_ingest_keys_need_sources_on_the_command_line(topics) -> None:
    refused = platereg("keys", "create", "--role", "ingest", "--name", "x")
    assert refused.returncode == 2 and "--source" in refused.stderr
    made = platereg("keys", "create", "--role", "ingest", "--name", "acme",
                    "--source", "/insurance/acme/", "--source", "/fines/acme/")
    assert made.returncode == 0, made.stderr
    assert "/fines/acme/, /insurance/acme/" in made.stdout
    listed = platereg("keys", "list", env={"COLUMNS": "250"})
    assert "/fines/acme/ /insurance/acme/" in listed.stdout
    key_id = made.stdout.split("key id: ", 1)[1].split()[0]
    rebound = platereg("keys", "bind", key_id, "--source", "/emissions/acme/")
    assert rebound.returncode == 0, rebound.stderr
    listed = platereg("keys", "list", env={"COLUMNS": "250"})
    assert "/emissions/acme/" in listed.stdout and "/fines/acme/" not in listed.stdout
    assert platereg("keys", "bind", "nosuchkey123", "--source", "/x/").returncode == 1
    # A prefix must name a path segment: `/` would speak for every source.
    for prefix in ("/", "//"):
        for command in (("keys", "create", "--role", "ingest", "--name", "all"),
                        ("keys", "bind", key_id)):
            refused = platereg(*command, "--source", "/registry/", "--source", prefix)
            assert refused.returncode == 2, (command, prefix)
            assert f"source prefix '{prefix}' has no path segment" in refused.stderr
    listed = platereg("keys", "list", env={"COLUMNS": "250"})
    assert "/emissions/acme/" in listed.stdout and "all" not in listed.stdout.split()


# --------------------------------------------------------------------------- consumer

async def test_a_theft_produced_by_an_insurer_goes_to_the_dlq_and_a_policy_change_applies(
        topics, pool) -> None:
    key = "CA-ON/SRC2"
    async with consumer_running(topics):
        ends = await produce(topics, encoded([
            event("plate.issued", key, at(0), ISSUE),
            event("plate.stolen_reported", key, at(1), STOLEN, source="/insurance/acme/1"),
        ]))
        await wait_offsets(pool, topics, ends)
        row = await plate(pool, key)
        assert row["issued"] and not row["stolen"] and row["event_count"] == 1
        assert await dlq_reasons(pool) == ["unauthorized_source"]
        detail = await pool.fetchval("SELECT detail FROM dlq_messages")
        assert "plate.stolen_reported" in detail and "acme" not in detail
        await eventually(lambda: pool.fetchval(
            "SELECT published_at IS NOT NULL FROM dlq_messages"), "DLQ row not relayed")
        [dead] = await read_topic(topics, topics.topic(DLQ))
        assert header(dead, "x-dlq-reason") == b"unauthorized_source"
        assert orjson.loads(dead.value)["source"] == "/insurance/acme/1"   # original bytes

        # The operator lets the smart plate gateway report thefts: no restart.
        check = platereg("sources", "check", "/smartplate/gw/1", "plate.stolen_reported")
        assert check.returncode == 1 and "refused" in check.stdout
        granted = platereg("sources", "set", "/smartplate/", "plate.stolen_reported")
        assert granted.returncode == 0, granted.stderr
        assert platereg("sources", "check", "/smartplate/gw/1",
                        "plate.stolen_reported").returncode == 0
        ends = await produce(topics, encoded([
            event("plate.stolen_reported", key, at(2), STOLEN, source="/smartplate/gw/1")]))
        await wait_offsets(pool, topics, ends, at_least=True)
        assert (await plate(pool, key))["stolen"]

        # ... and takes the police's right to report recoveries away.
        removed = platereg("sources", "remove", "/police/", "plate.recovered")
        assert removed.returncode == 0, removed.stderr
        ends = await produce(topics, encoded([
            event("plate.recovered", key, at(3), {}, source="/police/opp")]))
        await wait_offsets(pool, topics, ends, at_least=True)
        assert (await plate(pool, key))["stolen"]
        assert await dlq_reasons(pool) == ["unauthorized_source"] * 2
    listed = platereg("sources", "list").stdout
    assert "/smartplate/\tplate.stolen_reported\tany" in listed
    assert "/police/\tplate.recovered" not in listed
    rules = orjson.loads(platereg("sources", "list", "--json").stdout)
    assert {"prefix": "/smartplate/", "type": "plate.stolen_reported", "reasons": None} in rules
    assert all(set(r) == {"prefix", "type", "reasons"} for r in rules)
    assert [r for r in rules if r["prefix"] == "/police/" and r["type"] == "plate.recovered"
            ] == []
    suspensions = [r for r in rules if r["type"] == "plate.suspended" and r["reasons"]]
    assert suspensions and all(r["reasons"] == sorted(r["reasons"]) for r in suspensions)


async def test_events_are_identified_by_source_and_id(topics, pool) -> None:
    key = "CA-ON/SRC3"
    shared = str(uuid.uuid4())
    first = event("plate.suspended", key, at(1), {"reason": "insurance_lapsed"},
                  id=shared, source="/insurance/acme/")
    other_source = event("plate.suspended", key, at(2), {"reason": "unpaid_fines"},
                         id=shared, source="/fines/city/")
    reused = event("plate.suspended", key, at(3), {"reason": "insurance_lapsed"},
                   id=shared, source="/insurance/acme/")
    async with consumer_running(topics):
        ends = await produce(topics, encoded([
            event("plate.issued", key, at(0), ISSUE), first, other_source, first, reused]))
        await wait_offsets(pool, topics, ends)
    row = await plate(pool, key)
    assert row["event_count"] == 3
    assert sorted(row["suspension_reasons"]) == ["insurance_lapsed", "unpaid_fines"]
    stored = await pool.fetch("SELECT source FROM plate_events WHERE event_id = $1 "
                              "ORDER BY source", shared)
    assert [r[0] for r in stored] == ["/fines/city/", "/insurance/acme/"]
    assert await dlq_reasons(pool) == ["id_conflict"]


# --------------------------------------------------------------------------- migration

async def test_migration_0008_keeps_the_stored_history(servers) -> None:
    from yoyo import get_backend, read_migrations

    from platereg.db import _yoyo_uri, migrations_path

    name = f"m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(servers.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = servers.dsn_for(name)
    try:
        backend = get_backend(_yoyo_uri(dsn))
        try:
            older = read_migrations(migrations_path()).filter(lambda m: m.id < "0008")
            with backend.lock():
                backend.apply_migrations(backend.to_apply(older))
        finally:
            backend.connection.close()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                """INSERT INTO plate_events (event_id, plate_key, type, source, event_time,
                                             data, fingerprint)
                   VALUES ('a', 'CA-ON/OLD1', 'plate.issued', '/serviceontario/1', $1, $2, 'f1'),
                          ('b', 'CA-ON/OLD1', 'plate.stolen_reported', '/smartplate/x', $3,
                           '{"agency": "X", "report_id": "1"}', 'f2')""",
                at(0), orjson.dumps(ISSUE).decode(), at(1))
            await conn.execute("INSERT INTO api_keys (key_id, name, role, secret_hash) "
                               "VALUES ('old', 'old ingest', 'ingest', 'h')")
        finally:
            await conn.close()
        assert migrate(dsn)[0].startswith("0008")
        assert migrate(dsn) == []                            # twice: nothing to do
        conn = await connect(dsn)            # with the service's codecs (jsonb)
        try:
            sql = store.RegistrySql(conn)
            hist = (await sql.history(["CA-ON/OLD1"]))["CA-ON/OLD1"]
            assert {(e.source, e.event_id) for e in hist} == {("/serviceontario/1", "a"),
                                                             ("/smartplate/x", "b")}
            state = fold_history("CA-ON", "OLD1", hist)
            assert state.issued and state.stolen and state.event_count == 2
            known = await sql.known_fingerprints(
                [("/serviceontario/1", "a"), ("/other", "a"), ("/smartplate/x", "b")])
            assert known == {("/serviceontario/1", "a"): "f1", ("/smartplate/x", "b"): "f2"}
            assert await conn.fetchval("SELECT sources FROM api_keys") == []
            assert await conn.fetchval("SELECT count(*) FROM source_policy") == 19
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_an_operators_policy_survives_re_migration(settings, pool) -> None:
    assert platereg("sources", "remove", "/fines/").returncode == 0
    assert platereg("sources", "set", "/insurance/", "plate.suspended", "--reason",
                    "insurance_lapsed", "--reason", "unpaid_fines").returncode == 0
    assert platereg("migrate").returncode == 0
    rows = await pool.fetch("SELECT prefix, type, reasons FROM source_policy")
    assert not [r for r in rows if r["prefix"] == "/fines/"]
    assert {tuple(r["reasons"]) for r in rows if r["prefix"] == "/insurance/"
            and r["type"] == "plate.suspended"} == {("insurance_lapsed", "unpaid_fines")}
    bad = platereg("sources", "set", "/x/", "plate.renewed", "--reason", "court_order")
    assert bad.returncode == 2 and "no suspension reason" in bad.stderr
    assert issued()["source"].startswith("/registry/")
