"""What every registry API router shares: the per-process context, the one audit-row
builder, request parsing (strict JSON bodies, plate normalization) and OpenAPI helpers.

Routers (``registry.api.routes.plates``, ``hotlist``, ``owners``, ``audit``) reach the
context through ``request.app.state.ctx`` (:func:`ctx_of`), so their handlers are
plain module-level functions.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from platereg.clock import Clock
from platereg.http import ProblemError, read_json, validation_errors
from platereg.metrics import LOOKUPS
from platereg.plate_rows import state_from_row
from platereg.replicas import ReadPools
from platereg.security.auth import Principal, require
from platereg.settings import Settings
from registry.api.audit import ROW_COLUMNS, AuditUnavailable, AuditWriter, stamped
from registry.api.models import Problem
from registry.api.sealing import Sealer
from registry.domain import VIEW_PARTS, enforcement_view, full_view, owner_view_from, view_from
from schemas.fold import PlateState, today_in
from schemas.plates import InvalidPlate, normalize_jurisdiction, normalize_plate

T = TypeVar("T")

ENFORCEMENT, PORTAL, OPERATOR = "enforcement", "portal", "operator"
WITH_OWNER = frozenset({PORTAL, OPERATOR})

# Role sets of the contract's route table.
LookupKey = Annotated[Principal, Depends(require(ENFORCEMENT, PORTAL, OPERATOR))]
EnforcementKey = Annotated[Principal, Depends(require(ENFORCEMENT, OPERATOR))]
OperatorKey = Annotated[Principal, Depends(require(OPERATOR))]
OwnerKey = Annotated[Principal, Depends(require(PORTAL, OPERATOR))]


# --------------------------------------------------------------------------- audit rows


@dataclass(frozen=True, slots=True)
class Read:
    """One audit row: who read (key), what (kind, plate or owner), why, as of when, and the
    answer. Routes make them through :meth:`Reading.read`, never by position."""

    at: dt.datetime
    key_id: str
    kind: str
    jurisdiction: str | None
    plate: str | None
    purpose: str | None
    result: str
    case_ref: str | None = None
    as_at: dt.datetime | None = None
    owner_id: str | None = None

    def row(self) -> tuple[Any, ...]:
        """The values in ``registry.api.audit.ROW_COLUMNS`` order."""
        return tuple(getattr(self, column) for column in ROW_COLUMNS)


@dataclass(frozen=True, slots=True)
class Reading:
    """The audited context of one request: when, which key, why (purpose, case) and ``at``."""

    now: dt.datetime
    key_id: str
    purpose: str | None
    case_ref: str | None = None
    as_at: dt.datetime | None = None

    def read(self, kind: str, jurisdiction: str | None, plate: str | None, result: str,
             owner_id: str | None = None) -> Read:
        return Read(at=self.now, key_id=self.key_id, kind=kind, jurisdiction=jurisdiction,
                    plate=plate, purpose=self.purpose, result=result, case_ref=self.case_ref,
                    as_at=self.as_at, owner_id=owner_id)

    def rows(self, kind: str, answers: Iterable[tuple[str, str, str]]) -> list[tuple[Any, ...]]:
        """The audit rows (``Read.row`` values) of ``(jurisdiction, plate, result)`` answers,
        in order, without a :class:`Read` per plate (a batch has 1,000)."""
        at, key_id, purpose, case_ref, as_at = (self.now, self.key_id, self.purpose,
                                                self.case_ref, self.as_at)
        return [(at, key_id, kind, j, p, purpose, result, None, case_ref, as_at)
                for j, p, result in answers]


#: The order :meth:`Reading.rows` builds rows in, without a :class:`Read` per row.
_ROW_ORDER = ("at", "key_id", "kind", "jurisdiction", "plate", "purpose", "result",
              "owner_id", "case_ref", "as_at")
if ROW_COLUMNS != _ROW_ORDER:  # registry.api.audit changed its columns: update Reading.rows
    raise ImportError(f"registry.api.audit.ROW_COLUMNS is {ROW_COLUMNS}, not {_ROW_ORDER}")


class ApiContext:
    """Per-process state of the registry API, created with the app, filled by its lifespan."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.tz = settings.tz
        self.clock = clock
        self.pool: Any = None
        self.reads: ReadPools | None = None
        self.audit_writer: AuditWriter | None = None
        self.sealer = Sealer(settings.cursor_key())

    def now(self) -> tuple[dt.datetime, dt.date]:
        now = self.clock.now()
        return now, today_in(self.tz, now)

    async def read(self, query: Callable[[Any], Awaitable[T]]) -> tuple[T, dt.datetime, dt.date]:
        """``query(pool)`` on a read pool (a read replica in rotation, else the primary;
        ``platereg.replicas``): its result, the ``as_of`` of views made from it (the
        replica's replay time, or now on the primary) and the registry's today."""
        assert self.reads is not None
        result, replayed = await self.reads.read(query)
        now, today = self.now()
        return result, replayed or now, today

    async def audit_keeping_up(self) -> bool | str:
        """/readyz: no audit row has waited longer than PLATEREG_AUDIT_READY_LAG_SECONDS,
        and no audit write has failed within that time without one committing since."""
        writer = self.audit_writer
        lag = self.settings.audit_ready_lag_seconds
        if writer is None or writer.oldest_age() > lag:
            return "lagging"
        if writer.failing(lag):
            return "failing"
        return True

    async def audit(self, reads: list[Read]) -> None:
        """Commit the audit rows of one answer, or refuse it (503) when they cannot be."""
        await self.audit_rows([r.row() for r in reads])

    async def audit_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """:meth:`audit` for rows already in ``Read.row`` form (:meth:`Reading.rows`)."""
        assert self.audit_writer is not None
        try:
            await self.audit_writer.write(stamped(rows))
        except AuditUnavailable:
            raise ProblemError(503, "Service Unavailable", "the audit log cannot keep up",
                               headers={"Retry-After": "5"}) from None


