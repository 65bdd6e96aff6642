"""Owner tokens and the ``/v1/me`` routes of the registry API (contract section 5).

* ``POST /v1/owner-sessions`` (portal keys): an owner token for an owner the portal
  signed in itself; ``POST /v1/owner-sessions/link`` (no key: the link is the
  credential): an owner token for a notice's one-time sign-in link. Both are
  audited (kind ``owner_session``) and limited per owner, each in its own budget
  (429 with Retry-After); refused links are limited per client address as well.
* ``/v1/me/...``: only the token's owner, whatever else the request carries (no
  route takes an owner id). Every read is audited (:func:`data.self_read_rows`).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError

from platereg.http import ProblemError, read_json, validation_errors
from platereg.security.auth import Principal, charge, limit_subject, require
from registry.api.models import (
    OwnerNotices,
    OwnerPlates,
    OwnerPreferences,
    PreferencesUpdate,
    Problem,
)
from registry.api.routes.common import BODY_ERRORS, body, errors, ok
from registry.owner import data, sessions, words
from registry.owner.access import OWNER_KEY_ID, OwnerAccess, owner_access
from registry.owner.tokens import OwnerClaims
from schemas._types import SAFE_ID_PATTERN, STRICT_INPUT

router = APIRouter(tags=["owners"])
PortalKey = Annotated[Principal, Depends(require("portal"))]

LINK_REFUSED = {
    "unknown": (401, "Unauthorized", "this sign-in link is not valid"),
    "used": (410, "Gone", "this sign-in link has already been used: each link works once. "
                          "Use the link in a newer notice, or sign in through your portal."),
    "expired": (410, "Gone", "this sign-in link has expired (links work for 14 days). "
                             "Use the link in a newer notice, or sign in through your portal."),
}


class OwnerSessionRequest(BaseModel):
    model_config = STRICT_INPUT
    owner_id: str = Field(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN)


class LinkExchangeRequest(BaseModel):
    model_config = STRICT_INPUT
    link_token: str = Field(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


class OwnerToken(BaseModel):
    token: str = Field(description="Bearer token for the /v1/me routes (`ot_...`)")
    expires_at: str = Field(description="RFC 3339; PLATEREG_OWNER_TOKEN_MINUTES (15) "
                                        "after the mint")


class AccessEntry(BaseModel):
    at: str
    key_name: str = Field(description="Name of the API key that read")
    role: str
    kind: str = Field(description="single, batch, candidates, hotlist, owner_session, ...")
    purpose: str | None
    jurisdiction: str | None = Field(description="null: a read of the owner record")
    plate: str | None


class AccessLog(BaseModel):
    owner_id: str
    entries: list[AccessEntry]


_PROBLEM = {"application/problem+json": {"schema": Problem.model_json_schema()}}
_LINK_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": _PROBLEM} for status, text in (
        (401, "Unknown sign-in link"), (410, "Sign-in link already used or expired"),
        (422, "Invalid body"), (415, "Body is not application/json"),
        (429, "Too many sign-ins for this owner, or too many refused links from this "
              "address; see Retry-After"),
        (503, "Owner sign-in not configured (PLATEREG_OWNER_TOKEN_KEYS) or the audit log "
              "cannot keep up"))}
_MINTED: dict[int | str, dict[str, Any]] = {
    201: {"model": OwnerToken, "description": "Created", "content": {
    "application/json": {"example": {"token": "ot_eyJvIjoib3duLTEyMyJ9.Z2.abc",
                                     "expires_at": "2026-11-24T15:19:05+00:00"}}}}}
_PREFS_EXAMPLE = {"owner_id": "own-123", "channels": ["email", "plate_display"],
                  "language": "fr", "updated_at": "2026-11-24T15:04:05Z"}


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


async def _body(request: Request, model: type[BaseModel]) -> Any:
    _, raw = await read_json(request)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ProblemError(422, "Unprocessable Content", "the request body is not valid",
                           errors=validation_errors(exc.errors(), model, raw)) from None


def _limited(exc: sessions.MintLimited) -> ProblemError:
    return ProblemError(429, "Too Many Requests",
                        "too many owner sign-ins for this owner; try again later",
                        headers={"Retry-After": str(exc.retry_after)})


def link_refused(access: OwnerAccess, client: str, reason: str) -> ProblemError:
    """The answer to a link that cannot be used, counted against ``client``'s budget."""
    access.links.refused(client)
    return ProblemError(*LINK_REFUSED[reason])


