"""What both HTTP APIs share: problem+json errors, probes, metrics and safe logging.

* Errors are RFC 9457 ``application/problem+json``; validation errors list
  field locations and messages but never echo the input (it may be a plate).
  PostgreSQL out of resources (a full disk, memory, connections) is 503 with
  ``Retry-After``, not 500: it passes.
* ``/healthz`` (process up), ``/readyz`` (PostgreSQL and Kafka reachable),
  ``/metrics`` (Prometheus) need no key.
* One pure-ASGI middleware times each request into
  ``platereg_http_request_duration_seconds`` labelled by route *template*,
  logs template, method, status and key id (never the raw path, query or
  body), and guards the process against hostile or broken clients:

  - bodies over ``PLATEREG_MAX_BODY_BYTES``: 413;
  - a body not received within ``PLATEREG_HTTP_BODY_TIMEOUT_SECONDS``: 408
    and the connection is closed;
  - a client that disconnects mid-request: nothing is answered, one access
    line with status 499 is logged (a normal event, never a traceback);
  - more than ``PLATEREG_HTTP_MAX_CONCURRENT_REQUESTS`` requests in progress:
    503 with ``Retry-After`` at once (the probes are not counted or refused).

  It also marks every answer that may hold plate or owner data (the ``/v1/`` routes
  and the owner page: :func:`holds_personal_data`) ``Cache-Control: no-store``.

* One strict JSON body reader for both APIs (:func:`read_json`): exact media
  types, ``charset`` only UTF-8, no repeated keys, bounded nesting.
* Wrong methods get 405 with the ``Allow`` of every route on that path;
  ``OPTIONS`` gets 204 with the same ``Allow``.
* The OpenAPI documents mark every route except the probes and the docs as
  needing the bearer key (:func:`document_security`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from platereg.api_docs import install_docs
from platereg.logging import get_logger
from platereg.metrics import HTTP_DURATION, exposition
from platereg.metrics import exported as metrics_registry
from platereg.security.auth import AuthError, RateLimitHeadersMiddleware
from platereg.settings import Settings
from schemas.validation import Rejection, decode_json, property_names

log = get_logger("platereg.http")

PROBLEM_JSON = "application/problem+json"
UNMATCHED = "unmatched"
#: Routes that need no key, are not counted against the request cap and are not logged.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
PUBLIC_PATHS = PROBES | {"/openapi.json", "/docs",
                          "/v1/owner-sessions/link"}  # the link is the credential
CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection first"
ReadinessCheck = Callable[[], Awaitable[bool | str]]


class ProblemResponse(Response):
    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem(status: int, title: str, detail: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> ProblemResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return ProblemResponse(body, status_code=status, headers=headers)


class ProblemError(Exception):
    """Raise from a route to answer with a problem response."""

    def __init__(self, status: int, title: str, detail: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        self.headers, self.extra = headers, extra


def validation_errors(errors: Iterable[Mapping[str, Any]], model: type[BaseModel] | None = None,
                      data: Any = None) -> list[dict[str, str]]:
    """Pydantic errors without anything the client wrote (values or unknown key names).

    A location part is shown when it is an index or a name the API itself defines
    (a field of ``model``, or a parameter location such as ``query.limit`` when no
    model is given); any other name is the client's text and becomes ``*``. An
    unknown key is reported on its object with its position, never its name.
    """
    known = _field_names(model) if model is not None else None
    out = []
    for err in errors:
        loc = [p for p in err.get("loc", ()) if p != "body"]
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden" and loc:
            *loc, unknown = loc
            position = _key_position(data, loc, unknown)
            message = ("unexpected key" if position is None
                       else f"unexpected key (key number {position} of this object)")
        parts = [str(p) if isinstance(p, int) or known is None or p in known else "*"
                 for p in loc]
        out.append({"field": ".".join(parts) or "body", "message": message})
    return out[:50]


def _field_names(model: type[BaseModel]) -> frozenset[str]:
    """Every property name in the model's JSON schema, nested models included."""
    return property_names(model.model_json_schema())


def _key_position(data: Any, loc: list[Any], key: Any) -> int | None:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(data, dict):
        for i, name in enumerate(data, 1):
            if name == key:
                return i
    return None


# --------------------------------------------------------------------------- bodies