def ctx_of(request: Request) -> ApiContext:
    return request.app.state.ctx


def count(kind: str, purpose: str | None, found: int, not_found: int = 0) -> None:
    """``platereg_lookups_total`` for one answer."""
    if found:
        _lookups(kind, "found", purpose).inc(found)
    if not_found:
        _lookups(kind, "not_found", purpose).inc(not_found)


@functools.lru_cache(maxsize=256)
def _lookups(kind: str, result: str, purpose: str | None) -> Any:
    """``platereg_lookups_total``'s child, looked up once per label set."""
    return LOOKUPS.labels(kind, result, purpose)


# --------------------------------------------------------------------------- requests


def json_response(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def normalize(jurisdiction: str, plate: str, where: str = "path") -> tuple[str, str]:
    """Both parts normalized, or 422 naming each bad field (never echoing it)."""
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


async def json_body(request: Request, model: type[BaseModel]) -> Any:
    """The body read strictly (``platereg.http.read_json``) and validated, or 4xx."""
    _, data = await read_json(request)
    return validated(model, data)


def validated(model: type[BaseModel], data: Any) -> Any:
    """``data`` as ``model``, or a 422 problem naming the bad fields (never echoing them)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProblemError(422, "Unprocessable Content", "the request body is not valid",
                           errors=validation_errors(exc.errors(), model, data)) from None


def reading(ctx: ApiContext, principal: Principal, query: Any) -> Reading:
    """The audit context of a request whose body has ``purpose``, ``case_ref`` (and ``at``)."""
    return Reading(ctx.clock.now(), principal.key_id, query.purpose.value, query.case_ref,
                   getattr(query, "at", None))


def view_of(row: Any, with_owner: bool, today: dt.date, now: dt.datetime) -> dict[str, Any]:
    """The view of a ``plates`` row: the owner only when ``with_owner``."""
    return state_view(state_from_row(row), with_owner, today, now)


_PARTS = len(VIEW_PARTS)
#: ``view_from`` taking a row's first ``_PARTS`` columns by position (a row's length is
#: not known to the type checker).
_VIEW_FROM: Callable[..., dict[str, Any]] = view_from


def views_of_rows(rows: Iterable[Any], with_owner: bool, today: dt.date,
                  now: dt.datetime) -> dict[str, dict[str, Any]]:
    """The views of ``registry.api.lookups.view_rows`` rows, by plate key (the owner only when
    ``with_owner``)."""
    n, view = _PARTS, _VIEW_FROM
    if with_owner:
        return {r[n + 1]: {**view(*r[:n], today, now), "owner": owner_view_from(r[n])}
                for r in rows}
    return {r[n + 1]: view(*r[:n], today, now) for r in rows}


def state_view(state: PlateState, with_owner: bool, today: dt.date,
               now: dt.datetime) -> dict[str, Any]:
    if with_owner:
        return full_view(state, today=today, as_of=now)
    return enforcement_view(state, today=today, as_of=now)


# --------------------------------------------------------------------------- OpenAPI

# What ``normalize_jurisdiction`` / ``normalize_plate`` accept, for the OpenAPI document
# (the functions stay the one check, with their messages; tests/unit/test_api_openapi.py
# holds the two to the same set).
RAW_JURISDICTION_PATTERN = r"^ *[A-Za-z]{2}-[A-Za-z0-9]{1,3} *$"
RAW_PLATE_PATTERN = r"^[ .-]*(?:[A-Za-z0-9][ .-]*){1,10}$"
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
RAW_JURISDICTION = {"pattern": RAW_JURISDICTION_PATTERN, "maxLength": 64}
RAW_PLATE = {"pattern": RAW_PLATE_PATTERN, "maxLength": 64}

_PROBLEM_SCHEMA = Problem.model_json_schema()
#: Request-body schemas the routes declare through ``openapi_extra`` (added to components).
EXTRA_SCHEMAS: dict[str, Any] = {}

_ERROR_TEXTS = {
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
BODY_ERRORS = (400, 408, 413, 415, 422)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for the given error statuses plus those of every keyed route."""
    return {s: {"description": _ERROR_TEXTS[s],
                "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}}}
            for s in (401, 403, 429, 503, *statuses)}


def ok(model: Any, example: Any, description: str = "OK") -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": description,
                  "content": {"application/json": {"example": example}}}}


