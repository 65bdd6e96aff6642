"""Rate limits count data, not requests, and say so: one unit per plate or owner record
returned (a batch of 1,000 costs 1,000), RateLimit-* headers on every authenticated answer
(429 too, with Retry-After), per-role defaults; made-up keys cost no database query per
key; a busy key's cache refresh is one query, not a convoy."""

from __future__ import annotations

import asyncio
import secrets
import string
import time

import httpx
import orjson
import pytest
from api_helpers import bearer, insert_plate, running_api

from platereg.security import auth as auth_module
from platereg.security.auth import Authenticator, AuthError
from platereg.security.keys import create_key, revoke_key
from tests.integration.ingest_support import ingest_server, issued
from tests.integration.seam_support import wait_for

pytestmark = pytest.mark.integration

ROLES = frozenset({"enforcement", "operator"})


def _limits(response) -> tuple[int, int, int]:  # noqa: ANN001
    h = response.headers
    return int(h["ratelimit-limit"]), int(h["ratelimit-remaining"]), int(h["ratelimit-reset"])


async def test_a_request_costs_one_unit_per_plate_returned(settings, pool) -> None:
    for i in range(3):
        await insert_plate(pool, "CA-ON", f"RL{i}")
    # 0.01 unit/s: the bucket (100 units) does not visibly refill during the test.
    _, key = await create_key(pool, role="enforcement", name="slow", rate_limit=0.01)
    enf = bearer(key)

    def q(plate: str) -> dict:
        return {"jurisdiction": "CA-ON", "plate": plate, "purpose": "testing"}

    async with running_api(settings, rate_limit_burst=100) as api:
        r = await api.client.post("/v1/plates/query", json=q("RL0"), headers=enf)
        assert r.status_code == 200 and _limits(r)[:2] == (100, 99)
        r = await api.client.post("/v1/plates/query", json=q("NOPE"), headers=enf)  # 404: a unit
        assert r.status_code == 404 and _limits(r)[:2] == (100, 98)
        batch = {"plates": [{"jurisdiction": "CA-ON", "plate": f"RL{i % 5}"}
                            for i in range(50)], "purpose": "testing"}
        r = await api.client.post("/v1/plates/lookup", headers=enf, json=batch)
        assert r.status_code == 200 and _limits(r)[:2] == (100, 48)
        r = await api.client.post("/v1/plates/candidates", json=q("RL0"), headers=enf)
        assert r.status_code == 200 and len(r.json()["candidates"]) == 1
        assert _limits(r)[:2] == (100, 47)
        # 1,000 plates with 47 units left: answered, and the key is 953 units in debt.
        r = await api.client.post("/v1/plates/lookup", headers=enf, json={
            "plates": [{"jurisdiction": "CA-ON", "plate": f"RL{i % 3}"} for i in range(1000)],
            "purpose": "testing"})
        assert r.status_code == 200 and len(r.json()["results"]) == 1000
        limit, remaining, reset = _limits(r)
        assert (limit, remaining) == (100, 0) and reset >= (100 + 953) / 0.01 - 1
        r = await api.client.post("/v1/plates/query", json=q("RL0"), headers=enf)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 954 / 0.01 - 1
        assert _limits(r)[:2] == (100, 0)
        r = await api.client.post("/v1/plates/query", json=q("RL0"), headers={})
        assert r.status_code == 401 and "ratelimit-limit" not in r.headers
        # A batch is refused while the key is in debt, without being read.
        r = await api.client.post("/v1/plates/lookup", headers=enf, json=batch)
        assert r.status_code == 429 and _limits(r)[1] == 0


async def test_roles_get_their_own_default_limits_and_403_carries_the_headers(
        settings, pool) -> None:
    keys = {role: (await create_key(pool, role=role, name=role))[1]
            for role in ("enforcement", "portal", "operator")}
    async with running_api(settings, rate_limit_burst=1, rate_limit_enforcement_per_second=900,
                           rate_limit_portal_per_second=60,
                           rate_limit_operator_per_second=7) as api:
        hot = {"purpose": "alpr_hit"}
        r = await api.client.get("/v1/hotlist", params=hot, headers=bearer(keys["enforcement"]))
        assert r.status_code == 200 and _limits(r)[0] == 900
        # Portal keys may not read the hotlist (nor any plate or owner route): 403.
        r = await api.client.get("/v1/hotlist", params=hot, headers=bearer(keys["portal"]))
        assert r.status_code == 403 and _limits(r)[0] == 60
        r = await api.client.post("/v1/audit/query", json={"purpose": "audit_review"},
                                  headers=bearer(keys["operator"]))
        assert r.status_code == 200 and _limits(r)[0] == 7


