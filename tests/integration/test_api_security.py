"""Registry API security: role x route matrix, keys, rate limits, hostile input, no owner data
for enforcement, route-template metrics."""

from __future__ import annotations

import datetime as dt
import hashlib

import asyncpg
import pytest
from api_helpers import (
    OWNER_FIELDS,
    bearer,
    insert_change,
    insert_event,
    insert_plate,
    owner,
    role_keys,
    running_api,
)

from platereg.security.keys import create_key, revoke_key

pytestmark = pytest.mark.integration

BATCH = {"plates": [{"jurisdiction": "CA-ON", "plate": "ABC123"}], "purpose": "testing"}
PQ = {"jurisdiction": "CA-ON", "plate": "ABC123", "purpose": "testing"}
OQ = {"owner_id": "own-abc123", "purpose": "registry_administration"}
# (method, path, json body, roles allowed) -- the contract's route table (revision 2).
ROUTES = [
    ("POST", "/v1/plates/query", PQ, {"enforcement", "operator"}),
    ("POST", "/v1/plates/lookup", BATCH, {"enforcement", "operator"}),
    ("POST", "/v1/plates/candidates", PQ, {"enforcement", "operator"}),
    ("POST", "/v1/plates/history", PQ, {"operator"}),
    ("GET", "/v1/hotlist?purpose=alpr_hit", None, {"enforcement", "operator"}),
    ("POST", "/v1/owners/query", OQ, {"operator"}),
    ("POST", "/v1/audit/query", {"purpose": "audit_review"}, {"operator"}),
]
# Routes of revision 1 that put a plate or an owner id in the URL: gone for every key.
REMOVED = [
    ("GET", "/v1/plates/CA-ON/ABC123", 404), ("GET", "/v1/plates/ca-on/abc-123", 404),
    ("GET", "/v1/plates/CA-ON/ABC123/candidates", 404),
    ("GET", "/v1/plates/CA-ON/ABC123/events", 404),
    ("GET", "/v1/owners/own-abc123/plates", 404), ("GET", "/v1/owners/own-abc123/notices", 404),
    ("GET", "/v1/owners/own-abc123/preferences", 404),
    ("PUT", "/v1/owners/own-abc123/preferences", 404),
    ("GET", "/v1/audit?jurisdiction=CA-ON&plate=ABC123", 404),
    ("GET", "/v1/plates/query?jurisdiction=CA-ON&plate=ABC123&purpose=testing", 405),
    ("GET", "/v1/plates/lookup", 405), ("GET", "/v1/owners/query?owner_id=own-abc123", 405),
    ("GET", "/v1/audit/query?plate=ABC123", 405),
]


async def test_role_by_route_matrix(settings, pool: asyncpg.Pool) -> None:
    key = await insert_plate(pool, "CA-ON", "ABC123")
    await insert_event(pool, key, "e1", "plate.renewed", dt.datetime.now(dt.UTC),
                       {"expires_on": "2030-01-01"})
    keys = await role_keys(pool)
    revoked_id, revoked = await create_key(pool, role="operator", name="gone")
    await revoke_key(pool, revoked_id)
    unknown = "prk_aaaaaaaaaaaa_" + "A" * 43
    wrong_secret = keys["operator"][:-1] + ("B" if keys["operator"][-1] != "B" else "C")
    no_key_headers = [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"},
                      bearer("not-a-key"), bearer(unknown), bearer(wrong_secret),
                      bearer(revoked), {"Authorization": "Bearer " + "x" * 5000}]
    cells = 0
    async with running_api(settings) as api:
        for method, path, body, allowed in ROUTES:
            for headers in no_key_headers:
                r = await api.client.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert r.headers["content-type"] == "application/problem+json"
                assert "www-authenticate" in r.headers
                cells += 1
            for role, k in keys.items():
                r = await api.client.request(method, path, json=body, headers=bearer(k))
                expected = 200 if role in allowed else 403
                assert r.status_code == expected, (method, path, role, r.text)
                if expected == 403:
                    assert r.headers["content-type"] == "application/problem+json"
                cells += 1
        for method, path, status in REMOVED:
            for k in keys.values():
                r = await api.client.request(method, path, headers=bearer(k),
                                             json={"channels": ["email"]})
                assert r.status_code == status, (method, path)
                assert "ABC123" not in r.text and "own-abc123" not in r.text
    assert cells == len(ROUTES) * (len(no_key_headers) + 4)


