"""Operator commands through the real ``platereg`` script (.venv/bin/platereg), as a user
runs them: keys, topics, schemas export --check, and the DLQ (list, replay) fed by a real
``platereg consume registry``."""

from __future__ import annotations

import asyncio
import json
import re
import signal

import asyncpg
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from cli_support import PLATEREG, eventually, http_status, platereg, popen
from consumer_support import produce
from ingest_support import header, issued

from devtools.embedded import free_port, stop_process
from devtools.screen import TerminalSession
from platereg.kafka import topic_partitions
from platereg.security.keys import secret_matches, split_key
from schemas import topics as contract
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.integration

NARROW = {"COLUMNS": "80"}   # a pipe: whole values whatever the width


ISO_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
ISO_JSON = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


async def run(*args: str, **env: str):  # noqa: ANN201 - CompletedProcess
    return await asyncio.to_thread(platereg, *args, env={**NARROW, **env})


async def listed(*args: str) -> list[dict]:
    """``platereg ARGS --json``: one JSON document, an array of objects."""
    done = await run(*args, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows), done.stdout
    return rows


def tsv_rows(stdout: str) -> list[dict[str, str]]:
    """A list command's output through a pipe: a header line, then tab-separated rows."""
    header, *lines = stdout.splitlines()
    return [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]


def on_a_terminal(*args: str, columns: int) -> str:
    """``platereg ARGS`` in a pseudo-terminal ``columns`` wide (300 lines: all of it on the
    screen), what the screen shows."""
    session = TerminalSession([PLATEREG, *args], columns=columns, lines=300)
    try:
        assert session.wait(60) == 0, session.text()
        return session.text()
    finally:
        session.close()


async def test_keys_create_list_revoke(settings, pool: asyncpg.Pool) -> None:
    created = await run("keys", "create", "--role", "operator", "--name", "night desk",
                        "--rate-limit", "7.5")
    assert created.returncode == 0, created.stderr
    key_id = re.search(r"^key id: (\w+)$", created.stdout, re.M).group(1)
    key = re.search(r"^key:\s+(prk_\S+)$", created.stdout, re.M).group(1)
    assert split_key(key)[0] == key_id
    row = await pool.fetchrow("SELECT name, role, rate_limit, secret_hash, revoked_at"
                              " FROM api_keys WHERE key_id = $1", key_id)
    assert (row["name"], row["role"], row["rate_limit"], row["revoked_at"]) == (
        "night desk", "operator", 7.5, None)
    assert secret_matches(split_key(key)[1], row["secret_hash"])   # only the hash is stored

    (row_json,) = await listed("keys", "list")
    assert {k: v for k, v in row_json.items() if k != "created_at"} == {
        "key_id": key_id, "name": "night desk", "role": "operator", "sources": [],
        "rate_limit": 7.5, "revoked_at": None}     # no sources: not ingest
    assert ISO_JSON.match(row_json["created_at"])
    piped = await run("keys", "list")
    assert piped.returncode == 0 and piped.stderr.strip() == "1 key(s)", piped.stderr
    (cells,) = tsv_rows(piped.stdout)
    assert cells == {"key id": key_id, "name": "night desk", "role": "operator", "sources": "",
                     "rate limit": "7.5", "created": cells["created"], "revoked": ""}
    assert ISO_SECONDS.match(cells["created"])
    for output in (piped.stdout, json.dumps(row_json)):
        assert split_key(key)[1] not in output and row["secret_hash"] not in output

    revoked = await run("keys", "revoke", key_id)
    assert (revoked.returncode, revoked.stdout.strip()) == (0, f"revoked {key_id}")
    assert await pool.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_id = $1",
                               key_id)
    ((listed_id, revoked_at),) = [(r["key_id"], r["revoked_at"])
                                  for r in await listed("keys", "list")]
    assert listed_id == key_id and ISO_JSON.match(revoked_at)
    again = await run("keys", "revoke", key_id)
    assert (again.returncode, again.stderr.strip()) == (1, "platereg: no active key with that id")

    bad = await run("keys", "create", "--role", "admin", "--name", "x")
    assert bad.returncode == 2 and "role must be one of" in bad.stderr
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == 1


async def test_keys_list_in_a_terminal_shows_whole_key_ids_at_any_width(settings) -> None:
    """The key id that `keys revoke` needs is never cut: a table at 80 columns, one block
    per key where even the ids do not fit."""
    ids = []
    for args in (("--role", "operator", "--name", "the night desk of the registry office "
                  "in Thunder Bay, second floor"),
                 ("--role", "ingest", "--name", "acme", "--source", "/insurance/acme/",
                  "--source", "/fines/acme/claims/")):
        created = await run("keys", "create", *args)
        assert created.returncode == 0, created.stderr
        ids.append(re.search(r"^key id: (\w+)$", created.stdout, re.M).group(1))
    for columns in (80, 40):
        screen = await asyncio.to_thread(on_a_terminal, "keys", "list", columns=columns)
        lines = screen.splitlines()
        assert all(len(line) <= columns for line in lines)
        for key_id in ids:
            assert any(key_id in line for line in lines), f"{key_id} cut at {columns}:\n{screen}"
        assert "\t" not in screen and "2 key(s)" in screen
    table = await asyncio.to_thread(on_a_terminal, "keys", "list", columns=80)
    assert "│" in table                                           # a table at 80


