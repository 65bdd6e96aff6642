"""Every route of the registry API, by the table: what audit rows one read of it writes.

:data:`ROUTES` lists each (method, path) the app serves, with a request made the way a
client makes it and the audit rows that request must leave (key, kind, plate, result,
owner), or none with the reason it reads nothing of the registry. The table is checked
against the app's own routes (the routers walked, the owner page's included): a new
route without an entry fails here, and so does an entry whose route is gone. Each request
then runs against the real PostgreSQL and its rows, flushed, are compared with the table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from api_helpers import bearer, insert_event, insert_plate, owner, role_keys, running_api
from owner_support import OWNER_KEY, form_fields, sign_in_with_link

from platereg.security.owner_links import mint_link_token

pytestmark = pytest.mark.integration

BASE = "http://127.0.0.1"
OWNER = "own-aud"
Row = tuple[str, str, str | None, str | None, str, str | None]  # key, kind, j, plate, result, owner


@dataclass
class Ctx:
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    keys: dict[str, str]
    owner_token: str = ""
    csrf: str = ""
    ids: dict[str, str] = field(default_factory=dict)

    def key(self, role: str) -> dict[str, str]:
        return bearer(self.keys[role])


Call = Callable[[Ctx], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Case:
    call: Call
    rows: Callable[[Ctx], list[Row]] = lambda c: []
    status: int = 200
    why_none: str = ""   # for a route that reads nothing of the registry: why


def none(call: Call, why: str, status: int = 200) -> Case:
    return Case(call, lambda c: [], status, why)


def _get(path: str, **kw: Any) -> Call:
    return lambda c: c.client.get(BASE + path, **kw)


async def _link_session(c: Ctx) -> httpx.Response:
    token = await mint_link_token(c.pool, OWNER, None)
    return await c.client.post(BASE + "/v1/owner-sessions/link", json={"link_token": token})


async def _me(c: Ctx, method: str, path: str, **kw: Any) -> httpx.Response:
    return await c.client.request(method, BASE + path, headers=bearer(c.owner_token), **kw)


async def _page_sign_in(c: Ctx) -> httpx.Response:
    return await sign_in_with_link(c.client, BASE, await mint_link_token(c.pool, OWNER, None))


async def _page_form(c: Ctx, path: str, **fields: Any) -> httpx.Response:
    return await c.client.post(BASE + path, data={"csrf": c.csrf, "lang": "en", **fields})


def _mine(kind: str, j: str | None = None, p: str | None = None,
          result: str = "read") -> Row:
    return ("owner", kind, j, p, result, OWNER)


# In the order they run (the owner routes after the session that unlocks them).
ROUTES: dict[tuple[str, str], Case] = {
    ("POST", "/v1/plates/query"): Case(
        lambda c: c.client.post(BASE + "/v1/plates/query", headers=c.key("enforcement"), json={
            "jurisdiction": "CA-ON", "plate": "AUD1", "purpose": "traffic_stop"}),
        lambda c: [(c.ids["enforcement"], "single", "CA-ON", "AUD1", "valid", None)]),
    ("POST", "/v1/plates/lookup"): Case(
        lambda c: c.client.post(BASE + "/v1/plates/lookup", headers=c.key("enforcement"), json={
            "purpose": "alpr_hit", "plates": [{"jurisdiction": "CA-ON", "plate": "AUD1"},
                                              {"jurisdiction": "CA-ON", "plate": "NOPE1"}]}),
        lambda c: [(c.ids["enforcement"], "batch", "CA-ON", "AUD1", "valid", None),
                   (c.ids["enforcement"], "batch", "CA-ON", "NOPE1", "not_found", None)]),
    ("POST", "/v1/plates/candidates"): Case(
        lambda c: c.client.post(BASE + "/v1/plates/candidates", headers=c.key("enforcement"),
                                json={"jurisdiction": "CA-ON", "plate": "AUDI",
                                      "purpose": "alpr_hit"}),
        lambda c: [(c.ids["enforcement"], "candidates", "CA-ON", "AUD1", "valid", None),
                   (c.ids["enforcement"], "candidates", "CA-ON", "AUDI", "not_found", None)]),
    ("POST", "/v1/plates/history"): Case(
        lambda c: c.client.post(BASE + "/v1/plates/history", headers=c.key("operator"), json={
            "jurisdiction": "CA-ON", "plate": "AUD1", "purpose": "registry_administration"}),
        lambda c: [(c.ids["operator"], "history", "CA-ON", "AUD1", "found", None)]),
    ("GET", "/v1/hotlist"): Case(
        lambda c: c.client.get(BASE + "/v1/hotlist", params={"purpose": "alpr_hit"},
                               headers=c.key("enforcement")),
        lambda c: [(c.ids["enforcement"], "hotlist", "CA-ON", "AUD2", "stolen", None)]),
    ("POST", "/v1/owners/query"): Case(
        lambda c: c.client.post(BASE + "/v1/owners/query", headers=c.key("operator"), json={
            "owner_id": OWNER, "purpose": "registry_administration"}),
        lambda c: [(c.ids["operator"], "owner", "CA-ON", "AUD1", "valid", OWNER),
                   (c.ids["operator"], "owner_notices", None, None, "empty", OWNER),
                   (c.ids["operator"], "owner_preferences", None, None, "not_found", OWNER)]),
    ("POST", "/v1/audit/query"): Case(
        lambda c: c.client.post(BASE + "/v1/audit/query", headers=c.key("operator"), json={
            "jurisdiction": "CA-ON", "plate": "NOPE2", "purpose": "audit_review"}),
        lambda c: [(c.ids["operator"], "audit", "CA-ON", "NOPE2", "all_keys", None)]),
    ("POST", "/v1/owner-sessions"): Case(
        lambda c: c.client.post(BASE + "/v1/owner-sessions", headers=c.key("portal"),
                                json={"owner_id": OWNER}),
        lambda c: [(c.ids["portal"], "owner_session", None, None, "minted", OWNER)], 201),
    ("POST", "/v1/owner-sessions/link"): Case(
        _link_session, lambda c: [("link", "owner_session", None, None, "minted", OWNER)], 201),
    ("GET", "/v1/me/plates"): Case(
        lambda c: _me(c, "GET", "/v1/me/plates"),
        lambda c: [_mine("owner_self", "CA-ON", "AUD1", "valid")]),
    ("GET", "/v1/me/notices"): Case(lambda c: _me(c, "GET", "/v1/me/notices"),
                                    lambda c: [_mine("owner_notices")]),
    ("GET", "/v1/me/preferences"): Case(lambda c: _me(c, "GET", "/v1/me/preferences"),
                                        lambda c: [_mine("owner_preferences")]),
    ("PUT", "/v1/me/preferences"): Case(
        lambda c: _me(c, "PUT", "/v1/me/preferences",
                      json={"channels": ["email"], "language": "en"}),
        lambda c: [_mine("owner_preferences_update")]),
    ("GET", "/v1/me/access-log"): Case(lambda c: _me(c, "GET", "/v1/me/access-log"),
                                       lambda c: [_mine("owner_access_log")]),
    ("POST", "/owner/sign-in"): Case(
        _page_sign_in, lambda c: [("link", "owner_session", None, None, "minted", OWNER)], 303),
    ("GET", "/owner/"): Case(
        _get("/owner/"), lambda c: [_mine("owner_self", "CA-ON", "AUD1", "valid"),
                                    _mine("owner_page")]),
    ("POST", "/owner/preferences"): none(
        lambda c: _page_form(c, "/owner/preferences", channels="email", language="fr"),
        "a redirect: the page it leads to is the read (GET /owner/)", 303),
    ("POST", "/owner/sign-out"): none(lambda c: _page_form(c, "/owner/sign-out"),
                                      "ends the session, shows nothing", 303),
    ("GET", "/owner/static/owner.css"): none(_get("/owner/static/owner.css"), "a style sheet"),
    ("GET", "/"): none(_get("/"), "the landing page: links to the documents"),
    ("GET", "/docs"): none(_get("/docs"), "the OpenAPI viewer"),
    ("GET", "/docs/static/{name}"): none(_get("/docs/static/swagger-ui.css"),
                                         "the viewer's vendored files"),
    ("GET", "/docs/events"): none(_get("/docs/events"), "the event catalogue"),
    ("GET", "/docs/asyncapi.yaml"): none(_get("/docs/asyncapi.yaml"), "the AsyncAPI document"),
    ("GET", "/openapi.json"): none(_get("/openapi.json"), "the OpenAPI document"),
    ("HEAD", "/openapi.json"): none(lambda c: c.client.head(BASE + "/openapi.json"),
                                    "the OpenAPI document's headers"),
    ("GET", "/healthz"): none(_get("/healthz"), "a probe: the process is up"),
    ("GET", "/readyz"): none(_get("/readyz"), "a probe: its dependencies answer"),
    ("GET", "/metrics"): none(_get("/metrics"), "counters, no registry data"),
}


def served_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves, included routers walked."""
    def walk(routes: list[Any]) -> Iterator[tuple[str, str]]:
        for route in routes:
            included = getattr(route, "original_router", None)
            if included is not None:
                yield from walk(included.routes)
            else:
                for method in getattr(route, "methods", None) or ():
                    yield method, route.path
    return set(walk(app.router.routes))


