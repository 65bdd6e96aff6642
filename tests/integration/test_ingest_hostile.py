"""The ingest API refuses hostile values with a clear 422 and publishes nothing (issue 16).

The issue's first finding: one ``plate.issued`` of ``0001-01-01T00:00:00Z`` was
accepted (202) and then stopped the registry. Every schema-invalid value of
``tests.hostile`` goes through the real ingest server here.
"""

from __future__ import annotations

import httpx
import orjson
import pytest

from platereg.security.keys import create_key
from tests.hostile import base, cases
from tests.integration.ingest_support import ingest_server
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.integration

CE = "application/cloudevents+json"


async def test_hostile_events_get_422_with_the_rule_and_nothing_is_published(
        topics, pool) -> None:
    key = (await create_key(pool, role="ingest", name="hostile", sources=["/registry/"]))[1]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": CE}
    hostile = [c for c in cases() if c.reason == "schema_invalid"]
    async with ingest_server(topics) as url, httpx.AsyncClient(base_url=url, timeout=60) as c:
        year_one = await c.post("/v1/events", headers=headers,
                                content=orjson.dumps(base(time="0001-01-01T00:00:00Z")))
        answers = [(case, await c.post("/v1/events", content=case.value, headers=headers))
                   for case in hostile]
        alive = await c.post("/v1/events", headers=headers,
                             content=orjson.dumps(base(subject="CA-ON/ALIVE1", id="alive")))
    assert year_one.status_code == 422, year_one.text
    assert year_one.json()["errors"] == [{
        "index": 0, "reason": "schema_invalid",
        "detail": "time: must be from 1900-01-01T00:00:00Z to before 2201-01-01T00:00:00Z"}]
    failures = []
    for case, r in answers:
        errors = r.json().get("errors") if r.status_code == 422 else None
        if not errors or errors[0]["reason"] != "schema_invalid" \
                or case.detail not in errors[0]["detail"]:
            failures.append((case.name, r.status_code, r.text[:200]))
    assert failures == []
    assert alive.status_code == 202
    assert [r.key for r in await read_topic(topics)] == [b"CA-ON/ALIVE1"]
