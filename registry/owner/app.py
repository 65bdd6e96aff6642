"""Wiring of the owner side into the registry app: the owner routes, the owner page, its
sign-in, the 403 for owner tokens on key routes and, with ``PLATEREG_TRUSTED_PROXIES``,
the proxies' ``X-Forwarded-For``/``-Proto`` (``install``, called by ``registry.api.app``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from platereg.clock import Clock
from platereg.http import ProblemError, problem
from platereg.metrics import AUTH_FAILURES
from platereg.security.auth import AuthError
from platereg.settings import Settings
from registry.owner import page, routes, sign_in
from registry.owner.access import OWNER_KEY_ID, OwnerAccess


def install(app: FastAPI, settings: Settings, clock: Clock, pool_of: Callable[[], Any],
            audit_of: Callable[[], Any]) -> None:
    """Add the owner routes, the owner page and the owner-token 403 to the registry app."""
    access = OwnerAccess.create(settings, clock, pool_of, audit_of)
    app.state.owner = access
    app.include_router(routes.router)
    app.include_router(page.router)
    app.include_router(sign_in.router)
    if settings.trusted_proxies:
        # The client address and scheme as a trusted proxy reports them (the sign-in
        # link limit, the cookie's Secure flag); uvicorn itself believes no proxy
        # (platereg.http_server.uvicorn_options), so nobody else can set them.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    original: Any = app.exception_handlers[AuthError]

    async def auth_error(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, AuthError)
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if exc.status == 401 and scheme.lower() == "bearer" and token.startswith("ot_"):
            try:
                await access.claims(token.strip())
            except ProblemError as refused:
                return problem(refused.status, refused.title, refused.detail, refused.headers)
            request.state.key_id = OWNER_KEY_ID
            AUTH_FAILURES.labels("forbidden").inc()
            return problem(403, "Forbidden", "an owner token may only use the /v1/me routes")
        return await original(request, exc)

    app.add_exception_handler(AuthError, auth_error)
