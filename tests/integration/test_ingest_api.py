"""The ingest API against the real PostgreSQL (keys) and the real broker (events)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from devtools import simulate as sim
from platereg.kafka import ensure_topics
from platereg.security.keys import create_key
from schemas.validation import parse_event_bytes, parse_event_obj
from tests.integration.ingest_support import header, ingest_server, issued, renewed
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.integration

CE = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"


@pytest.fixture
async def ingest_key(pool) -> str:
    return (await create_key(pool, role="ingest", name="ingest test",
                             sources=["/registry/serviceontario/"]))[1]


def key_id_of(key: str) -> str:
    return key.split("_")[1]


def auth(key: str, ctype: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if ctype:
        headers["Content-Type"] = ctype
    return headers


def metric(text: str, outcome: str) -> float:
    match = re.search(rf'^platereg_ingest_events_total{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_single_and_batch_events_reach_kafka_intact(topics, ingest_key) -> None:
    single = issued("ca-on/abc-123")                     # non-canonical subject
    batch = [renewed("CA-QC/XYZ 987"), issued("US-NY/KLM-4321"), renewed("ca-on/ABC123")]
    array = [renewed("CA-BC/AB1 23C")]
    async with ingest_server(topics) as url, httpx.AsyncClient(base_url=url) as client:
        before = metric((await client.get("/metrics")).text, "accepted")
        r1 = await client.post("/v1/events", content=orjson.dumps(single),
                               headers=auth(ingest_key, CE))
        r2 = await client.post("/v1/events", content=orjson.dumps(batch),
                               headers=auth(ingest_key, CE_BATCH))
        r3 = await client.post("/v1/events", json=array, headers=auth(ingest_key))
        r4 = await client.post("/v1/events", content=orjson.dumps(single),
                               headers=auth(ingest_key, "Application/JSON; charset=UTF-8"))
        after = metric((await client.get("/metrics")).text, "accepted")
    assert [r.status_code for r in (r1, r2, r3, r4)] == [202] * 4, [r.text for r in (r1, r2, r3)]
    assert r1.json() == {"accepted": 1, "ids": [single["id"]]}
    assert r2.json() == {"accepted": 3, "ids": [e["id"] for e in batch]}
    assert r3.json() == {"accepted": 1, "ids": [array[0]["id"]]}
    assert after - before == 6

    records = await read_topic(topics)
    assert len(records) == 6
    sent = {e["id"]: e for e in [single, *batch, *array]}
    now = datetime.now(UTC)
    for record in records:
        value = orjson.loads(record.value)
        original = sent[value["id"]]
        expected = parse_event_obj(original, now=now)
        assert record.key.decode() == expected.plate_key == value["subject"]
        assert header(record, "content-type") == b"application/cloudevents+json"
        assert parse_event_bytes(record.value, now=now).fingerprint() == expected.fingerprint()
        # the authcontext the API stamps: which key published it
        assert value.pop("authtype") == "api_key" and value.pop("authid") == key_id_of(ingest_key)
        assert {k: v for k, v in value.items() if k != "subject"} == {
            k: v for k, v in original.items() if k not in ("subject", "time")} | {
            "time": value["time"]}
    keys = sorted(r.key.decode() for r in records)
    assert keys == sorted(["CA-ON/ABC123", "CA-ON/ABC123", "CA-ON/ABC123", "CA-QC/XYZ987",
                           "US-NY/KLM4321", "CA-BC/AB123C"])
    # Same key, same partition: a plate's events stay in order for the registry.
    assert len({r.partition for r in records if r.key == b"CA-ON/ABC123"}) == 1


async def test_a_batch_with_invalid_events_publishes_nothing(topics, ingest_key) -> None:
    good = [issued(f"CA-ON/GOOD{i}") for i in range(5)]
    batch = [good[0], {**good[1], "subject": "CA-ON/BAD#1"}, good[2],
             {**good[3], "type": "plate.repainted"}, {**good[4], "time": "2099-01-01T00:00:00Z"},
             "not an event"]
    async with ingest_server(topics) as url, httpx.AsyncClient(base_url=url) as client:
        before = metric((await client.get("/metrics")).text, "rejected")
        response = await client.post("/v1/events", json=batch, headers=auth(ingest_key))
        rejected = metric((await client.get("/metrics")).text, "rejected") - before
        # A valid request afterwards proves that reading the topic sees what is there.
        ok = await client.post("/v1/events", json=good[0], headers=auth(ingest_key))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [
        (1, "invalid_plate"), (3, "unknown_type"), (4, "future_time"), (5, "malformed_json")]
    assert all(e["detail"] for e in body["errors"])
    assert "BAD#1" not in response.text          # problems never echo values
    assert rejected == 4
    assert ok.status_code == 202
    records = await read_topic(topics)
    assert [orjson.loads(r.value)["id"] for r in records] == [good[0]["id"]]


async def test_same_id_twice_in_a_batch(topics, ingest_key) -> None:
    event = issued("CA-ON/DUP1")
    conflicting = {**event, "time": "2026-01-05T15:04:06Z"}    # same source and id
    async with ingest_server(topics) as url, httpx.AsyncClient(base_url=url) as client:
        conflict = await client.post("/v1/events", json=[event, conflicting],
                                     headers=auth(ingest_key))
        same = await client.post("/v1/events", json=[event, dict(event)],
                                 headers=auth(ingest_key))
    assert conflict.status_code == 422
    assert [(e["index"], e["reason"]) for e in conflict.json()["errors"]] == [(1, "id_conflict")]
    # An exact duplicate is harmless (the registry counts it as a duplicate).
    assert same.status_code == 202 and same.json()["ids"] == [event["id"], event["id"]]


def _deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


HOSTILE = [
    # (name, content type, body, expected status)
    ("not json", CE, b"{this is not json", 400),
    ("empty body", CE, b"", 400),
    ("invalid utf-8", "application/json", b'{"id": "\xff\xfe"}', 400),
    ("NaN", "application/json", b'{"id": NaN}', 400),
    ("duplicate keys", CE, b'{"id": "a", "id": "b"}', 400),
    ("top-level number", "application/json", b"42", 400),
    ("top-level string", "application/json", b'"plate.issued"', 400),
    ("top-level null", "application/json", b"null", 400),
    ("top-level true", CE, b"true", 400),
    ("empty array", "application/json", b"[]", 400),
    ("empty batch", CE_BATCH, b"[]", 400),
    ("array as single", CE, b"[{}]", 400),
    ("object as batch", CE_BATCH, b"{}", 400),
    ("array depth bomb", "application/json", b"[" * 100_000 + b"]" * 100_000, 400),
    ("object depth bomb", "application/json", _deep(5000), 400),
    ("nesting over 64", "application/json", _deep(70), 400),
    ("huge integer", "application/json", b'{"id": ' + b"9" * 5000 + b"}", 400),
    ("text/plain", "text/plain", orjson.dumps(issued()), 415),
    ("no content type", None, orjson.dumps(issued()), 415),
    ("form", "application/x-www-form-urlencoded", b"id=1", 415),
    ("latin-1", "application/json; charset=latin-1", orjson.dumps(issued()), 415),
    ("xml", "application/xml", b"<event/>", 415),
    ("1001 events", CE_BATCH, orjson.dumps([issued(f"CA-ON/N{i}") for i in range(1001)]), 400),
    ("empty object", CE, b"{}", 422),
    ("array of scalars", "application/json", b"[1, 2]", 422),
    ("array of arrays", "application/json", b"[[]]", 422),
    ("unknown data field", CE, orjson.dumps(
        {**issued(), "data": {**issued()["data"], "colour": "red"}}), 422),
    ("unknown attribute", CE, orjson.dumps({**issued(), "Bad-Name": 1}), 422),
    ("object extension", CE, orjson.dumps({**issued(), "ext": {"a": 1}}), 422),
    ("year as text", CE, orjson.dumps(
        {**issued(), "data": {**issued()["data"], "vehicle": {
            **issued()["data"]["vehicle"], "year": "2019"}}}), 422),
    ("data as list", CE, orjson.dumps({**issued(), "data": []}), 422),
    ("id too long", CE, orjson.dumps({**issued(), "id": "x" * 129}), 422),
    ("time without offset", CE, orjson.dumps({**issued(), "time": "2026-01-05T15:04:05"}), 422),
    ("control chars", CE, orjson.dumps({**issued(), "source": "/a\r\nX-Injected: 1"}), 422),
    ("unicode plate", CE, orjson.dumps(issued("CA-ON/АВС123")), 422),
    ("event over 64 KiB", CE, orjson.dumps({**issued(), "note": "x" * 70_000}), 422),
    ("deep data", CE, orjson.dumps({**issued(), "data": json.loads(_deep(40))}), 422),
]


async def test_hostile_bodies_get_problems_never_500(topics, ingest_key) -> None:
    async with ingest_server(topics) as url, httpx.AsyncClient(base_url=url, timeout=60) as c:
        failures = []
        for name, ctype, body, expected in HOSTILE:
            response = await c.post("/v1/events", content=body, headers=auth(ingest_key, ctype))
            problem = response.headers.get("content-type") == "application/problem+json"
            if response.status_code != expected or not problem or "title" not in response.json():
                failures.append((name, response.status_code, response.text[:300]))
        # A body over PLATEREG_MAX_BODY_BYTES, with Content-Length and chunked.
        big = b"[" + b" " * (10 * 1024 * 1024) + b"]"
        sized = await c.post("/v1/events", content=big, headers=auth(ingest_key, CE_BATCH))

        async def chunks():
            for _ in range(160):
                yield b" " * 65536

        chunked = await c.post("/v1/events", content=chunks(),
                               headers=auth(ingest_key, CE_BATCH))
        still_ok = await c.post("/v1/events", json=issued("CA-ON/ALIVE1"),
                                headers=auth(ingest_key))
    assert failures == []
    assert sized.status_code == 413 and chunked.status_code == 413
    assert sized.headers["content-type"] == "application/problem+json"
    assert still_ok.status_code == 202
    records = await read_topic(topics)
    assert [r.key for r in records] == [b"CA-ON/ALIVE1"]   # nothing hostile was published


async def test_errors_never_echo_the_clients_key_names(topics, ingest_key) -> None:
    evil = {**issued(), "Jane-Doe": 1, "data": {**issued()["data"], "JaneDoe": 2}}
    async with ingest_server(topics) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/v1/events", content=orjson.dumps(evil),
                         headers=auth(ingest_key, CE))
        latin = await c.post("/v1/events", content=orjson.dumps(issued()),
                             headers=auth(ingest_key, "application/json; charset=utf-16"))
        suffix = await c.post("/v1/events", content=orjson.dumps(issued()),
                              headers=auth(ingest_key, "application/evil+json"))
    assert r.status_code == 422
    assert "Jane" not in r.text, r.text
    assert [e["reason"] for e in r.json()["errors"]] == ["schema_invalid"]
    assert latin.status_code == 415 and suffix.status_code == 415


async def test_keys_and_roles(topics, pool, ingest_key) -> None:
    enforcement = (await create_key(pool, role="enforcement", name="wrong role"))[1]
    body = orjson.dumps(issued())
    async with ingest_server(topics) as url, httpx.AsyncClient(base_url=url) as client:
        none = await client.post("/v1/events", content=body, headers={"Content-Type": CE})
        bad = await client.post("/v1/events", content=body, headers=auth("prk_nope", CE))
        wrong = await client.post("/v1/events", content=body, headers=auth(enforcement, CE))
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        docs = await client.get("/openapi.json")
    assert (none.status_code, bad.status_code, wrong.status_code) == (401, 401, 403)
    assert all(r.headers["content-type"] == "application/problem+json"
               for r in (none, bad, wrong))
    assert health.status_code == 200 and ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "kafka": "ok"}
    operation = docs.json()["paths"]["/v1/events"]["post"]
    assert set(operation["requestBody"]["content"]) == {CE, CE_BATCH, "application/json"}
    assert {"202", "400", "401", "403", "413", "415", "422", "503"} <= set(operation["responses"])
    assert await read_topic(topics) == []


async def test_simulated_traffic_through_the_api(topics, pool) -> None:
    # every kind of source the simulator uses; its smart plate thefts stay unauthorized
    _, key = await create_key(pool, role="ingest", name="simulator", sources=[
        "/registry/", "/insurance/", "/courts/", "/emissions/", "/police/"])
    config = sim.SimConfig(plates=40, seed=11, events=300, invalid_share=0.05,
                           duplicate_share=0.05)
    items = list(sim.generate(config))
    async with ingest_server(topics) as url:
        sink = sim.ApiSink(url, key, batch_size=100)
        stats = await sim.run(iter(items), sink)
    invalid = sum(i.kind == "invalid" for i in items)
    # id_conflict needs the registry's memory of earlier ids; the API accepts those.
    conflicts = sum(i.reason == "id_conflict" for i in items)
    assert stats.refused == invalid - conflicts
    assert stats.accepted == len(items) - invalid + conflicts
    records = await read_topic(topics)
    assert len(records) == stats.accepted


@pytest.mark.slow
async def test_broker_outage_gives_503_then_recovers(embedded, topics, ingest_key) -> None:
    """Stop the broker mid-test: bounded 503s, then success after it returns, and
    everything acknowledged, before the stop and after the restart, is on the topic."""
    settings = topics.model_copy(update={"kafka_timeout_seconds": 2.0})
    before = [issued(f"CA-ON/PRE{i}") for i in range(3)]
    during = [issued(f"CA-ON/DUR{i}") for i in range(3)]
    after = [issued(f"CA-ON/POST{i}") for i in range(3)]
    # A request that hangs fails with a client timeout well above the 2 s bound.
    async with ingest_server(settings) as url, httpx.AsyncClient(base_url=url,
                                                                  timeout=15) as client:
        ok = await client.post("/v1/events", json=before, headers=auth(ingest_key))
        assert ok.status_code == 202
        assert {orjson.loads(r.value)["id"] for r in await read_topic(settings)} == {
            e["id"] for e in before}
        refused_before = metric((await client.get("/metrics")).text, "refused")
        try:
            embedded.kafka.stop()
            down = [await client.post("/v1/events", json=during, headers=auth(ingest_key))
                    for _ in range(2)]
            refused = metric((await client.get("/metrics")).text, "refused") - refused_before
            ready = await client.get("/readyz")
            assert [r.status_code for r in down] == [503, 503], [r.text for r in down]
            assert all(r.headers["content-type"] == "application/problem+json" for r in down)
            assert all(int(r.headers["Retry-After"]) >= 1 for r in down)
            assert ready.status_code == 503 and ready.json()["checks"]["kafka"] == "unreachable"
            assert refused == 2 * len(during)   # contract: outcome "refused" for 503
        finally:
            if not embedded.kafka.running:
                embedded.kafka.start()
        await ensure_topics(settings)
        # The client retries the refused batch until accepted, as the 503 says.
        accepted: list[httpx.Response] = []
        for batch in (during, after):
            for _ in range(30):
                response = await client.post("/v1/events", json=batch, headers=auth(ingest_key))
                if response.status_code == 202:
                    accepted.append(response)
                    break
                assert response.status_code == 503, response.text
                await asyncio.sleep(1)
        assert len(accepted) == 2
    ids = [orjson.loads(r.value)["id"] for r in await read_topic(settings)]
    # Everything acknowledged is there, the broker kept its log across the restart; a
    # refused attempt may have left a copy of `during` (harmless: the registry dedupes).
    assert set(ids) == {e["id"] for e in before + during + after}
    assert len([i for i in ids if i in {e["id"] for e in before + after}]) == 6


async def test_logs_never_contain_plates_names_or_paths(topics, ingest_key, tmp_path) -> None:
    """The real `platereg serve ingest` process, DEBUG logs, plates everywhere in requests."""
    import os
    import subprocess

    from devtools.embedded import free_port
    from tests.integration.cli_support import PLATEREG

    port = free_port()
    log_path = tmp_path / "ingest.log"
    env = {**os.environ, "PLATEREG_LOG_LEVEL": "DEBUG", "PLATEREG_LOG_FORMAT": "json",
           "PLATEREG_INGEST_PORT": str(port)}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([PLATEREG, "serve", "ingest"],
                                env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(200):
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                h = auth(ingest_key)
                good = await client.post("/v1/events", headers=h,
                                         json=issued("CA-ON/PRIV123", name="Zebulon Quixote"))
                await client.post("/v1/events", headers=h,
                                  json=[issued("CA-ON/PRIV456"), issued("CA-ON/PRIV#7")])
                await client.post("/v1/events", headers=h, content=b"CA-ON/PRIV999 not json")
                await client.post("/v1/events?plate=PRIV321", headers=h, content=b"{")
                await client.get("/v1/plates/CA-ON/PRIV777")
                await client.post("/v1/events", headers=auth("prk_PRIV555"),
                                  json=issued("CA-ON/PRIV555"))
        finally:
            proc.terminate()
            proc.wait(30)
    assert good.status_code == 202
    text = log_path.read_text()
    assert '"route": "/v1/events"' in text or '"route":"/v1/events"' in text  # logs were written
    for secret in ("PRIV", "Zebulon", "Quixote", "jane@example.org", "/v1/plates/"):
        assert secret not in text, secret


async def test_readyz_reports_an_unreachable_broker(settings, ingest_key) -> None:
    """Start-up does not need the broker; /readyz says it is missing; POST answers 503."""
    from devtools.embedded import free_port

    dead = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
                                       "kafka_timeout_seconds": 1.0})
    async with ingest_server(dead) as url, httpx.AsyncClient(base_url=url, timeout=15) as client:
        ready = await client.get("/readyz")
        response = await client.post("/v1/events", json=issued(), headers=auth(ingest_key))
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"postgres": "ok", "kafka": "unreachable"}
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"


async def test_import_through_the_api(topics, ingest_key, tmp_path) -> None:
    """`platereg import --api URL --key KEY`: batches to the ingest API, same report."""
    from ingest.importer import ApiLineSink, import_file

    good = [issued(f"CA-ON/API{i}") for i in range(7)]
    lines = [orjson.dumps(e) for e in good[:3]] + [b"{broken"] + [orjson.dumps(e)
                                                                   for e in good[3:]]
    path = tmp_path / "via-api.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    async with ingest_server(topics) as url:
        stats = await import_file(path, sink=ApiLineSink(url, ingest_key, batch_size=3),
                                  report_path=tmp_path / "report.ndjson")
    assert (stats.published, stats.rejected, stats.exit_code) == (7, 1, 1)
    assert stats.acked_through == 8
    report = [orjson.loads(x) for x in (tmp_path / "report.ndjson").read_bytes().splitlines()]
    assert [(r["line"], r["reason"]) for r in report] == [(4, "malformed_json")]
    ids = sorted(orjson.loads(r.value)["id"] for r in await read_topic(topics))
    assert ids == sorted(e["id"] for e in good)
