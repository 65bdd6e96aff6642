"""What both HTTP APIs share: problem+json errors, probes, metrics and safe logging.

* Errors are RFC 9457 ``application/problem+json``; validation errors list
  field locations and messages but never echo the input (it may be a plate).
* ``/healthz`` (process up), ``/readyz`` (PostgreSQL and Kafka reachable),
  ``/metrics`` (Prometheus) need no key.
* One pure-ASGI middleware times each request into
  ``platereg_http_request_duration_seconds`` labelled by route *template*,
  logs template, method, status and key id (never the raw path, query or
  body), and refuses bodies over ``PLATEREG_MAX_BODY_BYTES`` with 413.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from platereg.auth import AuthError
from platereg.logging import get_logger
from platereg.metrics import HTTP_DURATION

log = get_logger("platereg.http")

PROBLEM_JSON = "application/problem+json"
UNMATCHED = "unmatched"
ReadinessCheck = Callable[[], Awaitable[bool]]


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


def validation_errors(errors: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Pydantic errors without their input values (which may be personal data)."""
    out = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        out.append({"field": loc or "body", "message": str(err.get("msg", "invalid"))})
    return out[:50]


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> Response:
        return problem(exc.status, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> Response:
        return problem(exc.status, exc.title, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) and exc.status_code != 404 else None
        return problem(exc.status_code, title, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return problem(422, "Unprocessable Content", "the request is not valid",
                       errors=validation_errors(exc.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.error("unhandled error", error_type=type(exc).__name__)
        return problem(500, "Internal Server Error", "an unexpected error occurred")


class ObservabilityMiddleware:
    """Metrics, privacy-safe access log and body size limit, in one ASGI layer."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, service: str) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_holder = {"status": 500}
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                too_big = True
            if too_big:
                await self._reject_too_large(scope, receive, send, start)
                return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            status_holder["status"] = 413
            await self._reject_too_large(scope, receive, send, start, observe=False)
            return
        finally:
            self._observe(scope, status_holder["status"], start)

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
        HTTP_DURATION.labels(template, scope["method"], str(status)).observe(elapsed)
        if template not in ("/metrics", "/healthz", "/readyz"):
            key_id = (scope.get("state") or {}).get("key_id")
            log.info("request", route=template, method=scope["method"], status=status,
                     key_id=key_id, ms=round(elapsed * 1000, 2))


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


def add_probes(app: FastAPI, checks: dict[str, ReadinessCheck]) -> None:
    """/healthz, /readyz (every check must pass) and /metrics, without auth."""

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="PostgreSQL and Kafka are reachable",
             responses={503: {"description": "a dependency is unreachable"}})
    async def readyz() -> Response:
        results = {name: await check() for name, check in checks.items()}
        ready = all(results.values())
        body = {"status": "ready" if ready else "not ready",
                "checks": {k: "ok" if v else "unreachable" for k, v in results.items()}}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(*, title: str, description: str, version: str = "1.0.0",
               max_body_bytes: int, lifespan: Any = None, service: str) -> FastAPI:
    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan,
                  docs_url="/docs", openapi_url="/openapi.json", redoc_url=None)
    install_problem_handlers(app)
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=max_body_bytes, service=service)
    return app


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid or revoked API key (problem+json)"},
    403: {"description": "The key's role may not use this route (problem+json)"},
    429: {"description": "Rate limit exceeded; see Retry-After (problem+json)"},
}
