"""The registry HTTP API (contract section 5): the app, its lifespan and OpenAPI document.

The routes live in ``registry.api.routes`` (one router per resource: plates,
hotlist, owners, audit; shared parts in ``registry.api.routes.common``):

* Views come from ``registry.domain`` (one place for the status rules),
  derived at request time in ``PLATEREG_TIMEZONE``.
* Enforcement keys get the enforcement view, read with ``NULL AS owner``;
  ``portal`` and ``operator`` keys get ``owner`` as well.
* Plates, views, the hotlist and history are read through ``ApiContext.read``: on a
  read replica within ``PLATEREG_REPLICA_MAX_LAG_SECONDS`` (``platereg.replicas``; a
  view's ``as_of`` is then the replica's replay time), else on the primary. Audit rows,
  keys, owners and the audit query use the primary.
* Every plate answered is audited through :class:`registry.api.audit.AuditWriter`
  (committed before the answer, concurrent reads' rows in shared statements; one typed
  :class:`registry.api.routes.common.Read` per row) and counted in
  ``platereg_lookups_total``.
* Bodies are parsed by the routes, not by FastAPI, with the strict reader shared
  with the ingest API (``platereg.http.read_json``): a content type other than
  ``application/json`` (charset UTF-8 only) is 415, malformed JSON (repeated
  keys, deep nesting) is 400 and schema violations are 422, all as
  problem+json without echoing the input.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from platereg.clock import Clock
from platereg.db import create_pool, ping
from platereg.http import add_probes, create_app
from platereg.http_server import settle_heap
from platereg.kafka import broker_reachable
from platereg.logging import configure_logging
from platereg.metrics import REGISTRY_API
from platereg.replicas import ReadPools
from platereg.security.auth import Authenticator
from platereg.settings import Settings, load_settings
from registry.api import landing
from registry.api.audit import start_writer
from registry.api.routes import audit, hotlist, owners, plates
from registry.api.routes.common import (
    CURSOR_PATTERN,
    EXTRA_SCHEMAS,
    RAW_JURISDICTION_PATTERN,
    RAW_PLATE_PATTERN,
    ApiContext,
)
from registry.owner.app import install as install_owner_access

__all__ = ["CURSOR_PATTERN", "RAW_JURISDICTION_PATTERN", "RAW_PLATE_PATTERN",
           "create_registry_app", "app_from_env"]

_ROUTERS = (plates, hotlist, owners, audit)


def _add_links(schema: dict[str, Any]) -> None:
    """OpenAPI links (which answer feeds which request) declared beside each router."""
    def operation(label: str) -> dict[str, Any]:
        method, path = label.split(" ")
        return schema["paths"][path][method.lower()]

    for module in _ROUTERS:
        for source, name, target, description, parameters in module.LINKS:
            response = operation(source)["responses"]["200"]
            response.setdefault("links", {})[name] = {
                "operationId": operation(target)["operationId"], "description": description,
                "parameters": parameters}


async def _keep_session(conn: Any) -> None:
    """Pool ``reset`` hook: skip asyncpg's per-release reset round trip.

    This API leaves no session state behind (no LISTEN, no SET, no open
    cursors), so the default
    ``RESET ALL; CLOSE ALL; UNLISTEN *; pg_advisory_unlock_all()`` on every
    release would only add a round trip to each lookup.
    """


def create_registry_app(settings: Settings | None = None, *,
                        clock: Clock | None = None) -> FastAPI:
    """The registry API; ``clock`` (default: the settings' clock) gives "now" and the
    registry's "today"."""
    settings = settings or load_settings()
    ctx = ApiContext(settings, clock or Clock.from_settings(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.pool = await create_pool(settings.dsn(), min_size=settings.db_pool_min,
                                     max_size=settings.db_pool_max, reset=_keep_session)
        app.state.pool = ctx.pool
        ctx.reads = app.state.reads = ReadPools(
            ctx.pool, settings.read_dsns(), max_lag=settings.replica_max_lag_seconds,
            check_every=settings.replica_check_seconds, min_size=settings.db_pool_min,
            max_size=settings.db_pool_max, reset=_keep_session)
        await ctx.reads.start()
        app.state.authenticator = Authenticator.from_settings(ctx.pool, settings)
        ctx.audit_writer = app.state.audit = await start_writer(ctx.pool, settings)
        settle_heap()
        try:
            yield
        finally:
            await ctx.audit_writer.stop()
            await ctx.reads.close()
            await ctx.pool.close()

    app = create_app(
        title="Plate Registry API",
        description=(
            "Audited plate lookups for enforcement, owners' views and the hotlist "
            "(contract section 5). Every route except the probes needs "
            "`Authorization: Bearer <api key>`. Errors are `application/problem+json`."),
        settings=settings, lifespan=lifespan, service="registry-api")
    app.state.ctx = ctx
    plates.add_query_route(app)   # the hot path (served by platereg.http.HotRoutes)
    add_probes(app, {"postgres": lambda: ping(ctx.pool),
                     "kafka": lambda: broker_reachable(settings),
                     "audit": ctx.audit_keeping_up}, metrics=REGISTRY_API)
    for module in _ROUTERS:
        app.include_router(module.router)
    app.include_router(landing.router)
    install_owner_access(app, settings, ctx.clock, lambda: ctx.pool, lambda: ctx.audit_writer)

    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in EXTRA_SCHEMAS.items():
                components.setdefault(name, definition)
            _add_links(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``--factory``): settings and logging from PLATEREG_* variables."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_registry_app(settings.for_role("registry_api"))
