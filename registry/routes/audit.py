"""The audit query route of the registry API: who read what."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from platereg.auth import charge
from platereg.http import ProblemError
from registry import lookups
from registry.api_models import AuditPage
from registry.cursors import InvalidCursor, open_cursor, seal
from registry.routes.common import (
    CURSOR_PATTERN,
    RAW_JURISDICTION,
    RAW_PLATE,
    OperatorKey,
    Read,
    ctx_of,
    errors,
    json_response,
    ok,
)
from schemas._types import Rfc3339Datetime
from schemas.plates import InvalidPlate, normalize_jurisdiction, normalize_plate

router = APIRouter(tags=["audit"])

_EXAMPLE = {"entries": [{
    "id": 1, "at": "2026-11-24T15:04:05Z", "key_id": "k2m9x0a1b2c3",
    "kind": "single", "jurisdiction": "CA-ON", "plate": "ABC123",
    "purpose": "traffic stop", "result": "valid"}], "next": None}


def decode_id_cursor(text: str | None) -> int:
    if text is None:
        return 0
    try:
        kind, value = open_cursor(text)
    except InvalidCursor:
        kind = value = ""
    if kind != "a" or not value.isdigit() or len(value) > 18:
        raise ProblemError(400, "Bad Request", "malformed cursor")
    return int(value)


def encode_id_cursor(last_id: int) -> str:
    return seal("a", str(last_id))


def _filters(jurisdiction: str | None, plate: str | None) -> tuple[str | None, str | None]:
    j = p = None
    problems = []
    if jurisdiction is not None:
        try:
            j = normalize_jurisdiction(jurisdiction)
        except InvalidPlate as exc:
            problems.append({"field": "query.jurisdiction", "message": str(exc)})
    if plate is not None:
        try:
            p = normalize_plate(plate)
        except InvalidPlate as exc:
            problems.append({"field": "query.plate", "message": str(exc)})
        if jurisdiction is None:
            problems.append({"field": "query.plate", "message": "plate needs jurisdiction"})
    if problems:
        raise ProblemError(422, "Unprocessable Content", "invalid filter", errors=problems)
    return j, p


@router.get("/v1/audit", response_model=None,
            summary="Who looked up what (oldest first, paged)",
            description="Filters combine with AND. `plate` needs `jurisdiction`. Rows "
                        "appear within about a second of the lookup (written in batches).",
            responses={**ok(AuditPage, _EXAMPLE), **errors(400, 422)})
async def get_audit(request: Request, principal: OperatorKey,
                    jurisdiction: Annotated[str | None, Query(
                        max_length=64, json_schema_extra=RAW_JURISDICTION)] = None,
                    plate: Annotated[str | None, Query(
                        max_length=64, json_schema_extra=RAW_PLATE)] = None,
                    key_id: Annotated[str | None, Query(
                        max_length=64, pattern=r"^[a-z0-9]+$")] = None,
                    since: Annotated[Rfc3339Datetime | None, Query(
                        description="RFC 3339 with offset")] = None,
                    cursor: Annotated[str | None, Query(
                        max_length=64, pattern=CURSOR_PATTERN,
                        description="Opaque cursor (`next`)")] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    j, p = _filters(jurisdiction, plate)
    ctx = ctx_of(request)
    rows = await lookups.audit_entries(ctx.pool, jurisdiction=j, plate=p,
                                       key_id=key_id, since=since,
                                       after_id=decode_id_cursor(cursor), limit=limit)
    nxt = encode_id_cursor(rows[-1]["id"]) if len(rows) == limit else None
    entries = [dict(r) for r in rows]
    # Reading who read what is itself a read: one row per entry listed (or one, empty).
    now, _ = ctx.now()
    ctx.audit([Read(now, principal.key_id, "audit", e["jurisdiction"], e["plate"], None,
                    "listed", e["owner_id"]) for e in entries]
              or [Read(now, principal.key_id, "audit", j, p, None, "empty")])
    charge(request, len(entries))
    return json_response({"entries": entries, "next": nxt})


LINKS: list[tuple[str, str, str, str, dict[str, str]]] = [
    ("GET /v1/audit", "NextPage", "GET /v1/audit", "next page (while `next` is not null)",
     {"cursor": "$response.body#/next"}),
]
