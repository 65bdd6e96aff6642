"""Reads from streaming replicas: which pool serves a read, and how far behind each
read replica is.

The registry API runs its reads of plates, views, the hotlist and history through
:meth:`ReadPools.read` and writes (audit rows) to the primary's pool only. One path
whatever the configuration: without read replicas (``PLATEREG_DATABASE_READ_URLS``
empty) the primary is the one read pool, through the same code.

* **Lag** (:func:`lag_seconds`, pure). Every ``PLATEREG_REPLICA_CHECK_SECONDS`` a
  background task reads the primary's WAL write position (``pg_current_wal_lsn()``: with
  ``synchronous_commit`` on, every commit that returned before the check is at or before
  it; the insert position would run a page header ahead of an idle replica), then asks
  each replica whether it has replayed up to there, and the commit time of the last
  transaction it replayed (``pg_last_xact_replay_timestamp()``). A replica that has
  replayed the primary's position is 0 s behind; otherwise it is behind by the smaller
  of two upper bounds: the time since its last replayed commit and the time since the
  last check that found it caught up. Without the primary's position (the primary
  unreachable), "caught up" means it has replayed all the WAL it received.
* **Choice** (:func:`serving`, :func:`choose`, pure): a replica serves while its lag is
  at most ``PLATEREG_REPLICA_MAX_LAG_SECONDS``; one that is unreachable, further behind,
  or not a standby (``pg_is_in_recovery()`` false: a promoted replica no longer follows
  the primary) is left out until a check finds it fit again. Reads go round-robin over
  the serving replicas, and to the primary when none serves.
* **as_of** (:func:`fresh_as_of`, pure): what a view read on a replica says it is as of:
  the replica's replay time, i.e. the commit time of the last transaction it replayed,
  or the time of the last check that found it caught up with the primary, whichever is
  later (it then had everything committed before that check). Never the time of the
  request: a view from a replica 3 s behind says so. Reads on the primary are as of the
  request's time (the caller's clock).
* **Failures.** A read on a replica that fails with an outage error (the replica killed
  or restarting, a query cancelled by a conflict with recovery) runs again on the
  primary; a lost connection also leaves the replica out until the next check. A read
  that needs a newer state than the replica has raises :class:`ReplicaBehind` and runs
  on the primary as well.

Each check sets ``platereg_replica_lag_seconds`` and ``platereg_replica_serving`` per
replica (named by host, port and database: never its password), and a replica leaving
or rejoining the reads is one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from platereg.db import OUTAGE_ERRORS, close_pool, create_pool
from platereg.logging import get_logger
from platereg.metrics import REPLICA_LAG, REPLICA_SERVING

log = get_logger(__name__)

T = TypeVar("T")


class ReplicaBehind(Exception):  # noqa: N818 - a condition, not a failure
    """Raised by a read that finds the replica older than what it needs (a hotlist page
    after a snapshot the replica has not replayed yet): the read runs on the primary."""


# --------------------------------------------------------------------------- pure rules


@dataclass(frozen=True, slots=True)
class Seen:
    """What one check saw on one replica."""

    standby: bool             # pg_is_in_recovery()
    caught_up: bool           # replayed the primary's position (or all WAL it received)
    replay_at: dt.datetime | None   # pg_last_xact_replay_timestamp()


def lag_seconds(seen: Seen | None, caught_up_at: dt.datetime | None,
                now: dt.datetime) -> float | None:
    """How far behind the primary a replica is; None when not measured (unreachable,
    ``seen`` None, or not a standby); infinite when nothing bounds it."""
    if seen is None or not seen.standby:
        return None
    if seen.caught_up:
        return 0.0
    bounds = [(now - t).total_seconds() for t in (seen.replay_at, caught_up_at)
              if t is not None]
    return max(0.0, min(bounds)) if bounds else math.inf


def fresh_as_of(seen: Seen | None, caught_up_at: dt.datetime | None) -> dt.datetime | None:
    """The instant a replica's data is known complete up to (the later of its last
    replayed commit and the last check that found it caught up), or None."""
    times = [t for t in (seen.replay_at if seen else None, caught_up_at) if t is not None]
    return max(times) if times else None


def serving(lags: Sequence[float | None], max_lag: float) -> list[int]:
    """The replicas (by index) that serve reads: measured, at most ``max_lag`` behind.
    Empty: the primary serves every read."""
    return [i for i, lag in enumerate(lags) if lag is not None and lag <= max_lag]


def choose(lags: Sequence[float | None], max_lag: float, turn: int) -> int | None:
    """The replica (index) for the ``turn``-th read, round-robin over :func:`serving`;
    None: the primary."""
    fit = serving(lags, max_lag)
    return fit[turn % len(fit)] if fit else None


def replica_name(dsn: str) -> str:
    """``host:port/database`` of a DSN: a label for logs and metrics, no credentials."""
    parts = urlsplit(dsn)
    return f"{parts.netloc.rpartition('@')[2]}{parts.path}"


# --------------------------------------------------------------------------- the pools

_PROBE = """
SELECT pg_is_in_recovery() AS standby,
       coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn,
                pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false) AS caught_up,
       pg_last_xact_replay_timestamp() AS replay_at