async def mint_from_link(access: OwnerAccess, link_token: str, client: str) -> sessions.Minted:
    """Exchange a sign-in link (audited); ProblemError 401/410/429 when refused."""
    signer = access.signer()
    now, _ = access.now()
    try:
        minted = await sessions.exchange_link(access.pool, signer, link_token,
                                              access.settings.owner_sessions_per_hour, now)
    except sessions.LinkRefused as exc:
        raise link_refused(access, client, exc.reason) from None
    except sessions.MintLimited as exc:
        raise _limited(exc) from None
    await access.audit([data.mint_row(minted.owner_id, None, now)])
    return minted


def _minted(minted: sessions.Minted) -> Response:
    return _json({"token": minted.token, "expires_at": minted.expires_at.isoformat()}, 201)


@router.post("/v1/owner-sessions", response_model=None, status_code=201,
             summary="A short-lived owner token for an owner the portal signed in itself",
             description="Audited (kind `owner_session`) and limited per owner and portal "
                         "key (PLATEREG_OWNER_PORTAL_SESSIONS_PER_HOUR, 429 with "
                         "Retry-After), apart from the owner's own sign-ins by link.",
             responses={**_MINTED, **errors(*BODY_ERRORS)},
             openapi_extra=body(OwnerSessionRequest, {"owner_id": "own-123"}))
async def post_owner_session(request: Request, principal: PortalKey) -> Response:
    access = owner_access(request)
    signer = access.signer()
    body: OwnerSessionRequest = await _body(request, OwnerSessionRequest)
    now, _ = access.now()
    try:
        minted = await sessions.mint_for_portal(access.pool, signer, body.owner_id,
                                                principal.key_id,
                                                access.settings.owner_portal_sessions_per_hour,
                                                now)
    except sessions.MintLimited as exc:
        raise _limited(exc) from None
    await access.audit([data.mint_row(body.owner_id, principal.key_id, now)])
    return _minted(minted)


@router.post("/v1/owner-sessions/link", response_model=None, status_code=201,
             summary="Exchange a notice's one-time sign-in link for an owner token",
             description="No API key: the link is the credential. 401 for an unknown link, "
                         "410 for one already used or expired. Limited per owner "
                         "(PLATEREG_OWNER_SESSIONS_PER_HOUR) and, for links that cannot be "
                         "used, per client address (PLATEREG_OWNER_LINK_FAILURES_PER_ADDRESS): "
                         "429 with Retry-After.",
             responses={**_MINTED, **_LINK_ERRORS},
             openapi_extra=body(LinkExchangeRequest, {"link_token": "x" * 43}))
async def post_link_session(request: Request) -> Response:
    access = owner_access(request)
    access.signer()
    client = access.check_link_budget(request)
    try:
        body: LinkExchangeRequest = await _body(request, LinkExchangeRequest)
    except ProblemError:
        access.links.refused(client)  # a malformed link (or body) counts as a refused one
        raise
    return _minted(await mint_from_link(access, body.link_token, client))


async def owner_claims(request: Request) -> OwnerClaims:
    """FastAPI dependency: the owner of a valid owner token (401; 403 for an API key)."""
    access = owner_access(request)
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token and not token.startswith("ot_"):
        # An API key: 401 if it is not valid, else 403 (no role may use these routes).
        await request.app.state.authenticator.authenticate(f"Bearer {token}", frozenset())
    if scheme.lower() != "bearer" or not token:
        raise ProblemError(401, "Unauthorized", "an owner token is required "
                           "(Authorization: Bearer)", headers={"WWW-Authenticate": "Bearer"})
    claims = await access.claims(token)
    request.state.key_id = OWNER_KEY_ID
    wait = limit_subject(request, f"owner-session:{claims.session_id}",
                         access.settings.owner_requests_per_second)
    if wait > 0:
        raise ProblemError(429, "Too Many Requests", "too many requests with this owner token",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})
    return claims


Owner = Annotated[OwnerClaims, Depends(owner_claims)]


