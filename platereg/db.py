"""PostgreSQL plumbing: migrations (yoyo) and asyncpg pools."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.resources import files
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import psycopg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from platereg.logging import get_logger

log = get_logger(__name__)

# Any constant will do: every `platereg migrate` serializes on it.
_MIGRATION_LOCK_ID = 0x706C617465726567  # "platereg"


def migrations_path() -> str:
    return str(files("platereg") / "migrations")


def _yoyo_uri(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


@contextlib.contextmanager
def _advisory_lock(dsn: str) -> Iterator[None]:
    """A session-level advisory lock: released even if this process dies."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_ID,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_ID,))


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; safe to run twice and from several processes at once.

    Returns the ids of the migrations applied by this call.
    """
    from yoyo import get_backend, read_migrations

    with _advisory_lock(dsn):
        backend = get_backend(_yoyo_uri(dsn))
        try:
            migrations = read_migrations(migrations_path())
            with backend.lock():
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
        finally:
            with contextlib.suppress(Exception):
                backend.connection.close()
    applied = [m.id for m in pending]
    if applied:
        log.info("migrations applied", migrations=applied)
    return applied


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10,
                      retry_for: float = 30.0, **kwargs: object) -> asyncpg.Pool:
    """An asyncpg pool with jsonb as Python objects; retries while the server starts."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((OSError, asyncpg.CannotConnectNowError,
                                       asyncpg.TooManyConnectionsError)),
        wait=wait_exponential(multiplier=0.2, max=3),
        stop=stop_after_delay(retry_for),
        reraise=True,
    ):
        with attempt:
            return await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, init=_init_connection,
                **kwargs,  # type: ignore[arg-type]
            )
    raise AssertionError("unreachable")


async def ping(pool: asyncpg.Pool, timeout: float = 2.0) -> bool:
    try:
        async with pool.acquire(timeout=timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - readiness only reports
        return False
