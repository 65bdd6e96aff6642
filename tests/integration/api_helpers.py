"""Helpers for the registry API tests: plates inserted with SQL, an app with its lifespan,
keys per role, a served process on a free port."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from cli_support import PLATEREG
from fastapi import FastAPI

from devtools.embedded import free_port, stop_process
from platereg.clock import Clock
from platereg.security.keys import create_key
from platereg.settings import Settings
from registry.api.app import create_registry_app

ROLES = ("enforcement", "portal", "operator", "ingest")
OWNER_FIELDS = ("owner", "owner_id", "name", "email", "phone")


def owner(owner_id: str, name: str = "Jane Doe", **extra: Any) -> dict[str, Any]:
    return {"owner_id": owner_id, "name": name, "email": f"{owner_id}@example.org",
            "phone": "+15551234567", "language": "en", **extra}


async def insert_plate(pool: asyncpg.Pool | asyncpg.Connection, jurisdiction: str, plate: str,
                       *, issued: bool = True, expires_on: dt.date | None = None,
                       stolen: bool = False, cancelled: bool = False,
                       suspension_reasons: tuple[str, ...] = (),
                       owner_data: dict[str, Any] | None = None, device_id: str | None = None,
                       plate_class: str = "passenger") -> str:
    """A ``plates`` row as the consumer would leave it; returns the plate key."""
    key = f"{jurisdiction}/{plate}"
    expires_on = expires_on or (dt.date.today() + dt.timedelta(days=200))
    own = owner_data if owner_data is not None else owner(f"own-{plate.lower()}")
    await pool.execute(
        "INSERT INTO plates (plate_key, jurisdiction, plate, issued, plate_class, expires_on,"
        " vehicle, owner_id, owner, device_id, suspension_reasons, stolen, cancelled,"
        " last_event_time, last_event_id, event_count)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13, now(), $14, 1)",
        key, jurisdiction, plate, issued, plate_class if issued else None,
        expires_on if issued else None,
        {"vin": "1HGCM82633A004352", "make": "Honda", "model": "Civic", "year": 2019,
         "colour": "blue"} if issued else None,
        own["owner_id"] if issued else None, own if issued else None, device_id,
        list(suspension_reasons), stolen, cancelled, f"ev-{key}",
    )
    return key


async def insert_event(pool: asyncpg.Pool, key: str, event_id: str, event_type: str,
                       time_: dt.datetime, data: dict[str, Any]) -> None:
    await pool.execute(
        "INSERT INTO plate_events (event_id, plate_key, type, source, event_time, data,"
        " fingerprint) VALUES ($1, $2, $3, '/test', $4, $5, 'fp')",
        event_id, key, event_type, time_, data,
    )


async def insert_change(pool: asyncpg.Pool, view: dict[str, Any], flagged: bool,
                        was_flagged: bool) -> int:
    return await pool.fetchval(
        "INSERT INTO status_changes (plate_key, view, flagged, was_flagged)"
        " VALUES ($1, $2, $3, $4) RETURNING seq",
        f"{view['jurisdiction']}/{view['plate']}", view, flagged, was_flagged,
    )


async def role_keys(pool: asyncpg.Pool, **kwargs: Any) -> dict[str, str]:
    """One fresh key per role: {role: full key}."""
    return {role: (await create_key(pool, role=role, name=f"test {role}",
                                    sources=["/registry/"] if role == "ingest" else (),
                                    **kwargs))[1]
            for role in ROLES}


def pq(jurisdiction: str, plate: str, purpose: str = "testing", **extra: Any) -> dict[str, Any]:
    """A plate query body (``POST /v1/plates/query``, ``candidates``, ``history``)."""
    return {"jurisdiction": jurisdiction, "plate": plate, "purpose": purpose, **extra}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def running_api(settings: Settings, *, clock: Clock | None = None,
                      **overrides: Any) -> AsyncIterator[Api]:
    """The registry app with its lifespan running, and a client over ASGI."""
    if overrides:
        settings = settings.model_copy(update=overrides)
    app = create_registry_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            yield Api(app, client)


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    log_path: str

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


@contextlib.contextmanager
def served_registry(log_path: str, *, workers: int = 1, env: dict[str, str] | None = None
                    ) -> Iterator[Served]:
    """``platereg serve registry`` as a child process on a free port (PLATEREG_* from env)."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [PLATEREG, "serve", "registry", "--port", str(port),
             "--workers", str(workers)],
            env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"registry exited early:\n{served.log()[-3000:]}")
            try:
                if httpx.get(f"{served.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"registry did not start:\n{served.log()[-3000:]}")
            time.sleep(0.1)
        yield served
    finally:
        stop_process(proc, signal.SIGTERM, 30)