async def test_topics_creates_the_contract_topics_once(settings) -> None:
    first = await run("topics")
    assert first.returncode == 0, first.stderr
    wanted = topic_partitions(settings)
    assert first.stdout.startswith("created: ")
    assert sorted(first.stdout.removeprefix("created: ").strip().split(", ")) == sorted(wanted)
    again = await run("topics")
    assert (again.returncode, again.stdout.strip()) == (0, "all topics exist")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap())
    await admin.start()
    try:
        described = await admin.describe_topics(list(wanted))
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == wanted


def test_schemas_export_check_passes_on_the_checked_in_files() -> None:
    result = platereg("schemas", "export", "--check")
    assert (result.returncode, result.stdout.strip()) == (0, "schemas/generated is up to date")


# --------------------------------------------------------------------------- dlq

SECRETS = ("DLQSECRET", "Hidden Person", "hidden@example.org")


def _bad_events() -> dict[str, bytes]:
    """One message per reason, each carrying a plate and owner data in its bytes."""
    schema_invalid = issued("CA-ON/DLQSECRET1", name="Hidden Person")
    schema_invalid["data"]["plate_class"] = "spaceship"
    schema_invalid["data"]["owner"]["email"] = "hidden@example.org"
    unknown = {**issued("CA-ON/DLQSECRET2", name="Hidden Person"), "type": "plate.repainted"}
    return {
        "malformed_json": b'{"subject": "CA-ON/DLQSECRET3", "name": "Hidden Person"',
        "schema_invalid": orjson.dumps(schema_invalid),
        "unknown_type": orjson.dumps(unknown),
    }


async def _dlq_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT id, reason, kafka_offset, value, published_at, replayed_at"
                            " FROM dlq_messages ORDER BY id")


async def _listed_ids(*args: str) -> list[int]:
    return [r["id"] for r in await listed("dlq", "list", *args)]


async def test_dlq_list_and_replay_of_what_the_consumer_rejected(topics, pool, tmp_path) -> None:
    bad = _bad_events()
    good = issued("CA-ON/DLQOK1")
    await produce(topics, [(b"CA-ON/DLQ", value) for value in bad.values()]
                  + [(b"CA-ON/DLQOK1", orjson.dumps(good))])
    port = free_port()
    with open(tmp_path / "consumer.log", "wb") as log:
        consumer = popen("consume", "registry", "--metrics-port", str(port), "--parse-workers",
                         "0", stdout=log, stderr=log)
    try:
        async def all_published() -> list[asyncpg.Record] | None:
            rows = await _dlq_rows(pool)
            return rows if len(rows) == 3 and all(r["published_at"] for r in rows) else None

        rows = await eventually(all_published, "the consumer did not dead-letter 3 messages",
                                timeout=60, procs=[consumer])
        by_reason = {r["reason"]: r for r in rows}
        assert set(by_reason) == set(bad)
        assert all(by_reason[reason]["value"] == value for reason, value in bad.items())

        as_json = await listed("dlq", "list")
        assert [(r["id"], r["reason"], r["offset"], r["replayed_at"]) for r in as_json] == [
            (r["id"], r["reason"], r["kafka_offset"], None) for r in reversed(rows)]  # newest 1st
        assert all(ISO_JSON.match(r["published_at"]) for r in as_json)
        piped = await run("dlq", "list")
        assert [(int(c["id"]), c["reason"], c["detail"], c["published"]) for c in
                tsv_rows(piped.stdout)] == [(r["id"], r["reason"], r["detail"], "yes")
                                            for r in as_json]       # whole, even past 80
        for secret in SECRETS:                 # ids, reasons, positions: never the content
            assert secret not in piped.stdout + piped.stderr + json.dumps(as_json), secret
        assert await _listed_ids("--reason", "unknown_type") == [by_reason["unknown_type"]["id"]]

        nothing = await run("dlq", "replay")
        assert nothing.returncode == 2 and "give DLQ ids or --reason" in nothing.stderr

        target = by_reason["schema_invalid"]
        replayed = await run("dlq", "replay", str(target["id"]))
        assert replayed.returncode == 0, replayed.stderr
        assert replayed.stdout.strip() == (
            f"replayed 1 message(s) to {topics.topic(contract.EVENTS)}")
        # Still invalid: the consumer rejects the replayed copy again, bytes unchanged.
        again = await eventually(
            lambda: pool.fetchrow("SELECT reason, kafka_offset, value FROM dlq_messages"
                                  " WHERE id > $1 AND published_at IS NOT NULL",
                                  rows[-1]["id"]),
            "the replayed message was not rejected again", timeout=60, procs=[consumer])
        assert (again["reason"], again["value"]) == ("schema_invalid", bad["schema_invalid"])
        assert again["kafka_offset"] != target["kafka_offset"]

        hidden = await _listed_ids()
        assert target["id"] not in hidden and len(hidden) == 3
        shown = await listed("dlq", "list", "--include-replayed")
        (cells,) = [c for c in shown if c["id"] == target["id"]]
        assert cells["reason"] == "schema_invalid" and ISO_JSON.match(cells["replayed_at"])

        by_reason_replay = await run("dlq", "replay", "--reason", "malformed_json")
        assert by_reason_replay.stdout.startswith("replayed 1 message(s)")

        assert stop_process(consumer, signal.SIGTERM, 30) is None
        assert consumer.returncode == 0
    finally:
        stop_process(consumer, signal.SIGKILL, 10)

    dlq = await read_topic(topics, topics.topic(contract.DLQ))
    assert sorted(r.value for r in dlq if header(r, "x-dlq-reason") == b"schema_invalid") == [
        bad["schema_invalid"]] * 2
    assert await pool.fetchval("SELECT count(*) FROM plates") == 1   # the good event applied
    assert await http_status(f"http://127.0.0.1:{port}/healthz") is None