async def _own_list(request: Request, access: OwnerAccess, owner_id: str, now: dt.datetime,
              record: str, items: list[Any], key: str | None = None) -> Response:
    """An owner's own list: one self-read audit row naming ``record``, charged per item,
    answered as ``{"owner_id": ..., key: items}`` (``key`` defaults to ``record``)."""
    await access.audit(data.self_read_rows(owner_id, now, record=record))
    charge(request, len(items))
    return _json({"owner_id": owner_id, key or record: items})


@router.get("/v1/me/plates", response_model=None, summary="My plates, with owner data",
            responses={**ok(OwnerPlates, {"owner_id": "own-123", "plates": []}), **errors()})
async def me_plates(request: Request, owner: Owner) -> Response:
    access = owner_access(request)
    now, today = access.now()
    views = await data.plates(access.pool, owner.owner_id, today, now)
    await access.audit(data.self_read_rows(owner.owner_id, now, views=views))
    charge(request, len(views))
    return _json({"owner_id": owner.owner_id, "plates": views})


@router.get("/v1/me/notices", response_model=None,
            summary="My notices (newest first) with every delivery attempt",
            responses={**ok(OwnerNotices, {"owner_id": "own-123", "notices": []}),
                       **errors(422)})
async def me_notices(request: Request, owner: Owner,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Response:
    access = owner_access(request)
    now, _ = access.now()
    notices = await data.notices(access.pool, owner.owner_id, limit)
    return await _own_list(request, access, owner.owner_id, now, "notices", notices)


@router.get("/v1/me/preferences", response_model=None,
            summary="My notice channels and language (null: the defaults)",
            responses={**ok(OwnerPreferences, _PREFS_EXAMPLE), **errors()})
async def me_preferences(request: Request, owner: Owner) -> Response:
    access = owner_access(request)
    now, _ = access.now()
    prefs = await data.preferences(access.pool, owner.owner_id)
    await access.audit(data.self_read_rows(owner.owner_id, now, record="preferences"))
    return _json(prefs)


@router.put("/v1/me/preferences", response_model=None,
            summary="Set my notice channels and language",
            description="Takes the body GET returns: `owner_id` (the token's own, else 422) "
                        "and `updated_at` are read-only and ignored; `channels` null is the "
                        "default. `webhook` only where PLATEREG_OWNER_WEBHOOKS allows it "
                        "(or when already chosen).",
            responses={**ok(OwnerPreferences, _PREFS_EXAMPLE), **errors(*BODY_ERRORS)},
            openapi_extra=body(PreferencesUpdate, {"channels": ["email", "plate_display"],
                                                   "language": "fr"}))
async def me_put_preferences(request: Request, owner: Owner) -> Response:
    access = owner_access(request)
    body: PreferencesUpdate = await _body(request, PreferencesUpdate)
    if body.owner_id is not None and body.owner_id != owner.owner_id:
        raise ProblemError(422, "Unprocessable Content", "the request body is not valid",
                           errors=[{"field": "owner_id",
                                    "message": "read-only: must be your own owner id"}])
    channels = [c.value for c in body.channels] if body.channels is not None else None
    if channels is not None:
        current = await data.preferences(access.pool, owner.owner_id)
        offered = words.offered_channels(access.settings.owner_webhooks, current["channels"])
        if refused := [c for c in channels if c not in offered]:
            raise ProblemError(422, "Unprocessable Content", "the request body is not valid",
                               errors=[{"field": "channels", "message": f"{c} is not offered "
                                        "to owners here"} for c in refused])
    prefs = await data.put_preferences(access.pool, owner.owner_id, channels,
                                       body.language.value if body.language else None)
    now, _ = access.now()   # the answer is the owner's record: audited like a read
    await access.audit(data.self_read_rows(owner.owner_id, now, record="preferences_update"))
    return _json(prefs)


@router.get("/v1/me/access-log", response_model=None,
            summary="Who read my plates and records: time, key name and role, purpose",
            responses={**ok(AccessLog, {"owner_id": "own-123", "entries": [{
                "at": "2026-11-24T15:04:05Z", "key_name": "Toronto Police ALPR",
                "role": "enforcement", "kind": "single", "purpose": "traffic_stop",
                "jurisdiction": "CA-ON", "plate": "ABC123"}]}), **errors(422)})
async def me_access_log(request: Request, owner: Owner,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> Response:
    access = owner_access(request)
    now, _ = access.now()
    entries = await data.access_log(access.pool, owner.owner_id, limit)
    return await _own_list(request, access, owner.owner_id, now, "access_log", entries,
                     key="entries")
