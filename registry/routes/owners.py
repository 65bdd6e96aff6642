"""Owner routes of the registry API: an owner's plates, notices and preferences."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from platereg.auth import charge
from registry import lookups
from registry.api_models import OwnerNotices, OwnerPlates, OwnerPreferences, PreferencesUpdate
from registry.routes.common import (
    BODY_ERRORS,
    FULL_EXAMPLE,
    PURPOSE_HEADER_PARAMETER,
    OwnerKey,
    Read,
    body,
    ctx_of,
    errors,
    json_body,
    json_response,
    ok,
    purpose_header,
    view_of,
)
from schemas._types import SAFE_ID_PATTERN

MAX_OWNER_PLATES = 1000

router = APIRouter(tags=["owners"])

OwnerId = Annotated[str, Path(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN,
                              description="Owner identifier", examples=["own-123"])]

_NOTICES_EXAMPLE = {"owner_id": "own-123", "notices": [{
    "notice_id": "0b3c7a4e-8f7e-4d8e-a3b5-3f3b1f0d9a11",
    "kind": "renewal_reminder", "jurisdiction": "CA-ON", "plate": "ABC123",
    "owner_id": "own-123", "language": "en", "channels": ["email"],
    "created_at": "2026-10-01T13:00:00Z",
    "context": {"expires_on": "2026-11-30", "days_before": 60},
    "deliveries": [{"channel": "email", "attempt": 1, "outcome": "sent",
                    "status_code": None, "error": None, "at": "2026-10-01T13:00:02Z"}]}]}
_PREFS_EXAMPLE = {"owner_id": "own-123", "channels": ["email", "plate_display"],
                  "language": "fr", "updated_at": "2026-11-24T15:04:05Z"}


@router.get("/v1/owners/{owner_id}/plates", response_model=None,
            summary="The owner's plates, with owner data",
            responses={**ok(OwnerPlates, {"owner_id": "own-123", "plates": [FULL_EXAMPLE]}),
                       **errors(422)},
            openapi_extra={"parameters": [PURPOSE_HEADER_PARAMETER]})
async def get_owner_plates(request: Request, owner_id: OwnerId,
                           principal: OwnerKey) -> Response:
    ctx = ctx_of(request)
    purpose = purpose_header(request)
    rows = await lookups.owner_plates(ctx.pool, owner_id, MAX_OWNER_PLATES)
    now, today = ctx.now()
    views = [view_of(r, True, today, now) for r in rows]
    ctx.audit([Read(now, principal.key_id, "owner", v["jurisdiction"], v["plate"], purpose,
                    v["status"], owner_id) for v in views]
              or [Read(now, principal.key_id, "owner", None, None, purpose, "not_found",
                       owner_id)])
    charge(request, len(views))
    return json_response({"owner_id": owner_id, "plates": views})


def notice_out(item: dict[str, Any]) -> dict[str, Any]:
    """One stored notice with its deliveries, as the API shows it."""
    n = item["notice"]
    jurisdiction, _, plate = n["plate_key"].partition("/")
    return {
        "notice_id": str(n["notice_id"]), "kind": n["kind"],
        "jurisdiction": jurisdiction, "plate": plate, "owner_id": n["owner_id"],
        "language": n["language"], "channels": list(n["channels"]),
        "created_at": n["created_at"], "context": n["context"] or {},
        "deliveries": [{"channel": d["channel"], "attempt": d["attempt"],
                        "outcome": d["outcome"], "status_code": d["status_code"],
                        "error": d["error"], "at": d["at"]} for d in item["deliveries"]],
    }


@router.get("/v1/owners/{owner_id}/notices", response_model=None,
            summary="The owner's notices (newest first) with their delivery attempts",
            responses={**ok(OwnerNotices, _NOTICES_EXAMPLE), **errors(422)})
async def get_owner_notices(request: Request, owner_id: OwnerId, principal: OwnerKey,
                            limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Response:
    ctx = ctx_of(request)
    items = await lookups.owner_notices(ctx.pool, owner_id, limit)
    notices = [notice_out(i) for i in items]
    now, _ = ctx.now()
    ctx.audit([Read(now, principal.key_id, "owner_notices", n["jurisdiction"], n["plate"],
                    None, n["kind"], owner_id) for n in notices]
              or [Read(now, principal.key_id, "owner_notices", None, None, None, "empty",
                       owner_id)])
    charge(request, len(notices))
    return json_response({"owner_id": owner_id, "notices": notices})


def preferences_out(owner_id: str, row: Any) -> dict[str, Any]:
    if row is None:
        return {"owner_id": owner_id, "channels": None, "language": None, "updated_at": None}
    return {"owner_id": owner_id, "channels": list(row["channels"]),
            "language": row["language"], "updated_at": row["updated_at"]}


@router.get("/v1/owners/{owner_id}/preferences", response_model=None,
            summary="The owner's notice channels and language (null: defaults)",
            responses={**ok(OwnerPreferences, _PREFS_EXAMPLE), **errors(422)})
async def get_preferences(request: Request, owner_id: OwnerId, principal: OwnerKey) -> Response:
    ctx = ctx_of(request)
    row = await lookups.preferences(ctx.pool, owner_id)
    now, _ = ctx.now()
    ctx.audit([Read(now, principal.key_id, "owner_preferences", None, None, None,
                    "not_found" if row is None else "found", owner_id)])
    return json_response(preferences_out(owner_id, row))


@router.put("/v1/owners/{owner_id}/preferences", response_model=None,
            summary="Set the owner's notice channels and language",
            responses={**ok(OwnerPreferences, _PREFS_EXAMPLE), **errors(*BODY_ERRORS)},
            openapi_extra=body(PreferencesUpdate, {"channels": ["email", "plate_display"],
                                                   "language": "fr"}))
async def put_preferences(request: Request, owner_id: OwnerId, principal: OwnerKey) -> Response:
    req: PreferencesUpdate = await json_body(request, PreferencesUpdate)
    ctx = ctx_of(request)
    row = await lookups.put_preferences(
        ctx.pool, owner_id, [c.value for c in req.channels],
        req.language.value if req.language else None)
    now, _ = ctx.now()
    ctx.audit([Read(now, principal.key_id, "owner_preferences", None, None, None, "updated",
                    owner_id)])
    return json_response(preferences_out(owner_id, row))


LINKS: list[tuple[str, str, str, str, dict[str, str]]] = [
    ("GET /v1/plates/{jurisdiction}/{plate}", "OwnerPlates", "GET /v1/owners/{owner_id}/plates",
     "the owner's plates (portal and operator keys see the owner)",
     {"owner_id": "$response.body#/owner/owner_id"}),
    ("GET /v1/owners/{owner_id}/plates", "Notices", "GET /v1/owners/{owner_id}/notices",
     "the owner's notices", {"owner_id": "$response.body#/owner_id"}),
    ("GET /v1/owners/{owner_id}/plates", "Preferences", "GET /v1/owners/{owner_id}/preferences",
     "the owner's preferences", {"owner_id": "$response.body#/owner_id"}),
]
