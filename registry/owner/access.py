"""The owner side's per-process state and checks, shared by the JSON routes and the page.

:func:`registry.owner.app.install` plugs owners' access into the registry app: the
routers, the owner state (tokens from ``PLATEREG_OWNER_TOKEN_KEYS``, the registry
clock, getters for the app's pool and audit writer) and an ``AuthError`` handler that
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
from registry.owner.tokens import OwnerClaims, OwnerTokens, TokenExpired, TokenInvalid
from schemas.fold import today_in

OWNER_KEY_ID = "owner"  # what logs and metrics record for owner-token requests
NOT_CONFIGURED = ("owner sign-in is not configured on this server "
                  "(set PLATEREG_OWNER_TOKEN_KEYS)")


@dataclass
class OwnerAccess:
    settings: Settings
    clock: Clock
    tokens: OwnerTokens | None
    pool_of: Callable[[], Any]
    audit_of: Callable[[], Any]

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

    def audit(self, rows: list[tuple[Any, ...]]) -> None:
        """Buffer audit rows, or refuse the answer (503) when the audit log lags."""
        try:
            self.audit_of().record_many(stamped(rows))
        except AuditUnavailable:
            raise ProblemError(503, "Service Unavailable", "the audit log cannot keep up",
                               headers={"Retry-After": "5"}) from None

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
