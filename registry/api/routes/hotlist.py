"""The hotlist route of the registry API (paging rules in ``registry.api.hotlist``).

Audit and ``platereg_lookups_total``: one row and one count per entry returned.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from platereg.http import ProblemError
from platereg.replicas import ReplicaBehind
from platereg.security.auth import charge
from registry.api import lookups
from registry.api.hotlist import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
    InvalidCursor,
    change_entry,
    current_entry,
    decode_cursor,
    delta_cursor,
    full_cursor,
)
from registry.api.routes.common import (
    CURSOR_PATTERN,
    VIEW_EXAMPLE,
    ApiContext,
    EnforcementKey,
    Reading,
    count,
    ctx_of,
    errors,
    json_response,
    ok,
    view_of,
)
from schemas.views import CASE_REF_PATTERN, Hotlist, Purpose

router = APIRouter(tags=["hotlist"])

_DESCRIPTION = (
    "Without `since`: the plates whose status is not `valid` now, `limit` per "
    "page in plate-key order; keep passing `next` as `since`. After the last "
    "page `next` switches to changes: every status change after the snapshot "
    "for a plate entering, leaving (`removed: true`) or changing inside a "
    "flagged status, oldest first. Apply entries in order (upsert, or delete "
    "when removed). The cursor is opaque (sealed: it reveals no plate). `purpose` (and "
    "`case_ref`) are query parameters here: they are not personal data.")
_EXAMPLE = {"entries": [{**VIEW_EXAMPLE, "removed": False}], "next": "ZDo0Mg"}


@router.get("/v1/hotlist", response_model=None,
            summary="Flagged plates: the full list, then changes since a cursor",
            description=_DESCRIPTION, responses={**ok(Hotlist, _EXAMPLE), **errors(400, 422)})
async def get_hotlist(request: Request, principal: EnforcementKey,
                      purpose: Annotated[Purpose, Query(description="Why (audited)")],
                      case_ref: Annotated[str | None, Query(
                          pattern=CASE_REF_PATTERN, max_length=64,
                          description="The case or ticket (audited)")] = None,
                      since: Annotated[str | None, Query(
                          max_length=200, pattern=CURSOR_PATTERN,
                          description="Opaque cursor (`next`)")] = None,
                      limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT) -> Response:
    ctx = ctx_of(request)
    try:
        cursor = decode_cursor(since, ctx.sealer) if since is not None else None
    except InvalidCursor:
        raise ProblemError(400, "Bad Request", "malformed cursor") from None
    if cursor is None or cursor.full:
        entries, nxt = await _full_page(ctx, cursor, limit)
    else:
        rows, _, _ = await ctx.read(
            lambda pool: lookups.hotlist_changes(pool, cursor.seq, limit))
        entries = [e for r in rows
                   if (e := change_entry(r["view"], r["flagged"], r["was_flagged"]))
                   is not None]
        nxt = delta_cursor(rows[-1]["seq"] if rows else cursor.seq).encode(ctx.sealer)
    who = Reading(ctx.clock.now(), principal.key_id, purpose.value, case_ref)
    # Every hotlist read is audited: one row per entry, or one saying it was empty.
    await ctx.audit([who.read("hotlist", e["jurisdiction"], e["plate"], e["status"])
               for e in entries] or [who.read("hotlist", None, None, "empty")])
    charge(request, len(entries))
    count("hotlist", purpose.value, len(entries))
    return json_response({"entries": entries, "next": nxt})


async def _full_page(ctx: ApiContext, cursor: Cursor | None,
                     limit: int) -> tuple[list[dict[str, Any]], str]:
    """One page of the plates flagged now, and the cursor after it. The snapshot (the
    last status change the full list includes) and the page come from one server; a
    later page is read where that snapshot is replayed already (a read replica behind
    it leaves the page to the primary), so the changes after it miss nothing."""
    _, day = ctx.now()

    async def page(pool: Any) -> tuple[int, list[Any]]:
        if cursor is None:
            snapshot, after_key = await lookups.max_status_seq(pool), None
        else:
            snapshot, after_key = cursor.seq, cursor.after_key
            if pool is not ctx.pool and await lookups.max_status_seq(pool) < snapshot:
                raise ReplicaBehind
        return snapshot, await lookups.flagged_plates(pool, after_key, day, limit)

    (snapshot, rows), as_of, _ = await ctx.read(page)
    entries = [current_entry(view_of(r, False, day, as_of)) for r in rows]
    nxt = (full_cursor(snapshot, rows[-1]["plate_key"]) if len(rows) == limit
           else delta_cursor(snapshot))
    return entries, nxt.encode(ctx.sealer)


LINKS: list[tuple[str, str, str, str, dict[str, str]]] = [
    ("GET /v1/hotlist", "NextPage", "GET /v1/hotlist", "next page or changes (the same "
     "purpose)", {"since": "$response.body#/next", "purpose": "$request.query.purpose"}),
]
