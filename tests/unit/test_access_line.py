"""The access line of an authenticated request names its API key by id (never the key
itself), on the hot path and on the framework's routes, answered or refused. In process,
no server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

import platereg.http
from platereg.http import RequestRoute, create_app
from platereg.security.auth import AuthError, Principal, authenticate_request
from platereg.settings import load_settings

KEY = "prk_k1_secret"


class _Keys:
    """An authenticator that knows one key (id ``k1``) and refuses ``prk_k2_...`` at its
    rate limit (a verified key: 429 with its id)."""

    async def authenticate(self, authorization: str | None, roles: frozenset[str]) -> Principal:
        if authorization == f"Bearer {KEY}":
            return Principal(key_id="k1", role="enforcement")
        if authorization == "Bearer prk_k2_secret":
            raise AuthError(429, "Too Many Requests", "rate limit exceeded", key_id="k2")
        raise AuthError(401, "Unauthorized", "invalid or revoked API key")

    def bucket(self, key_id: str) -> None:
        return None


async def _answer(request: Request) -> Response:
    principal = await authenticate_request(request, frozenset({"enforcement"}))
    return JSONResponse({"role": principal.role})


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = []

    class _Log:
        def info(self, event: str, **fields: Any) -> None:
            recorded.append({"event": event, **fields})

    monkeypatch.setattr(platereg.http, "log", _Log())
    return recorded


@pytest.fixture
def app() -> FastAPI:
    app = create_app(title="t", description="t", settings=load_settings(), service="test")
    app.state.authenticator = _Keys()
    app.router.add_api_route("/v1/hot", _answer, methods=["POST"], response_model=None,
                             route_class_override=RequestRoute)
    app.router.add_api_route("/v1/plain", _answer, methods=["POST"], response_model=None)
    return app


@pytest.mark.parametrize("path", ["/v1/hot", "/v1/plain"])
async def test_the_access_line_names_the_key_by_id(app: FastAPI, lines: list, path: str) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        ok = await client.post(path, headers={"Authorization": f"Bearer {KEY}"})
        limited = await client.post(path, headers={"Authorization": "Bearer prk_k2_secret"})
        unknown = await client.post(path, headers={"Authorization": "Bearer nope"})
    assert [ok.status_code, limited.status_code, unknown.status_code] == [200, 429, 401]
    assert [(line["status"], line["key_id"]) for line in lines] == [
        (200, "k1"), (429, "k2"), (401, None)]
    assert all(line["route"] == path and KEY not in str(line) for line in lines)
