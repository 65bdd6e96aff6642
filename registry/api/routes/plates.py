"""Plate routes of the registry API: the single query (hot path), the batch lookup,
confusable candidates and a plate's event history, with their OpenAPI examples.

Plates travel only in POST bodies (contract section 5), each read names its
``purpose`` (and optionally ``case_ref``). Query and batch take ``at``: the view
as it stood then, folded from the kept history (``schemas.fold.fold_until``)
with flags for that day in the registry's time zone.

Audit and ``platereg_lookups_total`` (label ``purpose``): one row and one count
per plate answered (single: the plate; batch: every item, duplicates included,
in request order; candidates: every candidate returned, plus one ``not_found``
row for the queried plate when it does not exist itself; history: the plate).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from platereg.http import ProblemError, RequestRoute
from platereg.security.auth import authenticate_request, charge
from registry.api import lookups
from registry.api.candidates import variants
from registry.api.models import CandidatesResponse, PlateEvents
from registry.api.routes.common import (
    BODY_ERRORS,
    ENFORCEMENT,
    OPERATOR,
    VIEW_EXAMPLE,
    WITH_OWNER,
    ApiContext,
    EnforcementKey,
    OperatorKey,
    body,
    count,
    ctx_of,
    errors,
    json_body,
    json_response,
    ok,
    reading,
    view_of,
    views_of_rows,
)
from registry.domain import view_at
from schemas.views import (
    CandidatesQuery,
    EnforcementView,
    FullView,
    HistoryQuery,
    LookupRequest,
    LookupResponse,
    PlateQuery,
)

MAX_EVENTS = 10_000
QUERY_PATH = "/v1/plates/query"
QUERY_ROLES = frozenset({ENFORCEMENT, OPERATOR})

router = APIRouter(tags=["plates"])

_QUERY_EXAMPLE = {"jurisdiction": "CA-ON", "plate": "ABC123", "purpose": "traffic_stop",
                  "case_ref": "TS-2026-0042"}
_BATCH_EXAMPLE = {"plates": [{"jurisdiction": "CA-ON", "plate": "ABC123"},
                             {"jurisdiction": "ca-qc", "plate": "xyz-987"}],
                  "purpose": "alpr_hit"}
_CANDIDATES_EXAMPLE = {"jurisdiction": "CA-ON", "plate": "ABC123",
                       "candidates": [{**VIEW_EXAMPLE, "plate": "A8C123"}],
                       "variants_checked": 24, "truncated": False}
_EVENTS_EXAMPLE = {"jurisdiction": "CA-ON", "plate": "ABC123", "events": [{
    "id": "2b7c1d5e", "type": "plate.renewed", "source": "/registry/office/0042",
    "time": "2026-11-24T15:04:05Z", "data": {"expires_on": "2027-11-30"},
    "received_at": "2026-11-24T15:04:06Z", "producer": "ingest-api", "authtype": "api_key",
    "authid": "3f9a1c2b7d0e"}], "truncated": False}
_AT_DESCRIPTION = (
    "With `at` (RFC 3339): the view as it stood at that instant, the fold of the plate's "
    "accepted events whose `time` is at or before it, with flags for that day in the "
    "registry's time zone (`as_of` is then `at`). `version` is the number of events folded.")


async def views_at(ctx: ApiContext, keys: list[str], with_owner: bool,
                   at: dt.datetime) -> dict[str, dict[str, Any]]:
    """The views of the plates among ``keys`` that were issued at ``at``, by key."""
    histories, _, _ = await ctx.read(lambda pool: lookups.histories_until(pool, keys, at))
    out = {}
    for key, events in histories.items():
        jurisdiction, _, plate = key.partition("/")
        view = view_at(jurisdiction, plate, events, at, ctx.tz, with_owner=with_owner)
        if view is not None:
            out[key] = view
    return out


async def views_now(ctx: ApiContext, keys: list[str],
                    with_owner: bool) -> dict[str, dict[str, Any]]:
    """The views of the issued plates among ``keys``, by key (one statement, no
    ``PlateState`` per row: ``registry.domain.view_from`` on the selected parts)."""
    rows, as_of, today = await ctx.read(lambda pool: lookups.view_rows(pool, keys, with_owner))
    return views_of_rows(rows, with_owner, today, as_of)


async def query_plate(request: Request) -> Response:
    """The hot path (:func:`add_query_route`): checks the key and role, then the body, with
    the same errors as the other routes."""
    ctx = ctx_of(request)
    principal = await authenticate_request(request, QUERY_ROLES)
    query: PlateQuery = await json_body(request, PlateQuery)
    j, p = query.jurisdiction, query.plate
    key = f"{j}/{p}"
    with_owner = principal.role in WITH_OWNER
    if query.at is None:
        row, as_of, today = await ctx.read(lambda pool: lookups.plate(pool, key, with_owner))
        view = None if row is None else view_of(row, with_owner, today, as_of)
    else:
        view = (await views_at(ctx, [key], with_owner, query.at)).get(key)
    who = reading(ctx, principal, query)
    await ctx.audit_rows(who.rows("single", [(j, p, "not_found" if view is None
                                               else view["status"])]))
    if view is None:
        count("single", who.purpose, 0, 1)
        raise ProblemError(404, "Not Found", "no issued plate with this key")
    count("single", who.purpose, 1)
    return json_response(view)


def add_query_route(app: FastAPI) -> None:
    """The single lookup on ``app``'s own router: the hot path, a
    :class:`~platereg.http.RequestRoute` (served by :class:`~platereg.http.HotRoutes`)."""
    app.router.add_api_route(
        QUERY_PATH, query_plate, methods=["POST"], response_model=None, tags=["plates"],
        route_class_override=RequestRoute,
        summary="A plate's view (operator keys add the owner), now or at a past instant",
        description=_AT_DESCRIPTION,
        responses={**ok(FullView | EnforcementView, VIEW_EXAMPLE), **errors(404, *BODY_ERRORS)},
        openapi_extra=body(PlateQuery, _QUERY_EXAMPLE))


@router.post("/v1/plates/lookup", response_model=None,
             summary="Up to 1000 plates at once, results in request order",
             description="Unknown plates come back as `{\"jurisdiction\", \"plate\", "
                         "\"status\": \"unknown\"}`. An invalid plate anywhere makes the whole "
                         "request 422, listing the index of each bad item "
                         "(`plates.<index>.plate`). " + _AT_DESCRIPTION,
             responses={**ok(LookupResponse, {"results": [
                 VIEW_EXAMPLE, {"jurisdiction": "CA-QC", "plate": "XYZ987",
                                "status": "unknown"}]}), **errors(*BODY_ERRORS)},
             openapi_extra=body(LookupRequest, _BATCH_EXAMPLE))
async def lookup_batch(request: Request, principal: EnforcementKey) -> Response:
    ctx = ctx_of(request)
    req: LookupRequest = await json_body(request, LookupRequest)
    refs = [(ref.jurisdiction, ref.plate) for ref in req.plates]
    with_owner = principal.role in WITH_OWNER
    keys = [f"{j}/{p}" for j, p in refs]
    unique = list(dict.fromkeys(keys))
    views = (await views_now(ctx, unique, with_owner) if req.at is None
             else await views_at(ctx, unique, with_owner, req.at))
    who = reading(ctx, principal, req)
    results: list[dict[str, Any]] = []
    answers = []
    for (j, p), key in zip(refs, keys, strict=True):
        view = views.get(key)
        if view is None:
            results.append({"jurisdiction": j, "plate": p, "status": "unknown"})
            answers.append((j, p, "not_found"))
        else:
            results.append(view)
            answers.append((j, p, view["status"]))
    await ctx.audit_rows(who.rows("batch", answers))
    charge(request, len(results))
    found = sum(1 for k in keys if k in views)
    count("batch", who.purpose, found, len(keys) - found)
    return json_response({"results": results})


@router.post("/v1/plates/candidates", response_model=None,
             summary="Existing plates that differ only by ALPR-confusable characters",
             description="Confusable groups: O/0/Q/D, I/1/L, B/8, S/5, Z/2, G/6. Variants are "
                         "generated nearest first (fewest substitutions) and cut at "
                         "1024 (`truncated`); all are looked up in one statement.",
             responses={**ok(CandidatesResponse, _CANDIDATES_EXAMPLE), **errors(*BODY_ERRORS)},
             openapi_extra=body(CandidatesQuery, {**_QUERY_EXAMPLE, "purpose": "alpr_hit"}))
async def candidates(request: Request, principal: EnforcementKey) -> Response:
    ctx = ctx_of(request)
    query: CandidatesQuery = await json_body(request, CandidatesQuery)
    j, p = query.jurisdiction, query.plate
    with_owner = principal.role in WITH_OWNER
    variant_set = variants(p)
    views = await views_now(ctx, [f"{j}/{v}" for v in variant_set.plates], with_owner)
    who = reading(ctx, principal, query)
    found = [views[f"{j}/{v}"] for v in variant_set.plates if f"{j}/{v}" in views]
    reads = [who.read("candidates", j, view["plate"], view["status"]) for view in found]
    missing = f"{j}/{p}" not in views
    if missing:
        reads.append(who.read("candidates", j, p, "not_found"))
    await ctx.audit(reads)
    charge(request, len(found))
    count("candidates", who.purpose, len(found), int(missing))
    return json_response({"jurisdiction": j, "plate": p, "candidates": found,
                          "variants_checked": len(variant_set.plates),
                          "truncated": variant_set.truncated})


@router.post("/v1/plates/history", response_model=None,
             summary="The plate's accepted events in fold order (time, then id)",
             description=f"At most {MAX_EVENTS} events (`truncated` when there are more). "
                         "Each says who sent it: `producer`, the signed producer whose "
                         "signature the registry checked, and `authtype` / `authid`, the "
                         "CloudEvents authcontext that producer stamped (the ingest API: "
                         "`api_key` and the API key's id); null for events stored before "
                         "producers signed, or sent without one.",
             responses={**ok(PlateEvents, _EVENTS_EXAMPLE), **errors(404, *BODY_ERRORS)},
             openapi_extra=body(HistoryQuery, {**_QUERY_EXAMPLE,
                                               "purpose": "registry_administration"}))
async def history(request: Request, principal: OperatorKey) -> Response:
    ctx = ctx_of(request)
    query: HistoryQuery = await json_body(request, HistoryQuery)
    j, p = query.jurisdiction, query.plate
    rows, _, _ = await ctx.read(lambda pool: lookups.events(pool, f"{j}/{p}", MAX_EVENTS + 1))
    who = reading(ctx, principal, query)
    await ctx.audit([who.read("history", j, p, "found" if rows else "not_found")])
    count("history", who.purpose, int(bool(rows)), int(not rows))
    if not rows:
        raise ProblemError(404, "Not Found", "no events for this plate")
    events = [{"id": r["event_id"], "type": r["type"], "source": r["source"],
               "time": r["event_time"], "data": r["data"], "received_at": r["received_at"],
               "producer": r["producer"], "authtype": r["authtype"], "authid": r["authid"]}
              for r in rows[:MAX_EVENTS]]
    return json_response({"jurisdiction": j, "plate": p, "events": events,
                          "truncated": len(rows) > MAX_EVENTS})


#: OpenAPI links of these routes: none carry a plate into a URL (bodies only).
LINKS: list[tuple[str, str, str, str, dict[str, str]]] = []