def content_type(header: str | None, accepted: Iterable[str]) -> str:
    """The media type of a ``Content-Type`` header, or a 415 problem.

    The type must be one of ``accepted`` exactly (any case, no ``+json`` guessing);
    a ``charset`` parameter must be UTF-8 (other parameters do not change the
    decoding and are ignored).
    """
    allowed = tuple(accepted)
    if not header:
        raise ProblemError(415, "Unsupported Media Type",
                           f"send Content-Type: {' or '.join(allowed)}")
    kind, *params = (part.strip() for part in header[:200].split(";"))
    kind = kind.lower()
    if kind not in allowed:
        raise ProblemError(415, "Unsupported Media Type", f"supported: {', '.join(allowed)}")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                "utf-8", "utf8"):
            raise ProblemError(415, "Unsupported Media Type", "the charset must be utf-8")
    return kind


def decode_body(raw: bytes) -> Any:
    """Strict JSON (UTF-8, no NaN, no repeated key, bounded nesting), or a 400 problem."""
    try:
        return decode_json(raw)
    except Rejection as exc:
        raise ProblemError(400, "Bad Request", f"the body is not acceptable JSON: {exc.detail}",
                           reason=exc.reason.value) from None


async def read_json(request: Request, accepted: Iterable[str] = ("application/json",)
                    ) -> tuple[str, Any]:
    """The media type and the strictly decoded JSON body of a request (415 / 400 problems)."""
    kind = content_type(request.headers.get("content-type"), accepted)
    return kind, decode_body(await _body(request.receive))


async def _body(receive: Receive) -> bytes:
    """The request body from the ASGI messages (what ``Request.body()`` reads, without its
    stream generator: read once, by :func:`read_json`)."""
    message = await receive()
    chunks = []
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        message = await receive()


# --------------------------------------------------------------------------- handlers


