"""Schemathesis against the served OpenAPI document (real uvicorn, real PostgreSQL): with a
valid operator key, generated requests to every operation give no 5xx and no response that
breaks the documented status codes, content types or schemas; then the stateful phase follows
the document's links (the hotlist's pages) with the same checks."""

from __future__ import annotations

import asyncio
import datetime as dt

import hypothesis
import pytest
import schemathesis
from api_helpers import insert_event, insert_plate, owner, served_registry
from hypothesis import HealthCheck, Phase
from ingest_support import ingest_server, issued
from schemathesis import checks

from platereg.security.keys import create_key

pytestmark = pytest.mark.integration

CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance]
EXAMPLES_PER_OPERATION = 40
STATEFUL_SCENARIOS = 25


# Requests that reach data in the database (random input mostly gets 401/404/422).
JSON = "application/json"
KNOWN = {
    "POST /v1/plates/query": [{"body": {"jurisdiction": j, "plate": p, "purpose": "testing",
                                        **extra}, "media_type": JSON}
                              for j, p, extra in (("CA-ON", "ABC123", {}),
                                                  ("ca-on", "a8c-123", {"case_ref": "F-1"}),
                                                  ("CA-ON", "NOPE1", {}),
                                                  ("CA-ON", "ABC123",
                                                   {"at": "2099-01-01T00:00:00Z"}))],
    "POST /v1/plates/candidates": [{"body": {"jurisdiction": "CA-ON", "plate": "ABC123",
                                             "purpose": "alpr_hit"}, "media_type": JSON}],
    "POST /v1/plates/history": [{"body": {"jurisdiction": "CA-ON", "plate": "ABC123",
                                          "purpose": "investigation"}, "media_type": JSON}],
    "POST /v1/plates/lookup": [{"body": {"plates": [
        {"jurisdiction": "CA-ON", "plate": "ABC123"}, {"jurisdiction": "CA-ON", "plate": "X1"},
        {"jurisdiction": "CA-ON", "plate": "A8C123"}], "purpose": "testing"},
        "media_type": JSON}],
    "GET /v1/hotlist": [{"query": {"limit": 1, "purpose": "alpr_hit"}},
                        {"query": {"purpose": "testing"}}],
    "POST /v1/owners/query": [{"body": {"owner_id": "own-123", "purpose": "testing"},
                               "media_type": JSON}],
    "POST /v1/audit/query": [{"body": {"jurisdiction": "CA-ON", "plate": "ABC123",
                                       "purpose": "audit_review"}, "media_type": JSON}],
}


def _fuzz(base_url: str, key: str, known: dict[str, list[dict]] = KNOWN,
          examples: int = EXAMPLES_PER_OPERATION) -> dict[str, list[int]]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    statuses: dict[str, list[int]] = {}

    def call(case: schemathesis.Case) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {key}"}
        response = case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)
        statuses.setdefault(case.operation.label, []).append(response.status_code)

    for result in schema.get_all_operations():
        operation = result.ok()
        for request in known.get(operation.label, []):
            call(operation.Case(**request))

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=examples, deadline=None, database=None,
                             derandomize=True, phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            call(case)

        run()
    return statuses


def _stateful(base_url: str, key: str) -> list[tuple[str, int]]:
    """Scenarios along the OpenAPI links; returns (operation, status) of every step."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    steps: list[tuple[str, int]] = []

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: schemathesis.Case) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {key}"}

        def get_call_kwargs(self, case: schemathesis.Case) -> dict:
            return {"base_url": base_url, "timeout": 30}

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            steps.append((case.operation.label, response.status_code))
            case.validate_response(response, checks=CHECKS)

    Workflow.run(settings=hypothesis.settings(
        max_examples=STATEFUL_SCENARIOS, stateful_step_count=6, deadline=None, database=None,
        derandomize=True, phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
    return steps


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        settings, pool, tmp_path) -> None:
    key = await insert_plate(pool, "CA-ON", "ABC123", owner_data=owner("own-123"),
                             suspension_reasons=("insurance_lapsed",), device_id="d1")
    await insert_plate(pool, "CA-ON", "A8C123", stolen=True)
    await insert_event(pool, key, "ev-1", "plate.renewed", dt.datetime.now(dt.UTC),
                       {"expires_on": "2030-01-01"})
    nid = await pool.fetchval(
        "INSERT INTO notices (notice_id, dedupe_key, kind, plate_key, owner_id, language,"
        " channels, context) VALUES (gen_random_uuid(), 'd1', 'suspended', 'CA-ON/ABC123',"
        " 'own-123', 'en', '{email}', '{\"reason\": \"insurance_lapsed\"}') RETURNING notice_id")
    await pool.execute("INSERT INTO notice_deliveries (notice_id, channel, attempt, outcome)"
                       " VALUES ($1, 'email', 1, 'sent')", nid)
    _, operator = await create_key(pool, role="operator", name="schemathesis", rate_limit=1e6)
    # Owner sign-in configured, so the owner routes answer too (not 503).
    env = {"PLATEREG_OWNER_TOKEN_KEYS": "schemathesis-owner-token-key-0123456789"}
    with served_registry(str(tmp_path / "api.log"), env=env) as served:
        statuses = await asyncio.to_thread(_fuzz, served.url, operator)
        steps = await asyncio.to_thread(_stateful, served.url, operator)
        assert served.proc.poll() is None
    assert set(KNOWN) | {"GET /healthz", "GET /readyz", "GET /metrics"} <= set(statuses)
    for label in KNOWN:  # every API operation had its responses validated, 200s included
        assert 200 in statuses[label], (label, statuses[label])
    assert 404 in statuses["POST /v1/plates/query"]
    # The stateful phase followed the hotlist's link (next page, same purpose) to answers.
    followed = {label for label, status in steps if status == 200}
    assert "GET /v1/hotlist" in followed, steps
    # Generated lookups were audited like any other.
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE key_id = $1",
                               operator.split("_")[1]) > 0


async def test_schemathesis_on_the_ingest_api(topics, pool) -> None:
    """The ingest document too: generated bodies of every media type, single and batch."""
    _, key = await create_key(pool, role="ingest", name="schemathesis", rate_limit=1e6,
                              sources=["/registry/"])
    known = {"POST /v1/events": [
        {"body": issued("CA-ON/FUZZ1"), "media_type": "application/cloudevents+json"},
        {"body": [issued("CA-ON/FUZZ2"), issued("CA-ON/FUZZ3")],
         "media_type": "application/cloudevents-batch+json"},
        {"body": [issued(f"CA-ON/N{i}") for i in range(1001)], "media_type": "application/json"}]}
    async with ingest_server(topics) as url:
        statuses = await asyncio.to_thread(_fuzz, url, key, known, 30)
    assert 202 in statuses["POST /v1/events"] and 400 in statuses["POST /v1/events"]
    assert all(s < 500 for s in statuses["POST /v1/events"]), statuses
