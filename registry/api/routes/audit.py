"""The audit query route of the registry API: who read what (operator).

Filters travel in the body (a plate or owner id is personal data). Reading who
read what is itself a read, audited as one row of kind ``audit`` however many
entries it lists (each page one row): its filters in the row's own columns
(``jurisdiction``, ``plate``, ``owner_id``; ``since`` as ``as_at``), the key filter,
if any, as ``result`` ``key_id=<id>`` (else ``all_keys``). So reviewing a trail adds
one row to it, not one per entry: polling a plate's trail grows it by one row a poll.
The page cursor is sealed like the hotlist's and holds the newest row id at the first
page: later pages list nothing written since (the query's own row of each page among
them, committed before the page is answered and matching its filters).
"""

from __future__ import annotations

import dataclasses

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
    Read,
    Reading,
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


def audit_query_read(who: Reading, query: AuditQuery) -> Read:
    """The one audit row of an audit query: its filters."""
    read = who.read("audit", query.jurisdiction, query.plate,
                    f"key_id={query.key_id}" if query.key_id else "all_keys", query.owner_id)
    return dataclasses.replace(read, as_at=query.since)


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
                         "Pass `next` as `cursor` with the same filters for the next page; "
                         "later pages list no row written after the first page. "
                         "Each query is itself audited, as one row of kind `audit` with its "
                         "filters, however many entries it lists.",
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
    await ctx.audit([audit_query_read(reading(ctx, principal, query), query)])
    charge(request, len(entries))
    nxt = (seal(ctx.sealer, "a", f"{rows[-1]['id']}-{last_id}") if len(rows) == query.limit
           else None)
    return json_response({"entries": entries, "next": nxt})


LINKS: list[tuple[str, str, str, str, dict[str, str]]] = []
