"""The hot paths (platereg.http.RequestRoute, HotRoutes): served straight from the
middleware, past the framework's router, with the same answers as every route: the
application's exception handlers, 405/OPTIONS from the framework, the access line and
metrics of the middleware around them. In process, no server."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from platereg.http import ProblemError, RequestRoute, create_app
from platereg.metrics import HTTP_DURATION
from platereg.settings import load_settings

PATH = "/v1/hot"


async def _answer(request: Request) -> Response:
    what = (await request.json())["what"]
    if what == "problem":
        raise ProblemError(404, "Not Found", "nothing here")
    if what == "crash":
        raise RuntimeError("a bug")
    # whether the framework's router was on the way (it marks the scope)
    return JSONResponse({"routed": "router" in request.scope})


@pytest.fixture(scope="module")
def app() -> FastAPI:
    app = create_app(title="t", description="t", settings=load_settings(), service="test")
    app.router.add_api_route(PATH, _answer, methods=["POST"], response_model=None,
                             route_class_override=RequestRoute)

    @app.post("/v1/plain")
    async def plain(request: Request) -> dict[str, bool]:
        return {"routed": "router" in request.scope}

    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: the server's view (the 500 is sent, then the error
    # reaches the server, which logs it)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app,
                                                           raise_app_exceptions=False),
                             base_url="http://test")


async def test_a_request_route_is_served_past_the_router(app: FastAPI) -> None:
    async with client(app) as c:
        hot = await c.post(PATH, json={"what": "ok"})
        plain = await c.post("/v1/plain", json={})
    assert hot.status_code == 200 and hot.json() == {"routed": False}
    assert plain.json() == {"routed": True}   # the check itself can tell


async def test_its_errors_get_the_applications_handlers(app: FastAPI) -> None:
    async with client(app) as c:
        missing = await c.post(PATH, json={"what": "problem"})
        crash = await c.post(PATH, json={"what": "crash"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == "nothing here"
    assert crash.status_code == 500
    assert crash.headers["content-type"] == "application/problem+json"
    assert crash.json()["title"] == "Internal Server Error"


async def test_other_methods_go_on_to_the_framework(app: FastAPI) -> None:
    async with client(app) as c:
        wrong = await c.get(PATH)
        options = await c.options(PATH)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "OPTIONS, POST"
    assert options.status_code == 204 and options.headers["allow"] == "OPTIONS, POST"


async def test_the_middleware_around_sees_its_route_template(app: FastAPI) -> None:
    def served() -> float:
        wanted = {"route": PATH, "method": "POST", "status": "200"}
        return sum(s.value for m in HTTP_DURATION.collect() for s in m.samples
                   if s.name.endswith("_count") and s.labels == wanted)

    before = served()
    async with client(app) as c:
        answer = await c.post(PATH, json={"what": "ok"})
    assert answer.headers["cache-control"] == "no-store"   # a /v1/ answer
    assert served() > before


def test_a_request_route_takes_no_path_parameters() -> None:
    with pytest.raises(ValueError, match="no path parameters"):
        RequestRoute("/v1/plates/{plate}", _answer, methods=["POST"])