BAD_PURPOSES: list[dict] = [
    {"purpose": None}, {"purpose": ""}, {"purpose": "curiosity"}, {"purpose": "TESTING"},
    {"purpose": "testing", "case_ref": ""}, {"purpose": "testing", "case_ref": "a" * 65},
    {"purpose": "testing", "case_ref": "case 1"}, {"purpose": "testing", "case_ref": "a;b"},
    {"purpose": "testing", "case_ref": "caf\u00e9"}, {"purpose": "testing", "case_ref": 7},
]


async def test_missing_or_unknown_purpose_and_bad_case_ref_are_422(settings, pool) -> None:
    """Every route that reads plate or owner data: purpose missing (the key absent too) or
    unknown, or a case_ref outside 1-64 of A-Z a-z 0-9 . _ / -, is 422 and audits nothing."""
    key = await insert_plate(pool, "CA-ON", "ABC123")
    await insert_event(pool, key, "e1", "plate.renewed", dt.datetime.now(dt.UTC),
                       {"expires_on": "2030-01-01"})
    op = bearer((await role_keys(pool))["operator"])
    async with running_api(settings) as api:
        for method, path, body, _ in ROUTES:
            cases = [*BAD_PURPOSES, "absent"]
            for bad in cases:
                if method == "GET" and bad != "absent" and bad.get("case_ref") == 7:
                    continue  # a query string has no numbers: "7" is a valid case ref
                if method == "GET":
                    params = {} if bad == "absent" else {
                        k: v for k, v in bad.items() if v is not None}
                    r = await api.client.get(path.split("?")[0], params=params, headers=op)
                else:
                    payload = {k: v for k, v in body.items() if k != "purpose"}
                    if bad != "absent":
                        payload |= {k: v for k, v in bad.items() if v is not None}
                    r = await api.client.post(path, json=payload, headers=op)
                assert r.status_code == 422, (path, bad, r.text)
                assert r.headers["content-type"] == "application/problem+json"
                assert "curiosity" not in r.text and "case 1" not in r.text
            good = {"purpose": "testing", "case_ref": "A-z_0.9/x-" + "y" * 54}
            if method == "GET":
                r = await api.client.get(path.split("?")[0], params=good, headers=op)
            else:
                r = await api.client.post(path, json={**body, **good}, headers=op)
            assert r.status_code == 200, (path, r.text)
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE purpose IS NULL") == 0


async def test_rate_limit_answers_429_with_retry_after(settings, pool: asyncpg.Pool) -> None:
    await insert_plate(pool, "CA-ON", "RATE1")
    _, slow = await create_key(pool, role="enforcement", name="slow", rate_limit=0.5)
    _, other = await create_key(pool, role="enforcement", name="other", rate_limit=0.5)
    async with running_api(settings, rate_limit_burst=3) as api:
        statuses = [(await api.client.post("/v1/plates/query", headers=bearer(slow),
                                           json={**PQ, "plate": "RATE1"})) for _ in range(5)]
        assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
        limited = statuses[-1]
        assert limited.headers["content-type"] == "application/problem+json"
        assert int(limited.headers["retry-after"]) >= 1
        # Buckets are per key: another key is not affected.
        r = await api.client.post("/v1/plates/query", headers=bearer(other),
                                  json={**PQ, "plate": "RATE1"})
        assert r.status_code == 200


async def test_database_never_holds_a_raw_key(pool: asyncpg.Pool) -> None:
    created = [await create_key(pool, role=r, name=f"k {r}",
                                sources=["/registry/"] if r == "ingest" else ())
               for r in ("enforcement", "portal", "operator", "ingest")]
    rows = await pool.fetch("SELECT * FROM api_keys")
    dump = repr([dict(r) for r in rows])
    for key_id, key in created:
        secret = key.split("_", 2)[2]
        assert key not in dump and secret not in dump
        row = next(r for r in rows if r["key_id"] == key_id)
        assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()


