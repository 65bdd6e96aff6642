"""PostgreSQL plumbing: migrations (yoyo), asyncpg pools (first come, first served;
:class:`LazyPool` for a background job) and connections, the errors after which a
background job retries (:data:`OUTAGE_ERRORS`), creating and dropping databases
(tests and benchmarks), and the type codecs every connection of ours uses (jsonb as
Python objects, timestamptz always timezone-aware)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator, Mapping
from importlib.resources import files
from typing import Any
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


def migrate(dsn: str, retention: Mapping[str, int] | None = None) -> list[str]:
    """Apply pending migrations, then the grants of ``platereg.security.roles.GRANTS`` and
    (when given) the retention of each kind of personal data (``platereg.retention``), in
    one transaction; safe to run twice and from several processes at once.

    Returns the ids of the migrations applied by this call.
    """
    from yoyo import get_backend, read_migrations

    from platereg.retention import write_retention
    from platereg.security.roles import apply_grants

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
        with psycopg.connect(dsn) as conn:   # one transaction, committed on the way out
            apply_grants(conn)
            if retention is not None:
                write_retention(conn, retention)
    applied = [m.id for m in pending]
    if applied:
        log.info("migrations applied", migrations=applied)
    return applied


# timestamptz on the wire: microseconds since 2000-01-01 UTC; the extremes of int64
# are infinity and -infinity.
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_PG_INFINITY = 2**63 - 1
_PG_NEG_INFINITY = -(2**63)
#: What PostgreSQL's ``infinity`` / ``-infinity`` timestamps read back as: aware
#: datetimes at the ends of Python's range (asyncpg's own codec returns naive ones,
#: which cannot be compared with any other time).
TIME_INFINITY = dt.datetime.max.replace(tzinfo=dt.UTC)
TIME_NEG_INFINITY = dt.datetime.min.replace(tzinfo=dt.UTC)


def decode_timestamptz(value: tuple[int]) -> dt.datetime:
    """A timestamptz as an aware UTC datetime; never naive, infinities included."""
    micros = value[0]
    if micros == _PG_INFINITY:
        return TIME_INFINITY
    if micros == _PG_NEG_INFINITY:
        return TIME_NEG_INFINITY
    try:
        return _PG_EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:   # a PostgreSQL time outside years 1..9999
        return TIME_INFINITY if micros > 0 else TIME_NEG_INFINITY


def encode_timestamptz(value: dt.datetime | dt.date) -> tuple[int]:
    """A datetime (naive means local time, as asyncpg has it) or a date (local midnight)
    as a timestamptz. Unlike asyncpg's codec, ``datetime.min`` / ``datetime.max`` stay
    real instants instead of becoming ``-infinity`` / ``infinity``."""
    if not isinstance(value, dt.datetime):
        if not isinstance(value, dt.date):
            raise TypeError(f"expected a datetime or date, got {type(value).__name__}")
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.astimezone()
    return ((value - _PG_EPOCH) // _MICROSECOND,)


async def init_connection(conn: asyncpg.Connection) -> None:
    """The codecs of every connection: json/jsonb as Python objects, timestamptz aware."""
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )
    await conn.set_type_codec(
        "timestamptz", encoder=encode_timestamptz, decoder=decode_timestamptz,
        schema="pg_catalog", format="tuple",
    )


async def connect(dsn: str, **kwargs: object) -> asyncpg.Connection:
    """One connection with the codecs of :func:`init_connection`."""
    conn = await asyncpg.connect(dsn, **kwargs)  # type: ignore[arg-type]
    try:
        await init_connection(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


@contextlib.asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection of :func:`connect` for a short job; closed on the way out."""
    conn = await connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


class FifoGate:
    """Permits handed out in arrival order, with a count of those waiting for one.

    An ``asyncio.Semaphore`` wakes its waiters in order; the count is kept here, around
    the semaphore, instead of being read from its internals."""

    __slots__ = ("_permits", "waiting")

    def __init__(self, permits: int) -> None:
        self._permits = asyncio.Semaphore(permits)
        self.waiting = 0

    async def enter(self) -> None:
        self.waiting += 1
        try:
            await self._permits.acquire()
        finally:
            self.waiting -= 1

    def leave(self) -> None:
        self._permits.release()