async def test_every_route_is_in_the_table_and_audits_each_read_as_it_says(
        settings, pool: asyncpg.Pool) -> None:
    await insert_plate(pool, "CA-ON", "AUD1", owner_data=owner(OWNER, "Audrey Audit"))
    await insert_plate(pool, "CA-ON", "AUD2", stolen=True, owner_data=owner("own-other"))
    await insert_event(pool, "CA-ON/AUD1", "aud-ev-1", "plate.issued",
                       dt.datetime.now(dt.UTC) - dt.timedelta(days=1), {})
    keys = await role_keys(pool)
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        routes = served_routes(api.app)
        assert not routes - ROUTES.keys(), f"routes with no audit entry: {routes - ROUTES.keys()}"
        assert not ROUTES.keys() - routes, f"entries of no route: {ROUTES.keys() - routes}"
        c = Ctx(api.client, pool, keys, ids={r: k.split("_")[1] for r, k in keys.items()})
        seen: dict[tuple[str, str], list[Row]] = {}
        last = 0
        for route, case in ROUTES.items():
            r = await case.call(c)
            assert r.status_code == case.status, (route, r.status_code, r.text[:300])
            if route == ("POST", "/v1/owner-sessions/link"):
                c.owner_token = r.json()["token"]
            if route == ("GET", "/owner/"):
                c.csrf = form_fields(r.text, "/owner/preferences")["csrf"]
            rows = await pool.fetch(
                "SELECT id, key_id, kind, jurisdiction, plate, result, owner_id FROM audit_log"
                " WHERE id > $1 ORDER BY id", last)
            last = max([last, *(row["id"] for row in rows)])
            seen[route] = sorted(tuple(row)[1:] for row in rows)
            assert case.rows(c) or case.why_none, route
        expected = {route: sorted(case.rows(c)) for route, case in ROUTES.items()}
    wrong = {route: (seen[route], expected[route]) for route in ROUTES
             if seen[route] != expected[route]}
    assert not wrong, "\n".join(f"{m} {p}: wrote {got}, must write {want}"
                                for (m, p), (got, want) in wrong.items())