async def test_enforcement_responses_never_contain_owner_data(settings, pool) -> None:
    plates = [f"Q{i:03d}" for i in range(150)]
    for i, plate in enumerate(plates):
        await insert_plate(pool, "CA-ON", plate, stolen=i % 3 == 0, cancelled=i % 7 == 0,
                           suspension_reasons=("unpaid_fines",) if i % 5 == 0 else (),
                           device_id="dev-1" if i % 2 else None,
                           owner_data=owner(f"secret-owner-{i}", f"Secret Name {i}"))
    # A stored change view carrying owner data must still not leak through the hotlist.
    leaky = {"jurisdiction": "CA-ON", "plate": "Q000", "status": "stolen", "flags": ["stolen"],
             "expires_on": "2027-01-01", "plate_class": "passenger", "suspension_reasons": [],
             "vehicle": None, "smart_plate": False, "as_of": "2026-11-24T15:04:05Z",
             "version": 4, "owner": owner("secret-owner-x", "Secret Name X")}
    enf = bearer((await role_keys(pool))["enforcement"])
    bodies: list[tuple[str, object]] = []
    async with running_api(settings) as api:
        for plate in plates:
            r = await api.client.post("/v1/plates/query", headers=enf,
                                      json={**PQ, "jurisdiction": "ca-on", "plate": plate.lower()})
            assert r.status_code == 200
            bodies.append((r.text, [r.json()]))
        r = await api.client.post("/v1/plates/lookup", headers=enf, json={"plates": [
            {"jurisdiction": "CA-ON", "plate": p} for p in plates], "purpose": "testing"})
        bodies.append((r.text, r.json()["results"]))
        for plate in plates[:40]:
            r = await api.client.post("/v1/plates/candidates", headers=enf,
                                      json={**PQ, "plate": plate.replace("0", "O")})
            assert r.status_code == 200
            bodies.append((r.text, r.json()["candidates"]))
        r = await api.client.get("/v1/hotlist", params={"purpose": "testing"}, headers=enf)
        bodies.append((r.text, r.json()["entries"]))
        cursor = r.json()["next"]
        await insert_change(pool, leaky, True, False)
        r = await api.client.get("/v1/hotlist", params={"since": cursor, "purpose": "testing"},
                                 headers=enf)
        assert len(r.json()["entries"]) == 1
        bodies.append((r.text, r.json()["entries"]))
    views = 0
    for text, items in bodies:
        assert "secret-owner" not in text and "Secret Name" not in text
        assert "example.org" not in text and "+1555" not in text
        for view in items:  # type: ignore[union-attr]
            assert not set(view) & set(OWNER_FIELDS), view
            views += 1
    assert views > 150 * 2 + 40


HOSTILE_PLATES = [
    ("CA-ON", "A" * 65),            # over-long raw plate
    ("CA-ON", "ABCDEFGHIJK"),       # 11 characters after normalization
    ("CA-ON", "---"),               # nothing left
    ("CA-ON", "ABC$123"),
    ("CA-ON", "\u0410BC123"),       # Cyrillic A
    ("CA-ON", "\uff21BC"),          # full-width A
    ("CA-ON", "STRA\u00dfE"),       # sharp s (upper() would give SS)
    ("CA-ON", "AB\u0000C"),         # NUL
    ("CA-ON", "\r\nX-Injected:1"),
    ("CANADA", "ABC123"), ("C1-ON", "ABC123"),
    ("\u039f\u039d-ON", "ABC123"),  # Greek look-alikes
    ("X" * 5000, "ABC123"),
    ("CA-ON", 123), (None, "ABC123"),
]
HOSTILE_QUERIES = [
    "/v1/hotlist?purpose=testing&since=%00",
    "/v1/hotlist?purpose=testing&since=" + "A" * 300,
    "/v1/hotlist?purpose=testing&since=ZDotMQ",      # d:-1 unsealed
    "/v1/hotlist?purpose=testing&since=ZDox",        # d:1 unsealed (revision 1's form)
    "/v1/hotlist?purpose=testing&limit=-1",
    "/v1/hotlist?purpose=testing&limit=99999999999999999999999",
    "/v1/hotlist?purpose=testing%0D%0AX-Injected:1",
]


async def test_hostile_plates_and_queries_are_4xx_problems(settings, pool) -> None:
    op = bearer((await role_keys(pool))["operator"])
    async with running_api(settings) as api:
        for path in ("/v1/plates/query", "/v1/plates/candidates", "/v1/plates/history"):
            for j, p in HOSTILE_PLATES:
                r = await api.client.post(path, headers=op, json={
                    "jurisdiction": j, "plate": p, "purpose": "testing"})
                assert r.status_code == 422, (path, j, p, r.text)
                assert r.headers["content-type"] == "application/problem+json"
        for j, p in HOSTILE_PLATES:
            r = await api.client.post("/v1/audit/query", headers=op, json={
                "jurisdiction": j, "plate": p, "purpose": "audit_review"})
            assert r.status_code == 422, (j, p)
        for bad in ({"owner_id": "o" * 65}, {"owner_id": "\u202eevil"}, {"owner_id": ""}):
            r = await api.client.post("/v1/owners/query", headers=op,
                                      json={**bad, "purpose": "testing"})
            assert r.status_code == 422
        for path in HOSTILE_QUERIES:
            r = await api.client.get(path, headers=op)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json", path
            assert "X-Injected" not in r.headers


