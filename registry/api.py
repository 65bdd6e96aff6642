"""The registry HTTP API (contract section 5): thin routes over lookups, domain and audit.

* Views come from ``registry.domain`` (one place for the status rules),
  derived at request time in ``PLATEREG_TIMEZONE``.
* Enforcement keys get the enforcement view, read with ``NULL AS owner``;
  ``portal`` and ``operator`` keys get ``owner`` as well.
* Every plate answered is audited through :class:`registry.audit.AuditWriter`
  (buffered, written in batches in the background) and counted in
  ``platereg_lookups_total``: one audit row and one count per plate:

  - single: the plate (result: its status, or ``not_found``);
  - batch: every item, duplicates included, in request order;
  - candidates: every candidate returned (its status), plus one ``not_found``
    row for the queried plate when it does not exist itself;
  - hotlist: every entry returned (the status of its view);
  - events and owners' plates (not in the metric's kinds): audit rows of
    kind ``events`` / ``owner``.

* Bodies are parsed here, not by FastAPI, with the strict reader shared with
  the ingest API (``platereg.http.read_json``): a content type other than
  ``application/json`` (charset UTF-8 only) is 415, malformed JSON (repeated
  keys, deep nesting) is 400 and schema violations are 422, all as
  problem+json without echoing the input.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import gc
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.routing import request_response

from platereg.auth import Authenticator, Principal, require
from platereg.clock import Clock
from platereg.db import create_pool, ping
from platereg.http import (
    ProblemError,
    add_probes,
    create_app,
    read_json,
    validation_errors,
)
from platereg.kafka import broker_reachable
from platereg.logging import configure_logging
from platereg.metrics import LOOKUPS
from platereg.settings import Settings, load_settings
from registry import lookups
from registry.api_models import (
    AuditPage,
    CandidatesResponse,
    OwnerNotices,
    OwnerPlates,
    OwnerPreferences,
    PlateEvents,
    PreferencesUpdate,
    Problem,
)
from registry.audit import AuditUnavailable, AuditWriter, purge_periodically
from registry.candidates import variants
from registry.domain import enforcement_view, full_view, state_from_row, today_in
from registry.hotlist import (
    InvalidCursor,
    change_entry,
    current_entry,
    decode_cursor,
    delta_cursor,
    full_cursor,
)
from schemas._types import NO_CONTROL_PATTERN, SAFE_ID_PATTERN, Rfc3339Datetime
from schemas.plates import InvalidPlate, normalize_jurisdiction, normalize_plate
from schemas.views import EnforcementView, FullView, Hotlist, LookupRequest, LookupResponse

ENFORCEMENT, PORTAL, OPERATOR = "enforcement", "portal", "operator"
WITH_OWNER = frozenset({PORTAL, OPERATOR})
MAX_EVENTS = 10_000
MAX_OWNER_PLATES = 1000

_FOUND = {kind: LOOKUPS.labels(kind, "found") for kind in ("single", "batch", "candidates",
                                                           "hotlist")}
_NOT_FOUND = {kind: LOOKUPS.labels(kind, "not_found") for kind in ("single", "batch",
                                                                   "candidates")}

# --------------------------------------------------------------------------- OpenAPI helpers

_PROBLEM_SCHEMA = Problem.model_json_schema()
_EXTRA_SCHEMAS: dict[str, Any] = {}


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        400: "Malformed JSON (repeated key, nesting over 64 levels), cursor or parameter",
        408: "The body did not arrive within PLATEREG_HTTP_BODY_TIMEOUT_SECONDS",
        401: "Missing, invalid or revoked API key",
        403: "The key's role may not use this route",
        404: "No such (issued) plate",
        413: "Body larger than PLATEREG_MAX_BODY_BYTES",
        415: "Body is not application/json (charset UTF-8)",
        422: "Invalid input (plate, jurisdiction, field); lists each error without echoing it",
        429: "Rate limit exceeded; see Retry-After",
        503: "The audit log cannot keep up, or too many requests are in progress; "
             "see Retry-After",
    }
    return {s: _problem_response(texts[s]) for s in (401, 403, 429, 503, *statuses)}


_PLATE_OF = {"jurisdiction": "$response.body#/jurisdiction", "plate": "$response.body#/plate"}
# OpenAPI links (which answer feeds which request): pagination and the plate routes.
_LINKS: list[tuple[str, str, str, str, dict[str, str]]] = [
    ("GET /v1/hotlist", "NextPage", "GET /v1/hotlist", "next page or changes",
     {"since": "$response.body#/next"}),
    ("GET /v1/audit", "NextPage", "GET /v1/audit", "next page (while `next` is not null)",
     {"cursor": "$response.body#/next"}),
    ("POST /v1/plates/lookup", "FirstResult", "GET /v1/plates/{jurisdiction}/{plate}",
     "the first result's plate", {"jurisdiction": "$response.body#/results/0/jurisdiction",
                                  "plate": "$response.body#/results/0/plate"}),
    ("GET /v1/plates/{jurisdiction}/{plate}", "Candidates",
     "GET /v1/plates/{jurisdiction}/{plate}/candidates", "confusable plates", _PLATE_OF),
    ("GET /v1/plates/{jurisdiction}/{plate}", "Events",
     "GET /v1/plates/{jurisdiction}/{plate}/events", "the plate's events", _PLATE_OF),
    ("GET /v1/plates/{jurisdiction}/{plate}", "OwnerPlates", "GET /v1/owners/{owner_id}/plates",
     "the owner's plates (portal and operator keys see the owner)",
     {"owner_id": "$response.body#/owner/owner_id"}),
    ("GET /v1/owners/{owner_id}/plates", "Notices", "GET /v1/owners/{owner_id}/notices",
     "the owner's notices", {"owner_id": "$response.body#/owner_id"}),
    ("GET /v1/owners/{owner_id}/plates", "Preferences", "GET /v1/owners/{owner_id}/preferences",
     "the owner's preferences", {"owner_id": "$response.body#/owner_id"}),
]


def _add_links(schema: dict[str, Any]) -> None:
    def operation(label: str) -> dict[str, Any]:
        method, path = label.split(" ")
        return schema["paths"][path][method.lower()]

    for source, name, target, description, parameters in _LINKS:
        response = operation(source)["responses"]["200"]
        response.setdefault("links", {})[name] = {
            "operationId": operation(target)["operationId"], "description": description,
            "parameters": parameters}


def _ok(model: Any, example: Any, description: str = "OK") -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": description,
                  "content": {"application/json": {"example": example}}}}


def _raw_plate_patterns(schema: dict[str, Any]) -> None:
    """Request bodies take plates and jurisdictions raw (any case, separators): say which."""
    props = schema.get("properties", {})
    for name, extra in (("jurisdiction", _RAW_JURISDICTION), ("plate", _RAW_PLATE)):
        if props.get(name, {}).get("type") == "string":
            props[name] = {**props[name], **extra}


def _body(model: type[BaseModel], example: Any) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        _raw_plate_patterns(definition)
        _EXTRA_SCHEMAS.setdefault(name, definition)
    _raw_plate_patterns(schema)
    _EXTRA_SCHEMAS[model.__name__] = schema
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}, "example": example}}}}


_VIEW_EXAMPLE = {
    "jurisdiction": "CA-ON", "plate": "ABC123", "status": "suspended",
    "flags": ["suspended", "expired"], "expires_on": "2026-10-31", "plate_class": "passenger",
    "suspension_reasons": ["insurance_lapsed"],
    "vehicle": {"make": "Honda", "model": "Civic", "year": 2019, "colour": "blue"},
    "smart_plate": True, "as_of": "2026-11-24T15:04:05Z",
}
_OWNER_EXAMPLE = {"owner_id": "own-123", "name": "Jane Doe", "email": "jane@example.org",
                  "phone": None, "language": "en"}
_FULL_EXAMPLE = {**_VIEW_EXAMPLE, "owner": _OWNER_EXAMPLE}

# What ``normalize_jurisdiction`` / ``normalize_plate`` accept, for the OpenAPI document
# (the functions stay the one check, with their messages; tests/unit/test_api_openapi.py
# holds the two to the same set).
RAW_JURISDICTION_PATTERN = r"^ *[A-Za-z]{2}-[A-Za-z0-9]{1,3} *$"
RAW_PLATE_PATTERN = r"^[ .-]*(?:[A-Za-z0-9][ .-]*){1,10}$"
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
_RAW_JURISDICTION = {"pattern": RAW_JURISDICTION_PATTERN, "maxLength": 64}
_RAW_PLATE = {"pattern": RAW_PLATE_PATTERN, "maxLength": 64}

JurisdictionPath = Annotated[str, Path(
    json_schema_extra=_RAW_JURISDICTION,
    description="ISO 3166-2 code, any case (ca-on)", examples=["CA-ON"],
    openapi_examples={"ontario": {"value": "CA-ON"}})]
PlatePath = Annotated[str, Path(
    json_schema_extra=_RAW_PLATE,
    description="Plate; case, spaces, '-' and '.' are ignored (abc-123 == ABC123)",
    examples=["ABC123"], openapi_examples={"plate": {"value": "ABC123"}})]
OwnerId = Annotated[str, Path(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN,
                              description="Owner identifier", examples=["own-123"])]
# Role sets of the contract's route table.
LookupKey = Annotated[Principal, Depends(require(ENFORCEMENT, PORTAL, OPERATOR))]
EnforcementKey = Annotated[Principal, Depends(require(ENFORCEMENT, OPERATOR))]
OperatorKey = Annotated[Principal, Depends(require(OPERATOR))]
OwnerKey = Annotated[Principal, Depends(require(PORTAL, OPERATOR))]
PurposeHeader = Annotated[str | None, Header(
    alias="X-Purpose", max_length=200, pattern=NO_CONTROL_PATTERN,
    description="Why the lookup is made; recorded in the audit log")]


# --------------------------------------------------------------------------- helpers


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def _normalize(jurisdiction: str, plate: str, where: str = "path") -> tuple[str, str]:
    errors = []
    j = p = ""
    try:
        j = normalize_jurisdiction(jurisdiction)
    except InvalidPlate as exc:
        errors.append({"field": f"{where}.jurisdiction", "message": str(exc)})
    try:
        p = normalize_plate(plate)
    except InvalidPlate as exc:
        errors.append({"field": f"{where}.plate", "message": str(exc)})
    if errors:
        raise ProblemError(422, "Unprocessable Content", "invalid plate or jurisdiction",
                           errors=errors)
    return j, p


async def _json_body(request: Request, model: type[BaseModel]) -> Any:
    _, data = await read_json(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProblemError(422, "Unprocessable Content", "the request body is not valid",
                           errors=validation_errors(exc.errors(), model, data)) from None


_NO_CONTROL = re.compile(NO_CONTROL_PATTERN)


def _purpose_header(request: Request) -> str | None:
    """X-Purpose, checked like ``PurposeHeader`` (at most 200 characters, no control ones)."""
    value = request.headers.get("x-purpose")
    if value is not None and (len(value) > 200 or not _NO_CONTROL.match(value)):
        raise ProblemError(422, "Unprocessable Content", "the request is not valid",
                           errors=[{"field": "header.X-Purpose",
                                    "message": "at most 200 characters, no control characters"}])
    return value


def _serve_with(app: FastAPI, path: str, method: str,
                handler: Callable[[Request], Awaitable[Response]]) -> None:
    """Serve a documented route with a plain Starlette handler (same path, errors, metrics)."""
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in route.methods:
            route.app = request_response(handler)
            return
    raise LookupError(f"no route {method} {path}")


async def _keep_session(conn: Any) -> None:
    """Pool ``reset`` hook: skip asyncpg's per-release reset round trip.

    This API leaves no session state behind (no LISTEN, no SET, no open
    cursors; the purge releases its advisory lock itself), so the default
    ``RESET ALL; CLOSE ALL; UNLISTEN *; pg_advisory_unlock_all()`` on every
    release would only add a round trip to each lookup.
    """


class _Ctx:
    """Per-process state, created in the lifespan."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.tz = settings.tz
        self.clock = clock
        self.pool: Any = None
        self.audit: AuditWriter | None = None

    def now(self) -> tuple[dt.datetime, dt.date]:
        now = self.clock.now()
        return now, today_in(self.tz, now)

    def audit_rows(self, rows: list[tuple[Any, ...]]) -> None:
        assert self.audit is not None
        try:
            self.audit.record_many(rows)
        except AuditUnavailable:
            raise ProblemError(503, "Service Unavailable", "the audit log cannot keep up",
                               headers={"Retry-After": "5"}) from None


