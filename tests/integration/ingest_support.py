"""Helpers of the ingest tests: an in-process ingest server, reading a topic back, events."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from devtools.embedded import free_port
from ingest.api import create_ingest_app
from platereg.http_server import uvicorn_options
from platereg.settings import Settings


def issued(subject: str = "CA-ON/ABC123", *, id: str | None = None,
           time: str = "2026-01-05T15:04:05Z", name: str = "Jane Doe") -> dict[str, Any]:
    return {
        "specversion": "1.0", "id": id or str(uuid.uuid4()),
        "source": "/registry/serviceontario/office/0042", "type": "plate.issued", "time": time,
        "subject": subject, "datacontenttype": "application/json",
        "data": {"plate_class": "passenger", "expires_on": "2027-11-30",
                 "vehicle": {"vin": "2HGFC2F59JH123456", "make": "Honda", "model": "Civic",
                             "year": 2019, "colour": "blue"},
                 "owner": {"owner_id": "own-1", "name": name, "email": "jane@example.org",
                           "language": "en"}},
    }


def renewed(subject: str = "CA-ON/ABC123", *, id: str | None = None,
            expires_on: str = "2028-11-30") -> dict[str, Any]:
    return {"specversion": "1.0", "id": id or str(uuid.uuid4()),
            "source": "/registry/serviceontario/office/0042", "type": "plate.renewed",
            "time": "2026-02-01T10:00:00-05:00", "subject": subject,
            "data": {"expires_on": expires_on}}


@contextlib.asynccontextmanager
async def ingest_server(settings: Settings) -> AsyncIterator[str]:
    """The real ingest app under uvicorn on a free port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_ingest_app(settings), host="127.0.0.1", port=port,
                            lifespan="on", **uvicorn_options(settings))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(600):
            if server.started:
                break
            if task.done():
                task.result()
                raise RuntimeError("the ingest server stopped during start-up")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the ingest server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)




def header(record: Any, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return value
    return None