async def test_hostile_bodies_are_4xx_problems(settings, pool) -> None:
    op = {**bearer((await role_keys(pool))["operator"])}
    json_h = {**op, "Content-Type": "application/json"}
    item = {"jurisdiction": "CA-ON", "plate": "ABC123"}
    cases: list[tuple[dict, bytes | None, int]] = [
        (json_h, b'{"plates": [' + b",".join([b'{"jurisdiction":"CA-ON","plate":"A1"}'] * 1001)
         + b"]}", 422),                                              # 1001 items
        (json_h, b"not json", 400),
        (json_h, b"", 400),
        (json_h, b"\xff\xfe\x00", 400),
        (json_h, b"[" * 100_000 + b"]" * 100_000, 400),            # nesting beyond orjson's limit
        (json_h, b'{"plates": ' + b"[" * 500 + b"]" * 500 + b"}", 400),  # over 64 levels
        # The strict reader shared with the ingest API: a repeated key is not "last one
        # wins", only UTF-8, only application/json itself.
        (json_h, b'{"plates": [{"jurisdiction": "CA-ON", "plate": "A1"}], "plates": []}', 400),
        ({**op, "Content-Type": "application/json; charset=latin-1"},
         b'{"plates": [{"jurisdiction": "CA-ON", "plate": "A1"}]}', 415),
        ({**op, "Content-Type": "application/json; charset=utf-16"},
         '{"plates": [{"jurisdiction": "CA-ON", "plate": "A1"}]}'.encode("utf-16"), 415),
        ({**op, "Content-Type": "application/evil+json"},
         b'{"plates": [{"jurisdiction": "CA-ON", "plate": "A1"}]}', 415),
        (json_h, b'{"plates": []}', 422),
        (json_h, b'{"plates": null}', 422),
        (json_h, b"null", 422),
        (json_h, b'"plates"', 422),
        (json_h, b'{"plates": [{"jurisdiction": "CA-ON", "plate": 123}]}', 422),
        (json_h, b'{"plates": [{"jurisdiction": "CA-ON", "plate": "A", "x": 1}]}', 422),
        (json_h, b'{"plates": [{"jurisdiction": "CA-ON", "plate": "A"}], "purpose": "a\\nb"}',
         422),
        (json_h, b'{"plates": [{"jurisdiction": "CA-ON", "plate": "A"}], "purpose": "'
         + b"p" * 201 + b'"}', 422),
        (json_h, b'{"plates": [{"jurisdiction": "CA-ON", "plate": "A"}]}', 422),  # no purpose
        (json_h, b'{"plates": [{"jurisdiction": "CA-ON", "plate": "A"}], "purpose": "testing",'
         b' "at": "2026-11-01"}', 422),
        ({**op, "Content-Type": "text/plain"}, b'{"plates": []}', 415),
        ({**op, "Content-Type": "application/x-www-form-urlencoded"}, b"plates=1", 415),
        (op, b'{"plates": [{"jurisdiction": "CA-ON", "plate": "A"}]}', 415),  # no type
        (json_h, b'{"plates": [' + b", ".join([b'{"jurisdiction":"CA-ON","plate":"A1"}']
                                              * 200_000) + b"]}", 413),   # > 4 MiB
    ]
    async with running_api(settings) as api:
        for headers, body, expected in cases:
            r = await api.client.post("/v1/plates/lookup", content=body, headers=headers)
            assert r.status_code == expected, (body[:60], r.status_code, r.text[:300])
            assert r.headers["content-type"] == "application/problem+json"
            assert b"ABC123" not in r.content

        async def chunks():  # no Content-Length: the limit applies while streaming
            for _ in range(100):
                yield b"[" * 65536

        r = await api.client.post("/v1/plates/lookup", content=chunks(), headers=json_h)
        assert r.status_code == 413
        r = await api.client.post("/v1/owners/query", content=b"{", headers=json_h)
        assert r.status_code == 400
        r = await api.client.post("/v1/plates/query", headers={**op, "Content-Type": "text/csv"},
                                  content=b'{"jurisdiction": "CA-ON", "plate": "A"}')
        assert r.status_code == 415
        r = await api.client.post("/v1/plates/lookup", json={"plates": [item],
                                                             "purpose": "testing"}, headers=op)
        assert r.status_code == 200  # the same client still works