def _view(row: Any, with_owner: bool, today: dt.date, now: dt.datetime) -> dict[str, Any]:
    state = state_from_row(row)
    if with_owner:
        return full_view(state, today=today, as_of=now)
    return enforcement_view(state, today=today, as_of=now)


def _decode_id_cursor(text: str | None) -> int:
    if text is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raw = ""
    kind, _, value = raw.partition(":")
    if kind != "a" or not value.isdigit() or len(value) > 18:
        raise ProblemError(400, "Bad Request", "malformed cursor")
    return int(value)


def _encode_id_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"a:{last_id}".encode()).decode().rstrip("=")


# --------------------------------------------------------------------------- app


def create_registry_app(settings: Settings | None = None, *, purge_every: float | None = 3600.0,
                        clock: Clock | None = None) -> FastAPI:
    """The registry API; ``purge_every=None`` disables the in-process audit purge schedule
    (it also stays off when the API's role may not delete audit rows); ``clock`` (default:
    the settings' clock) gives "now" and the registry's "today"."""
    settings = settings or load_settings()
    ctx = _Ctx(settings, clock or Clock.from_settings(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.pool = await create_pool(settings.dsn(), min_size=settings.db_pool_min,
                                     max_size=settings.db_pool_max, reset=_keep_session)
        app.state.pool = ctx.pool
        app.state.authenticator = Authenticator(ctx.pool, settings.rate_limit_per_second,
                                                settings.rate_limit_burst)
        ctx.audit = app.state.audit = AuditWriter(ctx.pool,
                                                   interval=settings.audit_flush_seconds)
        ctx.audit.start()
        # Long-lived objects (modules, routes, pool) leave the collector's working set and
        # young collections run less often: fewer, shorter pauses on the lookup path.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        purge_task = None
        # With least-privilege roles the purge is `platereg audit purge --every` instead.
        if purge_every and await ctx.pool.fetchval(
                "SELECT has_table_privilege('audit_log', 'DELETE')"):
            purge_task = asyncio.create_task(
                purge_periodically(ctx.pool, settings.audit_retention_days, every=purge_every))
        try:
            yield
        finally:
            if purge_task is not None:
                purge_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purge_task
            await ctx.audit.stop()
            await ctx.pool.close()

    app = create_app(
        title="Plate Registry API",
        description=(
            "Audited plate lookups for enforcement, owners' views and the hotlist "
            "(contract section 5). Every route except the probes needs "
            "`Authorization: Bearer <api key>`. Errors are `application/problem+json`."),
        settings=settings, lifespan=lifespan, service="registry-api")
    app.state.ctx = ctx
    add_probes(app, {"postgres": lambda: ping(ctx.pool),
                     "kafka": lambda: broker_reachable(settings)})
    _routes(app, ctx)

    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in _EXTRA_SCHEMAS.items():
                components.setdefault(name, definition)
            _add_links(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _routes(app: FastAPI, ctx: _Ctx) -> None:  # noqa: C901 - one function per route below
    @app.get("/v1/plates/{jurisdiction}/{plate}", tags=["plates"], response_model=None,
             summary="A plate's view (enforcement; portal and operator add the owner)",
             responses={**_ok(FullView | EnforcementView, _VIEW_EXAMPLE), **_errors(404, 422)})
    async def get_plate(jurisdiction: JurisdictionPath, plate: PlatePath,
                        principal: LookupKey,
                        x_purpose: PurposeHeader = None) -> Response:  # pragma: no cover
        """OpenAPI declaration only: served by ``single_lookup`` below (the hot path)."""
        raise NotImplementedError

    lookup_roles = frozenset({ENFORCEMENT, PORTAL, OPERATOR})

    async def single_lookup(request: Request) -> Response:
        # The hot path skips FastAPI's parameter machinery; it checks the same things in
        # the same order (key and role, then X-Purpose, then the path) with the same errors.
        principal = await request.app.state.authenticator.authenticate(
            request.headers.get("authorization"), lookup_roles)
        request.state.key_id = principal.key_id
        purpose = _purpose_header(request)
        params = request.path_params
        j, p = _normalize(params["jurisdiction"], params["plate"])
        with_owner = principal.role in WITH_OWNER
        row = await lookups.plate(ctx.pool, f"{j}/{p}", with_owner)
        now, today = ctx.now()
        if row is None:
            ctx.audit_rows([(now, principal.key_id, "single", j, p, purpose, "not_found")])
            _NOT_FOUND["single"].inc()
            raise ProblemError(404, "Not Found", "no issued plate with this key")
        view = _view(row, with_owner, today, now)
        ctx.audit_rows([(now, principal.key_id, "single", j, p, purpose, view["status"])])
        _FOUND["single"].inc()
        return _json(view)

    _serve_with(app, "/v1/plates/{jurisdiction}/{plate}", "GET", single_lookup)

    @app.post("/v1/plates/lookup", tags=["plates"], response_model=None,
              summary="Up to 1000 plates at once, results in request order",
              description="Unknown plates come back as `{\"jurisdiction\", \"plate\", "
                          "\"status\": \"unknown\"}`. An invalid plate anywhere makes the whole "
                          "request 422, listing the index of each bad item "
                          "(`plates.<index>.plate`). `purpose` in the body wins over X-Purpose.",
              responses={**_ok(LookupResponse, {"results": [
                  _VIEW_EXAMPLE, {"jurisdiction": "CA-QC", "plate": "XYZ987",
                                  "status": "unknown"}]}),
                         **_errors(400, 408, 413, 415, 422)},
              openapi_extra=_body(LookupRequest, {
                  "plates": [{"jurisdiction": "CA-ON", "plate": "ABC123"},
                             {"jurisdiction": "ca-qc", "plate": "xyz-987"}],
                  "purpose": "traffic stop"}))
    async def lookup_batch(request: Request,
                           principal: EnforcementKey,
                           x_purpose: PurposeHeader = None) -> Response:
        body: LookupRequest = await _json_body(request, LookupRequest)
        purpose = body.purpose if body.purpose is not None else x_purpose
        with_owner = principal.role in WITH_OWNER
        keys = [f"{ref.jurisdiction}/{ref.plate}" for ref in body.plates]
        rows = await lookups.plates(ctx.pool, set(keys), with_owner)
        now, today = ctx.now()
        results: list[dict[str, Any]] = []
        audit: list[tuple[Any, ...]] = []
        found = 0
        key_id = principal.key_id
        for ref, key in zip(body.plates, keys, strict=True):
            row = rows.get(key)
            if row is None:
                results.append({"jurisdiction": ref.jurisdiction, "plate": ref.plate,
                                "status": "unknown"})
                audit.append((now, key_id, "batch", ref.jurisdiction, ref.plate, purpose,
                              "not_found"))
            else:
                view = _view(row, with_owner, today, now)
                results.append(view)
                audit.append((now, key_id, "batch", ref.jurisdiction, ref.plate, purpose,
                              view["status"]))
                found += 1
        ctx.audit_rows(audit)
        _FOUND["batch"].inc(found)
        _NOT_FOUND["batch"].inc(len(keys) - found)
        return _json({"results": results})

    @app.get("/v1/plates/{jurisdiction}/{plate}/candidates", tags=["plates"],
             response_model=None,
             summary="Existing plates that differ only by ALPR-confusable characters",
             description="Confusable groups: O/0/Q/D, I/1/L, B/8, S/5, Z/2, G/6. Variants are "
                         "generated nearest first (fewest substitutions) and cut at "
                         "1024 (`truncated`); all are looked up in one statement.",
             responses={**_ok(CandidatesResponse, {
                 "jurisdiction": "CA-ON", "plate": "ABC123", "candidates": [
                     {**_VIEW_EXAMPLE, "plate": "A8C123"}], "variants_checked": 24,
                 "truncated": False}), **_errors(422)})
    async def get_candidates(jurisdiction: JurisdictionPath, plate: PlatePath,
                             principal: EnforcementKey,
                             x_purpose: PurposeHeader = None) -> Response:
        j, p = _normalize(jurisdiction, plate)
        with_owner = principal.role in WITH_OWNER
        variant_set = variants(p)
        rows = await lookups.plates(ctx.pool, [f"{j}/{v}" for v in variant_set.plates],
                                    with_owner)
        now, today = ctx.now()
        candidates = []
        audit: list[tuple[Any, ...]] = []
        for v in variant_set.plates:  # nearest first
            row = rows.get(f"{j}/{v}")
            if row is not None:
                view = _view(row, with_owner, today, now)
                candidates.append(view)
                audit.append((now, principal.key_id, "candidates", j, v, x_purpose,
                              view["status"]))
        if f"{j}/{p}" not in rows:
            audit.append((now, principal.key_id, "candidates", j, p, x_purpose, "not_found"))
            _NOT_FOUND["candidates"].inc()
        ctx.audit_rows(audit)
        _FOUND["candidates"].inc(len(candidates))
        return _json({"jurisdiction": j, "plate": p, "candidates": candidates,
                      "variants_checked": len(variant_set.plates),
                      "truncated": variant_set.truncated})

    @app.get("/v1/plates/{jurisdiction}/{plate}/events", tags=["plates"], response_model=None,
             summary="The plate's accepted events in fold order (time, then id)",
             responses={**_ok(PlateEvents, {"jurisdiction": "CA-ON", "plate": "ABC123",
                                            "events": [{
                                                "id": "2b7c1d5e", "type": "plate.renewed",
                                                "source": "/serviceontario/office/0042",
                                                "time": "2026-11-24T15:04:05Z",
                                                "data": {"expires_on": "2027-11-30"},
                                                "received_at": "2026-11-24T15:04:06Z"}],
                                            "truncated": False}),
                        **_errors(404, 422)})
    async def get_events(jurisdiction: JurisdictionPath, plate: PlatePath,
                         principal: OperatorKey,
                         limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = MAX_EVENTS,
                         x_purpose: PurposeHeader = None) -> Response:
        j, p = _normalize(jurisdiction, plate)
        key = f"{j}/{p}"
        rows = await lookups.events(ctx.pool, key, limit + 1)
        now, today = ctx.now()
        if not rows:
            ctx.audit_rows([(now, principal.key_id, "events", j, p, x_purpose, "not_found")])
            raise ProblemError(404, "Not Found", "no events for this plate")
        current = await lookups.plate(ctx.pool, key, False)
        result = "not_found" if current is None else _view(current, False, today,
                                                           now)["status"]
        ctx.audit_rows([(now, principal.key_id, "events", j, p, x_purpose, result)])
        events = [{"id": r["event_id"], "type": r["type"], "source": r["source"],
                   "time": r["event_time"], "data": r["data"], "received_at": r["received_at"]}
                  for r in rows[:limit]]
        return _json({"jurisdiction": j, "plate": p, "events": events,
                      "truncated": len(rows) > limit})

    @app.get("/v1/hotlist", tags=["hotlist"], response_model=None,
             summary="Flagged plates: the full list, then changes since a cursor",
             description=(
                 "Without `since`: the plates whose status is not `valid` now, `limit` per "
                 "page in plate-key order; keep passing `next` as `since`. After the last "
                 "page `next` switches to changes: every status change after the snapshot "
                 "for a plate entering, leaving (`removed: true`) or changing inside a "
                 "flagged status, oldest first. Apply entries in order (upsert, or delete "
                 "when removed). The cursor is opaque."),
             responses={**_ok(Hotlist, {"entries": [{**_VIEW_EXAMPLE, "removed": False}],
                                        "next": "ZDo0Mg"}), **_errors(400, 422)})
    async def get_hotlist(principal: EnforcementKey,
                          since: Annotated[str | None, Query(
                              max_length=200, pattern=CURSOR_PATTERN,
                              description="Opaque cursor (`next`)")] = None,
                          limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
                          x_purpose: PurposeHeader = None) -> Response:
        try:
            cursor = decode_cursor(since) if since is not None else None
        except InvalidCursor:
            raise ProblemError(400, "Bad Request", "malformed cursor") from None
        entries: list[dict[str, Any]] = []
        if cursor is None or cursor.full:
            snapshot = (cursor.seq if cursor is not None
                        else await lookups.max_status_seq(ctx.pool))
            now, today = ctx.now()
            rows = await lookups.flagged_plates(ctx.pool, cursor.after_key if cursor else None,
                                                today, limit)
            entries = [current_entry(_view(r, False, today, now)) for r in rows]
            nxt = (full_cursor(snapshot, rows[-1]["plate_key"]) if len(rows) == limit
                   else delta_cursor(snapshot))
        else:
            rows = await lookups.hotlist_changes(ctx.pool, cursor.seq, limit)
            now, _ = ctx.now()
            for r in rows:
                entry = change_entry(r["view"], r["flagged"], r["was_flagged"])
                if entry is not None:
                    entries.append(entry)
            nxt = delta_cursor(rows[-1]["seq"] if rows else cursor.seq)
        ctx.audit_rows([(now, principal.key_id, "hotlist", e["jurisdiction"], e["plate"],
                         x_purpose, e["status"]) for e in entries])
        _FOUND["hotlist"].inc(len(entries))
        return _json({"entries": entries, "next": nxt.encode()})

    @app.get("/v1/owners/{owner_id}/plates", tags=["owners"], response_model=None,
             summary="The owner's plates, with owner data",
             responses={**_ok(OwnerPlates, {"owner_id": "own-123", "plates": [_FULL_EXAMPLE]}),
                        **_errors(422)})
    async def get_owner_plates(owner_id: OwnerId,
                               principal: OwnerKey,
                               x_purpose: PurposeHeader = None) -> Response:
        rows = await lookups.owner_plates(ctx.pool, owner_id, MAX_OWNER_PLATES)
        now, today = ctx.now()
        views = [_view(r, True, today, now) for r in rows]
        ctx.audit_rows([(now, principal.key_id, "owner", v["jurisdiction"], v["plate"],
                         x_purpose, v["status"]) for v in views])
        return _json({"owner_id": owner_id, "plates": views})

    @app.get("/v1/owners/{owner_id}/notices", tags=["owners"], response_model=None,
             summary="The owner's notices (newest first) with their delivery attempts",
             responses={**_ok(OwnerNotices, {"owner_id": "own-123", "notices": [{
                 "notice_id": "0b3c7a4e-8f7e-4d8e-a3b5-3f3b1f0d9a11",
                 "kind": "renewal_reminder", "jurisdiction": "CA-ON", "plate": "ABC123",
                 "owner_id": "own-123", "language": "en", "channels": ["email"],
                 "created_at": "2026-10-01T13:00:00Z",
                 "context": {"expires_on": "2026-11-30", "days_before": 60},
                 "deliveries": [{"channel": "email", "attempt": 1, "outcome": "sent",
                                 "status_code": None, "error": None,
                                 "at": "2026-10-01T13:00:02Z"}]}]}),
                        **_errors(422)})
    async def get_owner_notices(owner_id: OwnerId,
                                principal: OwnerKey,
                                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Response:
        items = await lookups.owner_notices(ctx.pool, owner_id, limit)
        notices = []
        for item in items:
            n = item["notice"]
            jurisdiction, _, plate = n["plate_key"].partition("/")
            notices.append({
                "notice_id": str(n["notice_id"]), "kind": n["kind"],
                "jurisdiction": jurisdiction, "plate": plate, "owner_id": n["owner_id"],
                "language": n["language"], "channels": list(n["channels"]),
                "created_at": n["created_at"], "context": n["context"] or {},
                "deliveries": [{"channel": d["channel"], "attempt": d["attempt"],
                                "outcome": d["outcome"], "status_code": d["status_code"],
                                "error": d["error"], "at": d["at"]}
                               for d in item["deliveries"]],
            })
        return _json({"owner_id": owner_id, "notices": notices})

    def _preferences(owner_id: str, row: Any) -> dict[str, Any]:
        if row is None:
            return {"owner_id": owner_id, "channels": None, "language": None,
                    "updated_at": None}
        return {"owner_id": owner_id, "channels": list(row["channels"]),
                "language": row["language"], "updated_at": row["updated_at"]}

    _PREFS_EXAMPLE = {"owner_id": "own-123", "channels": ["email", "plate_display"],
                      "language": "fr", "updated_at": "2026-11-24T15:04:05Z"}

    @app.get("/v1/owners/{owner_id}/preferences", tags=["owners"], response_model=None,
             summary="The owner's notice channels and language (null: defaults)",
             responses={**_ok(OwnerPreferences, _PREFS_EXAMPLE), **_errors(422)})
    async def get_preferences(owner_id: OwnerId,
                              principal: OwnerKey
                              ) -> Response:
        return _json(_preferences(owner_id, await lookups.preferences(ctx.pool, owner_id)))

    @app.put("/v1/owners/{owner_id}/preferences", tags=["owners"], response_model=None,
             summary="Set the owner's notice channels and language",
             responses={**_ok(OwnerPreferences, _PREFS_EXAMPLE),
                        **_errors(400, 408, 413, 415, 422)},
             openapi_extra=_body(PreferencesUpdate, {"channels": ["email", "plate_display"],
                                                     "language": "fr"}))
    async def put_preferences(owner_id: OwnerId, request: Request,
                              principal: OwnerKey
                              ) -> Response:
        body: PreferencesUpdate = await _json_body(request, PreferencesUpdate)
        row = await lookups.put_preferences(
            ctx.pool, owner_id, [c.value for c in body.channels],
            body.language.value if body.language else None)
        return _json(_preferences(owner_id, row))

    @app.get("/v1/audit", tags=["audit"], response_model=None,
             summary="Who looked up what (oldest first, paged)",
             description="Filters combine with AND. `plate` needs `jurisdiction`. Rows "
                         "appear within about a second of the lookup (written in batches).",
             responses={**_ok(AuditPage, {"entries": [{
                 "id": 1, "at": "2026-11-24T15:04:05Z", "key_id": "k2m9x0a1b2c3",
                 "kind": "single", "jurisdiction": "CA-ON", "plate": "ABC123",
                 "purpose": "traffic stop", "result": "valid"}], "next": None}),
                        **_errors(400, 422)})
    async def get_audit(principal: OperatorKey,
                        jurisdiction: Annotated[str | None, Query(
                            max_length=64, json_schema_extra=_RAW_JURISDICTION)] = None,
                        plate: Annotated[str | None, Query(
                            max_length=64, json_schema_extra=_RAW_PLATE)] = None,
                        key_id: Annotated[str | None, Query(
                            max_length=64, pattern=r"^[a-z0-9]+$")] = None,
                        since: Annotated[Rfc3339Datetime | None, Query(
                            description="RFC 3339 with offset")] = None,
                        cursor: Annotated[str | None, Query(
                            max_length=64, pattern=CURSOR_PATTERN,
                            description="Opaque cursor (`next`)")] = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
        j = p = None
        errors = []
        if jurisdiction is not None:
            try:
                j = normalize_jurisdiction(jurisdiction)
            except InvalidPlate as exc:
                errors.append({"field": "query.jurisdiction", "message": str(exc)})
        if plate is not None:
            try:
                p = normalize_plate(plate)
            except InvalidPlate as exc:
                errors.append({"field": "query.plate", "message": str(exc)})
            if jurisdiction is None:
                errors.append({"field": "query.plate", "message": "plate needs jurisdiction"})
        if errors:
            raise ProblemError(422, "Unprocessable Content", "invalid filter", errors=errors)
        rows = await lookups.audit_entries(ctx.pool, jurisdiction=j, plate=p, key_id=key_id,
                                           since=since, after_id=_decode_id_cursor(cursor),
                                           limit=limit)
        entries = [dict(r) for r in rows]
        nxt = _encode_id_cursor(rows[-1]["id"]) if len(rows) == limit else None
        return _json({"entries": entries, "next": nxt})


def app_from_env() -> FastAPI:
    """uvicorn factory (``--factory``): settings and logging from PLATEREG_* variables."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_registry_app(settings)