class FairPool(asyncpg.Pool):
    """An asyncpg pool that hands out connections first come, first served.

    asyncpg's pool waits on an asyncio queue, where a request arriving just as a
    connection is released takes it before the waiter that release woke up: under
    load a few waiters starve (a long tail of waits; see docs/benchmarks.md).
    Here every acquisition first passes a :class:`FifoGate` with one permit per
    connection, given back only once the connection is back in the pool, so whoever
    holds a permit finds a free connection and waiters are served in arrival order.
    Only the public ``acquire`` / ``release`` are overridden (``fetch`` and friends go
    through ``acquire``).
    """

    def __init__(self, *args: Any, max_size: int, **kwargs: Any) -> None:
        super().__init__(*args, max_size=max_size, **kwargs)
        self._gate = FifoGate(max_size)
        self._gated: set[Any] = set()

    @property
    def waiting(self) -> int:
        """Acquisitions waiting for their turn."""
        return self._gate.waiting

    def acquire(self, *, timeout: float | None = None) -> _FairAcquire:  # type: ignore[override]
        return _FairAcquire(self, timeout)

    async def _acquire_in_turn(self, timeout: float | None) -> Any:
        async with asyncio.timeout(timeout):
            await self._gate.enter()
            try:
                conn = await super().acquire()
            except BaseException:
                self._gate.leave()
                raise
        self._gated.add(conn)
        return conn

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        gated = connection in self._gated
        self._gated.discard(connection)
        try:
            await super().release(connection, timeout=timeout)
        finally:
            if gated:
                self._gate.leave()


class _FairAcquire:
    """What :meth:`FairPool.acquire` returns: ``async with`` or ``await``, like asyncpg's."""

    __slots__ = ("pool", "timeout", "connection")

    def __init__(self, pool: FairPool, timeout: float | None) -> None:
        self.pool = pool
        self.timeout = timeout
        self.connection: Any = None

    async def __aenter__(self) -> Any:
        self.connection = await self.pool._acquire_in_turn(self.timeout)
        return self.connection

    async def __aexit__(self, *exc: object) -> None:
        connection, self.connection = self.connection, None
        await self.pool.release(connection)

    def __await__(self) -> Any:
        return self.pool._acquire_in_turn(self.timeout).__await__()


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10,
                      retry_for: float = 30.0, **kwargs: Any) -> FairPool:
    """A :class:`FairPool` with the codecs of :func:`init_connection`; retries while the
    server starts or restarts, for ``retry_for`` seconds. ``kwargs`` are asyncpg pool
    options (``reset``, ``max_queries`` ...)."""
    options: dict[str, Any] = {
        "max_queries": 50_000, "max_inactive_connection_lifetime": 300.0, "loop": None,
        "connection_class": asyncpg.Connection, "record_class": asyncpg.Record,
        "init": init_connection, **kwargs}
    async for attempt in AsyncRetrying(
        # PostgresConnectionError: a server shutting down or restarting closes a new
        # connection in the middle of its start-up (after the SSL negotiation)
        retry=retry_if_exception_type((OSError, asyncpg.CannotConnectNowError,
                                       asyncpg.AdminShutdownError,
                                       asyncpg.PostgresConnectionError,
                                       asyncpg.TooManyConnectionsError)),
        wait=wait_exponential(multiplier=0.2, max=3),
        stop=stop_after_delay(retry_for),
        reraise=True,
    ):
        with attempt:
            # A pool that fails to start closes its own connections.
            return await FairPool(dsn, min_size=min_size, max_size=max_size, **options)
    raise AssertionError("unreachable")


async def close_pool(pool: asyncpg.Pool | None, timeout: float = 2.0) -> None:
    """Close ``pool`` (if there is one) within ``timeout`` seconds, never raising: the last
    step of a stopping loop, whose server may be gone already."""
    if pool is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), timeout)


def with_database(dsn: str, database: str) -> str:
    """``dsn`` naming ``database`` on the same server instead."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


async def create_database(admin_dsn: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` (a copy of ``template`` if given) as the server's admin
    (tests and benchmarks); returns its DSN."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        copy = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name`` if it exists, whoever is still connected to it."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


#: Errors after which a background database job is tried again rather than stopping its
#: service: the database is down, restarting, or went away mid-operation.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
    asyncpg.InternalClientError)


class LazyPool:
    """A one-connection pool opened at its first use (a background job that may start
    before the database does) and closed by :meth:`close` (never raising)."""

    def __init__(self, dsn: str, *, retry_for: float = 2.0) -> None:
        self._dsn = dsn
        self._retry_for = retry_for
        self._pool: asyncpg.Pool | None = None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            self._pool = await create_pool(self._dsn, min_size=1, max_size=1,
                                           retry_for=self._retry_for)
        async with self._pool.acquire() as conn:
            yield conn

    async def close(self) -> None:
        await close_pool(self._pool)


async def ping(pool: asyncpg.Pool, timeout: float = 2.0) -> bool:
    try:
        async with pool.acquire(timeout=timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - readiness only reports
        return False