def allowed_methods(app: Any, scope: Scope) -> str:
    """The ``Allow`` header for a path: the methods of every route that matches it."""
    methods = {"OPTIONS"}
    # Asked per method through the public ``matches`` (FULL: path and method match), so
    # routes of included routers count too.
    for method in ("DELETE", "GET", "PATCH", "POST", "PUT"):
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            methods.add(method)
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> Response:
        return problem(exc.status, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> Response:
        if exc.key_id is not None:  # 403 and 429: a verified key, logged with the request
            request.state.key_id = exc.key_id
        return problem(exc.status, exc.title, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {"Allow": allowed_methods(request.app, request.scope)}
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=headers)
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) and exc.status_code != 404 else None
        return problem(exc.status_code, title, detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return problem(422, "Unprocessable Content", "the request is not valid",
                       errors=validation_errors(exc.errors()))

    @app.exception_handler(asyncpg.InsufficientResourcesError)
    async def _out_of_resources(_: Request, exc: asyncpg.InsufficientResourcesError
                                ) -> Response:
        # PostgreSQL out of disk (a full data directory), memory or connections: a
        # condition that passes, not a bug; the client retries.
        log.warning("database out of resources", error_type=type(exc).__name__)
        return problem(503, "Service Unavailable", "the database cannot take writes now; "
                       "retry shortly", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.error("unhandled error", error_type=type(exc).__name__)
        return problem(500, "Internal Server Error", "an unexpected error occurred")


class RequestRoute(APIRoute):
    """A route whose endpoint takes the request alone and returns its response, for the
    hot paths: no dependency solving and no response serialisation; the endpoint reads,
    validates and answers itself. Its exceptions get the application's own handlers (the
    same problem answers as every route; an unexpected one goes on to the 500 handler). It
    is still an ``APIRoute``, so its OpenAPI operation is declared as any other route's.
    Add it to the application's own router (``app.router.add_api_route(...,
    route_class_override=RequestRoute)``), where :class:`HotRoutes` serves it; it has no
    path parameters (matched by its exact path). Why: docs/benchmarks.md."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.param_convertors:
            raise ValueError(f"a RequestRoute has no path parameters: {path}")
        self.answer: Callable[[Request], Awaitable[Response]] = endpoint
        self.app = self.serve

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self.answer(request)
        except Exception as exc:
            handler = exception_handler(scope["app"], exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def exception_handler(app: FastAPI, exc: Exception) -> Callable[..., Any] | None:
    """``app``'s handler of ``exc`` by its class (nearest first), as Starlette's exception
    middleware picks it; not the one of ``Exception`` itself, which answers 500 from the
    outermost layer and lets the error reach the server's log."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler
    return None


class HotRoutes:
    """Serves ``application``'s :class:`RequestRoute` routes, matched by exact path and
    method in a dictionary, straight to the route: none of the layers the framework keeps
    for every other route (its walk of the route list, its exception middleware, the exit
    stack kept for dependencies with ``yield``). The innermost of the middlewares, so the
    guards, metrics and headers of the ones around it apply to these routes as to all.
    Anything else (another method on the same path, OPTIONS) goes on to the framework.
    Why: docs/benchmarks.md."""

    def __init__(self, app: ASGIApp, *, application: FastAPI) -> None:
        self.app = app
        # built with the middleware stack, at the first request: every route is added
        self.routes = {route.path: route for route in application.router.routes
                       if isinstance(route, RequestRoute)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] not in (route.methods or ()):
            await self.app(scope, receive, send)
            return
        # what the router's match would put in the scope (the access line's route template)
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, {}
        await route.app(scope, receive, send)


class ObservabilityMiddleware:
    """Metrics, privacy-safe access log and the guards against hostile clients (one layer)."""

    def __init__(self, app: ASGIApp, *, settings: Settings, service: str) -> None:
        self.app = app
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout = settings.http_body_timeout_seconds
        self.deadlines = BodyDeadlines(tick=min(1.0, self.body_timeout / 10))
        self.max_in_flight = settings.http_max_concurrent_requests
        self.in_flight = 0
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        if scope["path"] in PROBES:
            await self._serve(scope, receive, send, start)
            return
        if self.in_flight >= self.max_in_flight:
            await self._refuse(scope, receive, send, start, problem(
                503, "Service Unavailable", "too many requests in progress; retry shortly",
                headers={"Retry-After": "1"}))
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                too_big = True
            if too_big:
                await self._reject_too_large(scope, receive, send, start)
                return
        self.in_flight += 1
        try:
            await self._serve(scope, receive, send, start)
        finally:
            self.in_flight -= 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send, start: float) -> None:
        status_holder = {"status": 500}
        received = 0
        body_done = False
        deadline: float | None = None

        async def guarded_receive() -> Message:
            nonlocal received, body_done, deadline
            if body_done:  # after the body: only the wait for a disconnect, unbounded
                return await receive()
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.body_timeout
            message = await self.deadlines.receive(receive, deadline)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        private = holds_personal_data(scope["path"])

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = message.get("headers", ())
                if private and not any(k == NO_STORE[0] for k, _ in headers):
                    message = {**message, "headers": [*headers, NO_STORE]}
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except _BodyTooLarge:
            status_holder["status"] = 413
            await self._reject_too_large(scope, receive, send, start, observe=False)
        except _BodyTimeout:
            status_holder["status"] = 408
            response = problem(408, "Request Timeout",
                               f"the body did not arrive within {self.body_timeout:g} s")
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
        except ClientDisconnect:
            status_holder["status"] = CLIENT_CLOSED  # nobody to answer; one access line
        finally:
            self._observe(scope, status_holder["status"], start)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, start: float,
                      response: Response) -> None:
        await response(scope, receive, send)
        self._observe(scope, response.status_code, start)

    async def _reject_too_large(self, scope: Scope, receive: Receive, send: Send, start: float,
                                observe: bool = True) -> None:
        # Read (and drop) what the client is still sending, within bounds: closing
        # a connection with unread data makes the kernel reset it, and the client
        # would see a connection error instead of this 413.
        await _drain(receive)
        response = problem(413, "Content Too Large",
                           f"the body exceeds {self.max_body_bytes} bytes")
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
        if observe:
            self._observe(scope, 413, start)

    def _observe(self, scope: Scope, status: int, start: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED
        elapsed = time.perf_counter() - start
        _duration(template, scope["method"], status).observe(elapsed)
        if template not in PROBES:
            key_id = (scope.get("state") or {}).get("key_id")
            log.info("request", route=template, method=scope["method"], status=status,
                            key_id=key_id, ms=round(elapsed * 1000, 2))


@functools.lru_cache(maxsize=1024)
def _duration(route: str, method: str, status: int) -> Any:
    """The duration histogram's child of a route template, method and status, looked up
    once (``labels`` builds and locks on every call)."""
    return HTTP_DURATION.labels(route, method, str(status))


#: Answers with plate or owner data are never stored by a browser or a proxy.
NO_STORE = (b"cache-control", b"no-store")
#: Paths whose answers may hold plate or owner data: every API route and the owner page
#: (its static files excepted); not the probes, metrics, docs or landing page.
PERSONAL_DATA_PREFIXES = ("/v1/", "/owner")


def holds_personal_data(path: str) -> bool:
    """Whether answers to ``path`` carry ``Cache-Control: no-store``."""
    return path.startswith(PERSONAL_DATA_PREFIXES) and not path.startswith("/owner/static/")


class _BodyTimeout(Exception):
    pass


class BodyDeadlines:
    """The body deadlines of the requests waiting for their bodies, kept by one timer.

    A request waiting in ``receive`` for its body is one entry here; one loop timer, armed
    while any request waits, cancels those past their deadline every ``tick`` seconds (so a
    deadline fires up to ``tick`` late), and their ``receive`` raises ``_BodyTimeout``.
    Why not ``asyncio.timeout_at`` around each ``receive``: it schedules and cancels a timer
    handle per request, several times the cost of this (docs/benchmarks.md)."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    async def receive(self, receive: Receive, deadline: float) -> Message:
        """``receive()``, or ``_BodyTimeout`` once the loop's time passes ``deadline``."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        if self._timer_loop is not loop:
            self._timer_loop = loop
            loop.call_at(loop.time() + self.tick, self._sweep, loop)
        self._waiting[task] = deadline
        try:
            return await receive()
        except asyncio.CancelledError:
            if task in self._expired and task.uncancel() == 0:
                raise _BodyTimeout from None
            raise
        finally:
            del self._waiting[task]
            self._expired.discard(task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel the waits past their deadline; again in ``tick`` while any request waits."""
        if self._timer_loop is not loop:
            return
        now = loop.time()
        for task, deadline in self._waiting.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        if self._waiting:
            loop.call_at(now + self.tick, self._sweep, loop)
        else:
            self._timer_loop = None


class _BodyTooLarge(Exception):
    pass


DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_MAX_SECONDS = 5.0


async def _drain(receive: Receive) -> None:
    """Discard the rest of a request body: at most DRAIN_MAX_BYTES / DRAIN_MAX_SECONDS."""
    drained = 0
    try:
        async with asyncio.timeout(DRAIN_MAX_SECONDS):
            while drained < DRAIN_MAX_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return


def add_probes(app: FastAPI, checks: dict[str, ReadinessCheck], *,
               metrics: Iterable[Collector]) -> None:
    """/healthz, /readyz (every check must pass) and /metrics (the ``metrics`` families this
    API moves, see :func:`platereg.metrics.exported`), without auth."""
    exported = metrics_registry(metrics)

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="PostgreSQL and Kafka are reachable",
             responses={503: {"description": "a dependency is unreachable"}})
    async def readyz() -> Response:
        # A check answers True (ok), False (unreachable) or why it is not ready.
        results = {name: await check() for name, check in checks.items()}
        ready = all(v is True for v in results.values())
        body = {"status": "ready" if ready else "not ready",
                "checks": {k: "ok" if v is True else (v or "unreachable")
                           for k, v in results.items()}}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response, name="metrics")
    async def metrics_page() -> Response:
        return Response(exposition(exported), media_type=CONTENT_TYPE_LATEST)


#: FastAPI's native OpenTelemetry instrumentation, off: this project exports Prometheus
#: metrics (:mod:`platereg.metrics`) and configures no OpenTelemetry provider, and with the
#: instrumentation on FastAPI looks the global providers up on every request. Why:
#: docs/benchmarks.md.
NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(*, title: str, description: str, version: str = "1.0.0",
               settings: Settings, lifespan: Any = None, service: str) -> FastAPI:
    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan,
                  docs_url=None, openapi_url="/openapi.json", redoc_url=None,
                  telemetry=NO_OPENTELEMETRY)
    install_docs(app)   # Swagger UI from the package itself, not from a CDN
    install_problem_handlers(app)
    app.add_middleware(HotRoutes, application=app)   # innermost: see the class
    app.add_middleware(ObservabilityMiddleware, settings=settings, service=service)
    # Outermost, so that answers made by the layer above (408 after auth) get them too.
    app.add_middleware(RateLimitHeadersMiddleware)
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_security(base_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def document_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Mark every operation outside :data:`PUBLIC_PATHS` as needing the bearer key."""
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "prk_<key id>_<secret>"}}
    schema.pop("security", None)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if isinstance(operation, dict):
                if path in PUBLIC_PATHS:
                    operation.pop("security", None)
                else:
                    operation["security"] = [{"bearer": []}]
    return schema


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid or revoked API key (problem+json)"},
    403: {"description": "The key's role may not use this route (problem+json)"},
    429: {"description": "Rate limit exceeded; see Retry-After (problem+json)"},
}