class CountingPool:
    """The real pool, counting the queries made through its public query methods."""

    def __init__(self, pool) -> None:  # noqa: ANN001
        self.pool = pool
        self.queries = 0

    async def fetch(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.queries += 1
        return await self.pool.fetch(*args, **kwargs)

    async def fetchrow(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.queries += 1
        return await self.pool.fetchrow(*args, **kwargs)

    async def fetchval(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.queries += 1
        return await self.pool.fetchval(*args, **kwargs)


def _made_up_key() -> str:
    alphabet = string.ascii_lowercase + string.digits
    key_id = "".join(secrets.choice(alphabet) for _ in range(12))
    return f"prk_{key_id}_{secrets.token_urlsafe(32)[:43]}"


async def test_ten_thousand_made_up_keys_cost_a_bounded_number_of_queries(pool) -> None:
    _, real = await create_key(pool, role="enforcement", name="real")
    counting = CountingPool(pool)
    refresh, budget = 1.0, 5.0
    auth = Authenticator(counting, 100.0, 10, refresh_every=refresh,  # type: ignore[arg-type]
                         unknown_lookups_per_second=budget)
    assert (await auth.authenticate(f"Bearer {real}", ROLES)).role == "enforcement"
    start, before = time.monotonic(), counting.queries
    refused = 0
    for _ in range(10_000):
        try:
            await auth.authenticate(f"Bearer {_made_up_key()}", ROLES)
        except AuthError as exc:
            assert exc.status == 401
            refused += 1
    elapsed = time.monotonic() - start
    assert refused == 10_000
    # At most one key-list reload per `refresh` seconds and the look-up budget.
    bound = (1 + elapsed / refresh) + (max(10.0, 2 * budget) + budget * elapsed)
    assert counting.queries - before <= bound, (counting.queries - before, elapsed)
    assert not auth._inflight   # nothing left behind per key id
    # A key created after the list was loaded works as soon as the budget or a reload
    # lets it be looked up.
    _, fresh = await create_key(pool, role="operator", name="fresh")

    async def accepted() -> bool:
        try:
            return (await auth.authenticate(f"Bearer {fresh}", ROLES)).role == "operator"
        except AuthError:
            return False

    await wait_for(accepted, "the fresh key accepted", 10, every=0.05)


async def test_a_busy_key_is_refreshed_by_one_query_while_stale_is_served(
        pool, monkeypatch: pytest.MonkeyPatch) -> None:
    key_id, key = await create_key(pool, role="enforcement", name="busy")
    counting = CountingPool(pool)
    auth = Authenticator(counting, 1e6, 10**6)  # type: ignore[arg-type]
    await auth.authenticate(f"Bearer {key}", ROLES)
    monkeypatch.setattr(auth_module, "CACHE_TTL", 0.0)   # every entry is now stale
    before = counting.queries
    results = await asyncio.gather(*(auth.authenticate(f"Bearer {key}", ROLES)
                                     for _ in range(500)))
    assert all(p.key_id == key_id for p in results)
    assert counting.queries - before <= 2          # one refresh (maybe a second one)
    # The refresh still sees a revocation.
    await revoke_key(pool, key_id)

    async def refused() -> bool:
        try:
            await auth.authenticate(f"Bearer {key}", ROLES)
        except AuthError as exc:
            return exc.status == 401
        return False

    await wait_for(refused, "the revocation seen", 10, every=0.01)

    async def settled() -> bool:   # the in-flight map empties as refreshes finish
        return not auth._inflight

    await wait_for(settled, "no refresh left in flight", 10, every=0.01)


async def test_ingest_answers_carry_the_headers_too(topics, pool) -> None:
    _, key = await create_key(pool, role="ingest", name="rl ingest",
                              sources=["/registry/serviceontario/"])
    headers = {**bearer(key), "Content-Type": "application/json"}
    async with ingest_server(topics) as url, httpx.AsyncClient(base_url=url) as client:
        accepted = await client.post("/v1/events", content=orjson.dumps(issued()),
                                     headers=headers)
        refused = await client.post("/v1/events", content=b"[{", headers=headers)
        anonymous = await client.post("/v1/events", content=orjson.dumps(issued()),
                                      headers={"Content-Type": "application/json"})
    assert accepted.status_code == 202 and refused.status_code == 400
    for r in (accepted, refused):   # the default rate (ingest has no role default)
        limit, remaining, _ = _limits(r)
        assert limit == max(topics.rate_limit_burst, int(topics.rate_limit_per_second))
        assert 0 <= remaining <= limit
    assert anonymous.status_code == 401 and "ratelimit-limit" not in anonymous.headers
