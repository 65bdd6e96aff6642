"""Plate routes of the registry API: the single lookup (hot path), the batch lookup,
confusable candidates and a plate's event history, with their OpenAPI examples.

Audit and ``platereg_lookups_total``: one row and one count per plate answered
(single: the plate; batch: every item, duplicates included, in request order;
candidates: every candidate returned, plus one ``not_found`` row for the
queried plate when it does not exist itself; events: kind ``events``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from platereg.auth import authenticate_request, charge
from platereg.http import ProblemError
from registry import lookups
from registry.api_models import CandidatesResponse, PlateEvents
from registry.candidates import variants
from registry.routes.common import (
    BODY_ERRORS,
    ENFORCEMENT,
    OPERATOR,
    PORTAL,
    PURPOSE_HEADER_PARAMETER,
    RAW_JURISDICTION,
    RAW_PLATE,
    VIEW_EXAMPLE,
    WITH_OWNER,
    EnforcementKey,
    OperatorKey,
    Read,
    body,
    count,
    ctx_of,
    errors,
    json_body,
    json_response,
    normalize,
    ok,
    purpose_header,
    view_of,
)
from schemas.views import EnforcementView, FullView, LookupRequest, LookupResponse

MAX_EVENTS = 10_000
LOOKUP_ROLES = frozenset({ENFORCEMENT, PORTAL, OPERATOR})

router = APIRouter(tags=["plates"])

JurisdictionPath = Annotated[str, Path(
    json_schema_extra=RAW_JURISDICTION,
    description="ISO 3166-2 code, any case (ca-on)", examples=["CA-ON"],
    openapi_examples={"ontario": {"value": "CA-ON"}})]
PlatePath = Annotated[str, Path(
    json_schema_extra=RAW_PLATE,
    description="Plate; case, spaces, '-' and '.' are ignored (abc-123 == ABC123)",
    examples=["ABC123"], openapi_examples={"plate": {"value": "ABC123"}})]
_PATH_PARAMETERS = [
    {"name": "jurisdiction", "in": "path", "required": True,
     "description": "ISO 3166-2 code, any case (ca-on)",
     "schema": {"type": "string", **RAW_JURISDICTION}, "example": "CA-ON"},
    {"name": "plate", "in": "path", "required": True,
     "description": "Plate; case, spaces, '-' and '.' are ignored (abc-123 == ABC123)",
     "schema": {"type": "string", **RAW_PLATE}, "example": "ABC123"},
    PURPOSE_HEADER_PARAMETER,
]

_CANDIDATES_EXAMPLE = {"jurisdiction": "CA-ON", "plate": "ABC123",
                       "candidates": [{**VIEW_EXAMPLE, "plate": "A8C123"}],
                       "variants_checked": 24, "truncated": False}
_EVENTS_EXAMPLE = {"jurisdiction": "CA-ON", "plate": "ABC123", "events": [{
    "id": "2b7c1d5e", "type": "plate.renewed", "source": "/registry/office/0042",
    "time": "2026-11-24T15:04:05Z", "data": {"expires_on": "2027-11-30"},
    "received_at": "2026-11-24T15:04:06Z"}], "truncated": False}
_BATCH_EXAMPLE = {"plates": [{"jurisdiction": "CA-ON", "plate": "ABC123"},
                             {"jurisdiction": "ca-qc", "plate": "xyz-987"}],
                  "purpose": "traffic stop"}


@router.get("/v1/plates/{jurisdiction}/{plate}", response_model=None,
            summary="A plate's view (enforcement; portal and operator add the owner)",
            responses={**ok(FullView | EnforcementView, VIEW_EXAMPLE), **errors(404, 422)},
            openapi_extra={"parameters": _PATH_PARAMETERS})
async def get_plate(request: Request) -> Response:
    """The hot path: a plain route (no FastAPI parameters), checking the key and role,
    then X-Purpose, then the path, with the same errors as the other routes."""
    ctx = ctx_of(request)
    principal = await authenticate_request(request, LOOKUP_ROLES)
    purpose = purpose_header(request)
    params = request.path_params
    j, p = normalize(params["jurisdiction"], params["plate"])
    with_owner = principal.role in WITH_OWNER
    row = await lookups.plate(ctx.pool, f"{j}/{p}", with_owner)
    now, today = ctx.now()
    if row is None:
        ctx.audit([Read(now, principal.key_id, "single", j, p, purpose, "not_found")])
        count("single", 0, 1)
        raise ProblemError(404, "Not Found", "no issued plate with this key")
    view = view_of(row, with_owner, today, now)
    ctx.audit([Read(now, principal.key_id, "single", j, p, purpose, view["status"])])
    count("single", 1)
    return json_response(view)


@router.post("/v1/plates/lookup", response_model=None,
             summary="Up to 1000 plates at once, results in request order",
             description="Unknown plates come back as `{\"jurisdiction\", \"plate\", "
                         "\"status\": \"unknown\"}`. An invalid plate anywhere makes the whole "
                         "request 422, listing the index of each bad item "
                         "(`plates.<index>.plate`). `purpose` in the body wins over X-Purpose.",
             responses={**ok(LookupResponse, {"results": [
                 VIEW_EXAMPLE, {"jurisdiction": "CA-QC", "plate": "XYZ987",
                                "status": "unknown"}]}), **errors(*BODY_ERRORS)},
             openapi_extra={**body(LookupRequest, _BATCH_EXAMPLE),
                            "parameters": [PURPOSE_HEADER_PARAMETER]})
async def lookup_batch(request: Request, principal: EnforcementKey) -> Response:
    ctx = ctx_of(request)
    header_purpose = purpose_header(request)
    req: LookupRequest = await json_body(request, LookupRequest)
    purpose = req.purpose if req.purpose is not None else header_purpose
    with_owner = principal.role in WITH_OWNER
    keys = [f"{ref.jurisdiction}/{ref.plate}" for ref in req.plates]
    rows = await lookups.plates(ctx.pool, set(keys), with_owner)
    now, today = ctx.now()
    results: list[dict[str, Any]] = []
    reads: list[Read] = []
    for ref, key in zip(req.plates, keys, strict=True):
        row = rows.get(key)
        if row is None:
            result: dict[str, Any] = {"jurisdiction": ref.jurisdiction, "plate": ref.plate,
                                      "status": "unknown"}
        else:
            result = view_of(row, with_owner, today, now)
        results.append(result)
        reads.append(Read(now, principal.key_id, "batch", ref.jurisdiction, ref.plate, purpose,
                          "not_found" if row is None else result["status"]))
    ctx.audit(reads)
    charge(request, len(results))
    found = sum(1 for k in keys if k in rows)
    count("batch", found, len(keys) - found)
    return json_response({"results": results})


@router.get("/v1/plates/{jurisdiction}/{plate}/candidates", response_model=None,
            summary="Existing plates that differ only by ALPR-confusable characters",
            description="Confusable groups: O/0/Q/D, I/1/L, B/8, S/5, Z/2, G/6. Variants are "
                        "generated nearest first (fewest substitutions) and cut at "
                        "1024 (`truncated`); all are looked up in one statement.",
            responses={**ok(CandidatesResponse, _CANDIDATES_EXAMPLE), **errors(422)},
            openapi_extra={"parameters": [PURPOSE_HEADER_PARAMETER]})
async def get_candidates(request: Request, jurisdiction: JurisdictionPath, plate: PlatePath,
                         principal: EnforcementKey) -> Response:
    ctx = ctx_of(request)
    purpose = purpose_header(request)
    j, p = normalize(jurisdiction, plate)
    with_owner = principal.role in WITH_OWNER
    variant_set = variants(p)
    rows = await lookups.plates(ctx.pool, [f"{j}/{v}" for v in variant_set.plates], with_owner)
    now, today = ctx.now()
    candidates = []
    reads: list[Read] = []
    for v in variant_set.plates:  # nearest first
        row = rows.get(f"{j}/{v}")
        if row is not None:
            view = view_of(row, with_owner, today, now)
            candidates.append(view)
            reads.append(Read(now, principal.key_id, "candidates", j, v, purpose,
                              view["status"]))
    missing = f"{j}/{p}" not in rows
    if missing:
        reads.append(Read(now, principal.key_id, "candidates", j, p, purpose, "not_found"))
    ctx.audit(reads)
    charge(request, len(candidates))
    count("candidates", len(candidates), int(missing))
    return json_response({"jurisdiction": j, "plate": p, "candidates": candidates,
                          "variants_checked": len(variant_set.plates),
                          "truncated": variant_set.truncated})


@router.get("/v1/plates/{jurisdiction}/{plate}/events", response_model=None,
            summary="The plate's accepted events in fold order (time, then id)",
            responses={**ok(PlateEvents, _EVENTS_EXAMPLE), **errors(404, 422)},
            openapi_extra={"parameters": [PURPOSE_HEADER_PARAMETER]})
async def get_events(request: Request, jurisdiction: JurisdictionPath, plate: PlatePath,
                     principal: OperatorKey,
                     limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = MAX_EVENTS
                     ) -> Response:
    ctx = ctx_of(request)
    purpose = purpose_header(request)
    j, p = normalize(jurisdiction, plate)
    key = f"{j}/{p}"
    rows = await lookups.events(ctx.pool, key, limit + 1)
    now, today = ctx.now()
    if not rows:
        ctx.audit([Read(now, principal.key_id, "events", j, p, purpose, "not_found")])
        raise ProblemError(404, "Not Found", "no events for this plate")
    current = await lookups.plate(ctx.pool, key, False)
    result = "not_found" if current is None else view_of(current, False, today, now)["status"]
    ctx.audit([Read(now, principal.key_id, "events", j, p, purpose, result)])
    events = [{"id": r["event_id"], "type": r["type"], "source": r["source"],
               "time": r["event_time"], "data": r["data"], "received_at": r["received_at"]}
              for r in rows[:limit]]
    return json_response({"jurisdiction": j, "plate": p, "events": events,
                          "truncated": len(rows) > limit})


#: OpenAPI links of these routes: (source, name, target, description, parameters).
_PLATE_OF = {"jurisdiction": "$response.body#/jurisdiction", "plate": "$response.body#/plate"}
LINKS: list[tuple[str, str, str, str, dict[str, str]]] = [
    ("POST /v1/plates/lookup", "FirstResult", "GET /v1/plates/{jurisdiction}/{plate}",
     "the first result's plate", {"jurisdiction": "$response.body#/results/0/jurisdiction",
                                  "plate": "$response.body#/results/0/plate"}),
    ("GET /v1/plates/{jurisdiction}/{plate}", "Candidates",
     "GET /v1/plates/{jurisdiction}/{plate}/candidates", "confusable plates", _PLATE_OF),
    ("GET /v1/plates/{jurisdiction}/{plate}", "Events",
     "GET /v1/plates/{jurisdiction}/{plate}/events", "the plate's events", _PLATE_OF),
]
