"""Baseline for bench_api: a bare Starlette + asyncpg endpoint running the registry API's
single-lookup query, with no auth, audit, validation, metrics or logging.

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

from registry.lookups import _PLATE  # the very statement the API runs for enforcement keys

SQL = _PLATE[False]


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    app.state.pool = await asyncpg.create_pool(os.environ["PLATEREG_DATABASE_URL"],
                                               min_size=2, max_size=10)
    yield
    await app.state.pool.close()


async def lookup(request):
    key = f"{request.path_params['jurisdiction']}/{request.path_params['plate']}"
    row = await request.app.state.pool.fetchrow(SQL, key)
    if row is None:
        return Response(b'{"status":404}', status_code=404, media_type="application/json")
    return Response(orjson.dumps(dict(row), default=str), media_type="application/json")


app = Starlette(routes=[Route("/v1/plates/{jurisdiction}/{plate}", lookup)], lifespan=lifespan)
