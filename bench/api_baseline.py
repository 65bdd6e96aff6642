"""Baseline for bench_api: a bare Starlette + asyncpg endpoint running the registry API's
single-lookup query, with no auth, audit, validation, metrics or logging.

Like for like with the API it is compared to: the same pool size
(``PLATEREG_DB_POOL_MIN`` / ``PLATEREG_DB_POOL_MAX``), the same connection codecs
(``platereg.db.init_connection``: jsonb as Python objects, aware timestamps), no
reset query on release (the API skips it too) and the same uvicorn worker count
(set by the bench). It answers both shapes of the single lookup: ``GET
/v1/plates/{jurisdiction}/{plate}`` and ``POST /v1/plates/query`` with a JSON body.

Run with ``uvicorn bench.api_baseline:app`` and ``PLATEREG_DATABASE_URL`` set.
"""

from __future__ import annotations

import contextlib
import os

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from platereg.db import init_connection
from registry.api.lookups import _PLATE  # the very statement the API runs for enforcement keys

SQL = _PLATE[False]


async def _no_reset(_: asyncpg.Connection) -> None:
    """The API's pool skips asyncpg's per-release reset query; so does the baseline."""


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    app.state.pool = await asyncpg.create_pool(
        os.environ["PLATEREG_DATABASE_URL"],
        min_size=int(os.environ.get("PLATEREG_DB_POOL_MIN", "2")),
        max_size=int(os.environ.get("PLATEREG_DB_POOL_MAX", "10")),
        init=init_connection, reset=_no_reset)
    yield
    await app.state.pool.close()


async def _answer(request, key: str) -> Response:
    row = await request.app.state.pool.fetchrow(SQL, key)
    if row is None:
        return Response(b'{"status":404}', status_code=404, media_type="application/json")
    return Response(orjson.dumps(dict(row), default=str), media_type="application/json")


async def lookup(request):
    return await _answer(
        request, f"{request.path_params['jurisdiction']}/{request.path_params['plate']}")


async def query(request):
    body = orjson.loads(await request.body())
    return await _answer(request, f"{body['jurisdiction']}/{body['plate']}")


app = Starlette(routes=[Route("/v1/plates/{jurisdiction}/{plate}", lookup),
                        Route("/v1/plates/query", query, methods=["POST"])],
                lifespan=lifespan)