"""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _connection_lost(exc: BaseException) -> bool:
    """An error that says the server is away, not that one query failed."""
    return not isinstance(exc, asyncpg.PostgresError) or isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError)


@dataclass(eq=False)
class Replica:
    """One read replica: its pool (opened by the first check that reaches it) and what
    the last check made of it."""

    dsn: str
    name: str
    pool: Any = None
    lag: float | None = None            # None: out (unreachable, not a standby, unchecked)
    as_of: dt.datetime | None = None
    caught_up_at: dt.datetime | None = None
    serving: bool | None = None         # None: not checked yet


class ReadPools:
    """The pools reads run on: the primary's and those of the read replicas in rotation.

    ``pool_options`` go to :func:`platereg.db.create_pool` for each replica's pool."""

    def __init__(self, primary: Any, dsns: Sequence[str], *, max_lag: float,
                 check_every: float, **pool_options: Any) -> None:
        self.primary = primary
        self.replicas = [Replica(dsn, replica_name(dsn)) for dsn in dsns]
        self.max_lag = max_lag
        self.check_every = check_every
        self._pool_options = pool_options
        self._turn = 0
        self._task: asyncio.Task[None] | None = None

    def target(self) -> Replica | None:
        """The replica for the next read, or None for the primary (:func:`choose`)."""
        index = choose([r.lag for r in self.replicas], self.max_lag, self._turn)
        self._turn += 1
        return None if index is None else self.replicas[index]

    async def read(self, query: Callable[[Any], Awaitable[T]]) -> tuple[T, dt.datetime | None]:
        """``query(pool)`` on a replica in rotation, else on the primary: its result, and
        the replica's as_of (None when the primary answered: as of now)."""
        replica = self.target()
        if replica is not None:
            as_of = replica.as_of
            try:
                return await query(replica.pool), as_of
            except ReplicaBehind:
                pass
            except OUTAGE_ERRORS as exc:
                if _connection_lost(exc):
                    self._set(replica, None, None, "unreachable")
        return await query(self.primary), None

    # -- checks --------------------------------------------------------------------
    async def check(self) -> None:
        """Measure every replica once (in parallel), each within ``max_lag`` seconds."""
        if not self.replicas:
            return
        started = _now()
        position = None
        with contextlib.suppress(*OUTAGE_ERRORS):
            position = await asyncio.wait_for(
                self.primary.fetchval("SELECT pg_current_wal_lsn()::text"), self.max_lag)
        await asyncio.gather(*(self._check(r, position, started) for r in self.replicas))

    async def _check(self, replica: Replica, position: str | None,
                     started: dt.datetime) -> None:
        try:
            seen = await asyncio.wait_for(self._probe(replica, position), self.max_lag)
        except OUTAGE_ERRORS:
            self._set(replica, None, None, "unreachable")
            return
        if seen.standby and seen.caught_up:
            replica.caught_up_at = started
        lag = lag_seconds(seen, replica.caught_up_at, _now())
        self._set(replica, lag, fresh_as_of(seen, replica.caught_up_at),
                  "behind" if seen.standby else "not a standby")

    async def _probe(self, replica: Replica, position: str | None) -> Seen:
        if replica.pool is None:
            replica.pool = await create_pool(replica.dsn, retry_for=0, **self._pool_options)
        row = await replica.pool.fetchrow(_PROBE, position)
        return Seen(row["standby"], row["caught_up"], row["replay_at"])

    def _set(self, replica: Replica, lag: float | None, as_of: dt.datetime | None,
             why_out: str) -> None:
        """Record a replica's lag and as_of; a change in or out of the reads is logged."""
        replica.lag, replica.as_of = lag, as_of
        fit = bool(serving([lag], self.max_lag))
        REPLICA_LAG.labels(replica.name).set(math.nan if lag is None else lag)
        REPLICA_SERVING.labels(replica.name).set(int(fit))
        if fit == replica.serving:
            return
        if fit:
            log.info("read replica serving reads", replica=replica.name, lag_seconds=lag)
        else:
            log.warning("read replica left out of reads", replica=replica.name,
                        reason=why_out, lag_seconds=lag, max_lag_seconds=self.max_lag)
        replica.serving = fit

    # -- life cycle ----------------------------------------------------------------
    async def start(self) -> None:
        """One check now (replicas serve from the first request), then every
        ``check_every`` seconds in the background."""
        if self.replicas:
            await self.check()
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.check_every)
            try:
                await self.check()
            except Exception as exc:  # noqa: BLE001 - the next check tries again
                log.warning("read replica check failed", error_type=type(exc).__name__)

    async def close(self) -> None:
        """Stop the checks and close the replicas' pools (never the primary's)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for replica in self.replicas:
            await close_pool(replica.pool)
