"""The owner side's per-process state and checks, shared by the JSON routes and the page.

:func:`registry.owner.app.install` plugs owners' access into the registry app: the
routers, the owner state (tokens from ``PLATEREG_OWNER_TOKEN_KEYS``, the registry
clock, getters for the app's pool and audit writer, the per-address limit of refused
sign-in links, the jurisdictions' time zones) and an ``AuthError`` handler that
answers 403 rather than 401 when a valid owner token is used on a route for API keys.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import SecretStr

from platereg.clock import Clock
from platereg.http import ProblemError
from platereg.metrics import AUTH_FAILURES
from platereg.settings import Settings
from registry.api.audit import AuditUnavailable, stamped
from registry.owner import sessions
from registry.owner.guard import LinkLimiter, client_key
from registry.owner.tokens import OwnerClaims, OwnerTokens, TokenExpired, TokenInvalid
from registry.owner.zones import Zones
from schemas.fold import today_in

OWNER_KEY_ID = "owner"  # what logs and metrics record for owner-token requests
TOO_MANY_LINKS = ("too many sign-in links that could not be used came from this address; "
                  "try again later")
NOT_CONFIGURED = ("owner sign-in is not configured on this server "
                  "(set PLATEREG_OWNER_TOKEN_KEYS)")


@dataclass
class OwnerAccess:
    settings: Settings
    clock: Clock
    tokens: OwnerTokens | None
    pool_of: Callable[[], Any]
    audit_of: Callable[[], Any]
    links: LinkLimiter
    zones: Zones

    @classmethod
    def create(cls, settings: Settings, clock: Clock, pool_of: Callable[[], Any],
               audit_of: Callable[[], Any]) -> OwnerAccess:
        return cls(settings, clock, _make_tokens(settings, clock), pool_of, audit_of,
                   LinkLimiter(settings.owner_link_failures_per_address,
                               settings.owner_link_failure_window_minutes),
                   Zones(settings.jurisdiction_zones(), settings.tz))

    @property
    def pool(self) -> Any:
        return self.pool_of()

    def now(self) -> tuple[dt.datetime, dt.date]:
        now = self.clock.now()
        return now, today_in(self.settings.tz, now)

    def signer(self) -> OwnerTokens:
        if self.tokens is None:
            raise ProblemError(503, "Service Unavailable", NOT_CONFIGURED)
        return self.tokens

    async def audit(self, rows: list[tuple[Any, ...]]) -> None:
        """Commit audit rows, or refuse the answer (503) when they cannot be written."""
        try:
            await self.audit_of().write(stamped(rows))
        except AuditUnavailable:
            raise ProblemError(503, "Service Unavailable", "the audit log cannot keep up",
                               headers={"Retry-After": "5"}) from None

    def check_link_budget(self, request: Request) -> str:
        """The client address, once it may present a sign-in link (else 429)."""
        client = client_key(request)
        wait = self.links.wait(client)
        if wait:
            raise ProblemError(429, "Too Many Requests", TOO_MANY_LINKS,
                               headers={"Retry-After": str(wait)})
        return client

    async def claims(self, token: str) -> OwnerClaims:
        """The claims of a valid owner token with an active session, else 401."""
        try:
            claims = self.signer().verify(token)
        except TokenExpired:
            AUTH_FAILURES.labels("expired_token").inc()
            raise _unauthorized("the owner token has expired; sign in again") from None
        except TokenInvalid:
            AUTH_FAILURES.labels("unknown_key").inc()
            raise _unauthorized("invalid owner token") from None
        if not await sessions.session_active(self.pool, claims, self.clock.now()):
            AUTH_FAILURES.labels("revoked").inc()
            raise _unauthorized("this owner session has ended (signed out or expired)")
        return claims


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "Unauthorized", detail,
                        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def owner_access(request: Request) -> OwnerAccess:
    return request.app.state.owner


def _make_tokens(settings: Settings, clock: Clock) -> OwnerTokens | None:
    keys = [k.get_secret_value() if isinstance(k, SecretStr) else str(k)
            for k in settings.owner_token_keys]
    if not keys:
        return None
    return OwnerTokens(keys, settings.owner_token_minutes, lambda: clock.now().timestamp())
