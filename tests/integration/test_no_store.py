"""``Cache-Control: no-store`` on every answer that may hold plate or owner data: every
operation of both APIs' OpenAPI documents, called with a key of a role it serves (or the
owner token), answers with it, data answers (2xx) and refusals alike; the owner page too."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from api_helpers import bearer, insert_event, insert_plate, owner, role_keys, running_api
from ingest_support import ingest_server, issued
from owner_support import OWNER_KEY

pytestmark = pytest.mark.integration

PLATE = {"jurisdiction": "CA-ON", "plate": "ABC123"}
#: Bodies and queries that reach data (the documents' examples name other plates).
REQUESTS: dict[str, dict[str, Any]] = {
    "POST /v1/plates/query": {"json": {**PLATE, "purpose": "testing"}},
    "POST /v1/plates/lookup": {"json": {"plates": [PLATE], "purpose": "testing"}},
    "POST /v1/plates/candidates": {"json": {**PLATE, "purpose": "alpr_hit"}},
    "POST /v1/plates/history": {"json": {**PLATE, "purpose": "investigation"}},
    "GET /v1/hotlist": {"params": {"purpose": "alpr_hit"}},
    "POST /v1/owners/query": {"json": {"owner_id": "own-123", "purpose": "testing"}},
    "POST /v1/audit/query": {"json": {**PLATE, "purpose": "audit_review"}},
    "POST /v1/owner-sessions": {"json": {"owner_id": "own-123"}},
    "POST /v1/owner-sessions/link": {"json": {"link_token": "x" * 43}},
    "PUT /v1/me/preferences": {"json": {"channels": ["email"], "language": "fr"}},
    "POST /v1/events": {"json": issued("CA-ON/ABC123")},
}
#: Operations that answer without data on purpose here (an unknown sign-in link).
REFUSED = {"POST /v1/owner-sessions/link"}


def _credential(label: str, keys: dict[str, str], owner_token: str) -> dict[str, str]:
    path = label.split(" ", 1)[1]
    if path == "/v1/owner-sessions/link":
        return {}                        # the link is the credential
    if path.startswith("/v1/me/"):
        return bearer(owner_token)
    if path == "/v1/owner-sessions":
        return bearer(keys["portal"])
    if path == "/v1/events":
        return bearer(keys["ingest"])
    return bearer(keys["operator"])


async def _every_operation(client: httpx.AsyncClient, keys: dict[str, str],
                           owner_token: str) -> dict[str, httpx.Response]:
    document = (await client.get("/openapi.json")).json()
    answers = {}
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):   # the probes, metrics and docs
            continue
        for method in operations:
            label = f"{method.upper()} {path}"
            answers[label] = await client.request(
                method.upper(), path, headers=_credential(label, keys, owner_token),
                **REQUESTS.get(label, {}))
    return answers


async def test_every_answer_with_plate_or_owner_data_is_no_store(settings, topics,
                                                                 pool) -> None:
    key = await insert_plate(pool, "CA-ON", "ABC123", stolen=True, owner_data=owner("own-123"))
    await insert_event(pool, key, "e1", "plate.stolen_reported", dt.datetime.now(dt.UTC),
                       {"agency": "OPP", "report_id": "R1"})
    keys = await role_keys(pool)
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        r = await api.client.post("/v1/owner-sessions", headers=bearer(keys["portal"]),
                                  json={"owner_id": "own-123"})
        assert r.status_code == 201, r.text
        answers = await _every_operation(api.client, keys, r.json()["token"])
        page = await api.client.get("/owner/")
        probes = [await api.client.get(p) for p in ("/healthz", "/openapi.json")]
    async with ingest_server(settings) as url, httpx.AsyncClient(base_url=url) as client:
        answers |= await _every_operation(client, keys, "")
    assert {"POST /v1/plates/query", "GET /v1/me/plates", "POST /v1/events"} <= set(answers)
    for label, r in answers.items():
        assert r.headers.get("cache-control") == "no-store", (label, r.status_code)
        if label not in REFUSED:
            assert r.status_code < 300, (label, r.status_code, r.text[:300])
    assert page.headers.get_list("cache-control") == ["no-store"]
    assert all("no-store" not in r.headers.get("cache-control", "") for r in probes)