def _raw_plate_patterns(schema: dict[str, Any]) -> None:
    """Request bodies take plates and jurisdictions raw (any case, separators): say which."""
    props = schema.get("properties", {})
    for name, extra in (("jurisdiction", RAW_JURISDICTION), ("plate", RAW_PLATE)):
        if props.get(name, {}).get("type") == "string":
            props[name] = {**props[name], **extra}


def body(model: type[BaseModel], example: Any) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body of ``model`` (parsed by the route)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        _raw_plate_patterns(definition)
        EXTRA_SCHEMAS.setdefault(name, definition)
    _raw_plate_patterns(schema)
    EXTRA_SCHEMAS[model.__name__] = schema
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}, "example": example}}}}


VIEW_EXAMPLE = {
    "jurisdiction": "CA-ON", "plate": "ABC123", "status": "suspended",
    "flags": ["suspended", "expired"], "expires_on": "2026-10-31", "plate_class": "passenger",
    "suspension_reasons": ["insurance_lapsed"],
    "vehicle": {"make": "Honda", "model": "Civic", "year": 2019, "colour": "blue"},
    "smart_plate": True, "as_of": "2026-11-24T15:04:05Z", "version": 7,
}
OWNER_EXAMPLE = {"owner_id": "own-123", "name": "Jane Doe", "email": "jane@example.org",
                 "phone": None, "language": "en"}
FULL_EXAMPLE = {**VIEW_EXAMPLE, "owner": OWNER_EXAMPLE}
