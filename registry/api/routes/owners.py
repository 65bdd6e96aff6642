"""The owner route of the registry API: an operator reads an owner's plates, notices and
preferences, the owner id in the body (never in a URL).

Portal keys have no owner route here: they will read an owner only through an
owner token minted for that owner (`POST /v1/owner-sessions`). Audit: one ``owner`` row per
plate returned and one for the owner record itself (notices and preferences),
each with the owner id.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from platereg.security.auth import charge
from registry.api import lookups
from registry.api.models import OwnerRecord
from registry.api.routes.common import (
    BODY_ERRORS,
    FULL_EXAMPLE,
    OperatorKey,
    body,
    ctx_of,
    errors,
    json_body,
    json_response,
    ok,
    reading,
    view_of,
)
from schemas.views import OwnerQuery

MAX_OWNER_PLATES = 1000
MAX_OWNER_NOTICES = 100

router = APIRouter(tags=["owners"])

_EXAMPLE = {"owner_id": "own-123", "plates": [FULL_EXAMPLE], "notices": [{
    "notice_id": "0b3c7a4e-8f7e-4d8e-a3b5-3f3b1f0d9a11",
    "kind": "renewal_reminder", "jurisdiction": "CA-ON", "plate": "ABC123",
    "owner_id": "own-123", "language": "en", "channels": ["email"],
    "created_at": "2026-10-01T13:00:00Z",
    "context": {"expires_on": "2026-11-30", "days_before": 60},
    "deliveries": [{"channel": "email", "attempt": 1, "outcome": "sent",
                    "status_code": None, "error": None, "at": "2026-10-01T13:00:02Z"}]}],
    "preferences": {"owner_id": "own-123", "channels": ["email", "plate_display"],
                    "language": "fr",
                    "updated_at": "2026-11-24T15:04:05Z"}}


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


def preferences_out(owner_id: str, row: Any) -> dict[str, Any]:
    if row is None:
        return {"owner_id": owner_id, "channels": None, "language": None, "updated_at": None}
    return {"owner_id": owner_id, "channels": list(row["channels"]) or None,  # {}: default
            "language": row["language"], "updated_at": row["updated_at"]}


@router.post("/v1/owners/query", response_model=None,
             summary="An owner's plates, notices and preferences (operator)",
             description=f"At most {MAX_OWNER_PLATES} plates and the newest "
                         f"{MAX_OWNER_NOTICES} notices. An unknown owner has no plates, no "
                         "notices and default preferences.",
             responses={**ok(OwnerRecord, _EXAMPLE), **errors(*BODY_ERRORS)},
             openapi_extra=body(OwnerQuery, {"owner_id": "own-123",
                                             "purpose": "registry_administration",
                                             "case_ref": "REQ-7731"}))
async def query_owner(request: Request, principal: OperatorKey) -> Response:
    ctx = ctx_of(request)
    query: OwnerQuery = await json_body(request, OwnerQuery)
    owner_id = query.owner_id
    rows = await lookups.owner_plates(ctx.pool, owner_id, MAX_OWNER_PLATES)
    notices = await lookups.owner_notices(ctx.pool, owner_id, MAX_OWNER_NOTICES)
    prefs = await lookups.preferences(ctx.pool, owner_id)
    now, today = ctx.now()
    views = [view_of(r, True, today, now) for r in rows]
    notices_out = [notice_out(i) for i in notices]
    who = reading(ctx, principal, query)
    await ctx.audit([
        *([who.read("owner", v["jurisdiction"], v["plate"], v["status"], owner_id)
           for v in views] or [who.read("owner", None, None, "not_found", owner_id)]),
        *([who.read("owner_notices", n["jurisdiction"], n["plate"], n["kind"], owner_id)
           for n in notices_out] or [who.read("owner_notices", None, None, "empty", owner_id)]),
        who.read("owner_preferences", None, None, "not_found" if prefs is None else "found",
                 owner_id)])
    charge(request, len(views) + len(notices_out))
    return json_response({"owner_id": owner_id, "plates": views, "notices": notices_out,
                          "preferences": preferences_out(owner_id, prefs)})


LINKS: list[tuple[str, str, str, str, dict[str, str]]] = []