async def test_metrics_use_route_templates(settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "MET123")
    enf = bearer((await role_keys(pool))["enforcement"])
    async with running_api(settings) as api:
        await api.client.post("/v1/plates/query", json={**PQ, "plate": "met-123"}, headers=enf)
        await api.client.post("/v1/plates/query", json={**PQ, "plate": "NOPE99"}, headers=enf)
        await api.client.post("/v1/plates/candidates", json={**PQ, "plate": "MET123"},
                              headers=enf)
        await api.client.get("/v1/plates/CA-ON/MET123", headers=enf)
        await api.client.get("/no/such/MET123", headers=enf)
        text = (await api.client.get("/metrics")).text
    assert 'route="/v1/plates/query"' in text
    assert 'route="/v1/plates/candidates"' in text
    assert 'route="unmatched"' in text
    assert "MET" not in text and "NOPE" not in text
    assert 'platereg_lookups_total{kind="single",purpose="testing",result="not_found"}' in text


async def test_422_names_positions_never_the_clients_key_names(settings, pool) -> None:
    op = bearer((await role_keys(pool))["operator"])
    evil = ['<script>alert(1)</script>', "Jane Doe jane@example.org", "ABC123"]
    async with running_api(settings) as api:
        r = await api.client.post("/v1/plates/lookup", headers=op, json={
            "plates": [{"jurisdiction": "CA-ON", "plate": "A1", evil[0]: 1}], evil[1]: 2,
            "purpose": "testing"})
        assert r.status_code == 422
        assert sorted(r.json()["errors"], key=lambda e: e["field"]) == [
            {"field": "body", "message": "unexpected key (key number 2 of this object)"},
            {"field": "plates.0", "message": "unexpected key (key number 3 of this object)"}]
        r = await api.client.post("/v1/owners/query", headers=op,
                                  json={"owner_id": "o1", evil[2]: {evil[0]: 1},
                                        "purpose": "testing"})
        assert r.status_code == 422
        assert r.json()["errors"] == [
            {"field": "body", "message": "unexpected key (key number 2 of this object)"}]
        for text in evil:
            assert text not in r.text


async def test_429_answers_at_once_while_the_pool_is_busy_and_logs_the_key_id(
        settings, pool, monkeypatch) -> None:
    import asyncio

    import structlog

    import platereg.security.auth

    await insert_plate(pool, "CA-ON", "BUSY1")
    limited_id, limited = await create_key(pool, role="enforcement", name="lim", rate_limit=0.01)
    _, other = await create_key(pool, role="enforcement", name="other")
    monkeypatch.setattr(platereg.security.auth, "CACHE_TTL", 0.0)  # every request refreshes its key
    async with running_api(settings, rate_limit_burst=1, db_pool_min=2, db_pool_max=2) as api:
        busy = {**PQ, "plate": "BUSY1"}
        assert (await api.client.post("/v1/plates/query", json=busy,
                                      headers=bearer(limited))).status_code == 200
        db = api.app.state.pool
        held = [await db.acquire() for _ in range(2)]  # the pool is busy from now on
        try:
            waiting = asyncio.create_task(api.client.post("/v1/plates/query", json=busy,
                                                          headers=bearer(other)))
            with structlog.testing.capture_logs() as logs:
                limited_answer = await asyncio.wait_for(
                    api.client.post("/v1/plates/query", json=busy, headers=bearer(limited)), 10)
            assert limited_answer.status_code == 429
            assert not waiting.done()  # answered while another request waits for the pool
        finally:
            for conn in held:
                await db.release(conn)
        assert (await waiting).status_code == 200
    lines = [e for e in logs if e.get("event") == "request"]
    assert [(e["status"], e["key_id"]) for e in lines] == [(429, limited_id)]


async def test_options_and_405_list_every_method_of_the_path(settings, pool) -> None:
    import httpx

    from ingest.api import create_ingest_app

    op = bearer((await role_keys(pool))["operator"])
    async with running_api(settings) as api:
        r = await api.client.options("/v1/plates/query", headers=op)
        assert (r.status_code, r.headers["allow"]) == (204, "OPTIONS, POST")
        r = await api.client.patch("/v1/plates/query", headers=op)
        assert r.status_code == 405 and r.headers["allow"] == "OPTIONS, POST"
        assert r.headers["content-type"] == "application/problem+json"
        r = await api.client.delete("/v1/plates/lookup", headers=op)
        assert r.status_code == 405 and r.headers["allow"] == "OPTIONS, POST"
        r = await api.client.options("/v1/hotlist")
        assert (r.status_code, r.headers["allow"]) == (204, "GET, OPTIONS")
    transport = httpx.ASGITransport(app=create_ingest_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        r = await client.get("/v1/events")
        assert r.status_code == 405 and r.headers["allow"] == "OPTIONS, POST"
