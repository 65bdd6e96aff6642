"""The audit query route of the registry API: who read what (operator).

Filters travel in the body (a plate or owner id is personal data). Reading who
read what is itself a read: one ``audit`` row per entry listed (its plate and
owner), or one ``empty`` row naming the filters. The page cursor is sealed like
the hotlist's and holds the newest row id at the first page: later pages list
nothing written since (the audit rows of the query's own pages among them, which
are committed before each page is answered and would otherwise match its filters
and keep the paging going).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from platereg.http import ProblemError
from platereg.security.auth import charge
from registry.api import lookups
from registry.api.cursors import InvalidCursor, open_cursor, seal
from registry.api.models import AuditPage
from registry.api.routes.common import (
    BODY_ERRORS,
    OperatorKey,
    body,
    ctx_of,
    errors,
    json_body,
    json_response,
    ok,
    reading,
)
from registry.api.sealing import Sealer
from schemas.views import AuditQuery

router = APIRouter(tags=["audit"])

_EXAMPLE = {"entries": [{
    "id": 1, "at": "2026-11-24T15:04:05Z", "key_id": "k2m9x0a1b2c3",
    "kind": "single", "jurisdiction": "CA-ON", "plate": "ABC123", "owner_id": None,
    "purpose": "traffic_stop", "case_ref": "TS-2026-0042", "as_at": None,
    "result": "valid"}], "next": None}
_QUERY_EXAMPLE = {"jurisdiction": "CA-ON", "plate": "ABC123", "since": "2026-11-01T00:00:00Z",
                  "purpose": "audit_review", "case_ref": "AR-17"}


def open_id_cursor(text: str | None, sealer: Sealer) -> tuple[int, int | None]:
    """``(after id, last id)`` of an audit cursor: the page starts after the first; the
    second is the newest row when the query's first page was read (None: no page yet)."""
    if text is None:
        return 0, None
    try:
        kind, value = open_cursor(sealer, text)
    except InvalidCursor:
        kind = value = ""
    after, _, last = value.partition("-")
    if kind != "a" or not all(v.isdigit() and len(v) <= 18 for v in (after, last)):
        raise ProblemError(400, "Bad Request", "malformed cursor")
    return int(after), int(last)


@router.post("/v1/audit/query", response_model=None,
             summary="Who read what (oldest first, paged)",
             description="Filters combine with AND. `plate` needs `jurisdiction`. Rows "
                         "are committed before the read they record is answered. "
                         "Pass `next` as `cursor` with the same filters for the next page.",
             responses={**ok(AuditPage, _EXAMPLE), **errors(*BODY_ERRORS)},
             openapi_extra=body(AuditQuery, _QUERY_EXAMPLE))
async def query_audit(request: Request, principal: OperatorKey) -> Response:
    ctx = ctx_of(request)
    query: AuditQuery = await json_body(request, AuditQuery)
    if query.plate is not None and query.jurisdiction is None:
        raise ProblemError(422, "Unprocessable Content", "invalid filter", errors=[
            {"field": "body.plate", "message": "plate needs jurisdiction"}])
    after_id, last_id = open_id_cursor(query.cursor, ctx.sealer)
    if last_id is None:   # the first page: later pages list no row written after it
        last_id = await lookups.last_audit_id(ctx.pool)
    rows = await lookups.audit_entries(
        ctx.pool, jurisdiction=query.jurisdiction, plate=query.plate, key_id=query.key_id,
        owner_id=query.owner_id, since=query.since, after_id=after_id, last_id=last_id,
        limit=query.limit)
    entries = [dict(r) for r in rows]
    who = reading(ctx, principal, query)
    await ctx.audit([who.read("audit", e["jurisdiction"], e["plate"], "listed", e["owner_id"])
               for e in entries]
              or [who.read("audit", query.jurisdiction, query.plate, "empty", query.owner_id)])
    charge(request, len(entries))
    nxt = (seal(ctx.sealer, "a", f"{rows[-1]['id']}-{last_id}") if len(rows) == query.limit
           else None)
    return json_response({"entries": entries, "next": nxt})


LINKS: list[tuple[str, str, str, str, dict[str, str]]] = []
