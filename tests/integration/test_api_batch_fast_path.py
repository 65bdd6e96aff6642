"""The batch lookup answers, audits and refuses plates written in their canonical form
exactly as it does the same plates written any other way."""

from __future__ import annotations

import asyncpg
import pytest
from api_helpers import bearer, insert_plate, role_keys, running_api

pytestmark = pytest.mark.integration

ORDER = ["NY4", "MISSING", "NY0", "UNISSUED", "NY3", "NY4"]


def _without_as_of(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "as_of"} for r in results]


async def _audit(pool: asyncpg.Pool) -> list[tuple]:
    rows = await pool.fetch("SELECT kind, jurisdiction, plate, purpose, result FROM audit_log"
                            " ORDER BY id")
    return [tuple(r) for r in rows]


async def test_canonical_and_loose_spellings_answer_and_audit_alike(settings, pool) -> None:
    keys = await role_keys(pool)
    for i in range(5):
        await insert_plate(pool, "US-NY", f"NY{i}", stolen=i == 3)
    await insert_plate(pool, "US-NY", "UNISSUED", issued=False)
    canonical = {"plates": [{"jurisdiction": "US-NY", "plate": p} for p in ORDER],
                 "purpose": "traffic_stop"}
    loose = {"plates": [{"jurisdiction": " us-ny", "plate": p[:2].lower() + "-" + p[2:]}
                        for p in ORDER], "purpose": "traffic_stop"}
    answers = []
    async with running_api(settings) as api:
        for body in (canonical, loose):
            r = await api.client.post("/v1/plates/lookup", json=body,
                                      headers=bearer(keys["operator"]))
            assert r.status_code == 200, r.text
            answers.append(_without_as_of(r.json()["results"]))
    assert answers[0] == answers[1]
    assert [x["status"] for x in answers[0]] == ["valid", "unknown", "valid", "unknown",
                                                 "stolen", "valid"]
    assert answers[0][0]["owner"]["owner_id"] == "own-ny4"
    audit = await _audit(pool)
    assert len(audit) == 2 * len(ORDER) and audit[:len(ORDER)] == audit[len(ORDER):]


async def test_canonical_plates_with_a_bad_rest_of_the_body_are_refused(settings, pool) -> None:
    keys = await role_keys(pool)
    item = {"jurisdiction": "CA-ON", "plate": "ABC123"}
    purpose = {"purpose": "traffic_stop"}
    cases = [({"plates": [item], "purpose": 5}, "purpose"),
             ({"plates": [item]}, "purpose"),
             ({"plates": [item], "colour": "red", **purpose}, "body"),
             ({"plates": [item] * 1001, **purpose}, "plates"),
             ({"plates": [], **purpose}, "plates")]
    async with running_api(settings) as api:
        for body, field in cases:
            r = await api.client.post("/v1/plates/lookup", json=body,
                                      headers=bearer(keys["enforcement"]))
            assert r.status_code == 422, body
            assert [e["field"] for e in r.json()["errors"]] == [field], r.text
