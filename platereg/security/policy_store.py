"""The source policy table (``source_policy``, migration 0008) and its reloading caches.

Every change to ``source_policy`` bumps ``source_policy_version`` (a trigger).
:class:`PolicyCache` keeps the compiled :class:`schemas.policy.Policy` and
re-reads the rows only when that version moved: the registry consumer checks
the version inside each batch's transaction (one tiny query), so a change made
with ``platereg sources set`` applies from the next batch on, without a
restart. The ingest API checks it at most every :data:`INGEST_TTL` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import asyncpg

from schemas.policy import Grant, Policy, check_grant, compile_policy

#: How stale the ingest API's policy may be (seconds).
INGEST_TTL = 2.0


async def policy_version(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval("SELECT version FROM source_policy_version WHERE id = 1"))


async def load_grants(conn: asyncpg.Connection | asyncpg.Pool) -> list[Grant]:
    rows = await conn.fetch("SELECT prefix, type, reasons FROM source_policy ORDER BY prefix, type")
    return [Grant(r[0], r[1], None if r[2] is None else frozenset(r[2])) for r in rows]


async def load_policy(conn: asyncpg.Connection) -> Policy:
    """The policy and its version, read in one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        version = await policy_version(conn)
        return compile_policy(await load_grants(conn), version)


async def set_grant(conn: asyncpg.Connection | asyncpg.Pool, prefix: str, kind: str,
                    reasons: Iterable[str] | None) -> Grant:
    """Allow ``prefix`` to send ``kind`` (replacing that pair's reasons)."""
    grant = check_grant(prefix, kind, None if reasons is None else list(reasons))
    await conn.execute(
        """INSERT INTO source_policy (prefix, type, reasons) VALUES ($1, $2, $3)
           ON CONFLICT (prefix, type) DO UPDATE SET reasons = EXCLUDED.reasons,
                                                    updated_at = now()""",
        grant.prefix, grant.type, None if grant.reasons is None else sorted(grant.reasons))
    return grant


async def remove_grants(conn: asyncpg.Connection | asyncpg.Pool, prefix: str,
                        kind: str | None = None) -> int:
    """Remove one type (or, without ``kind``, every type) of ``prefix``; returns how many."""
    if kind is None:
        status = await conn.execute("DELETE FROM source_policy WHERE prefix = $1", prefix)
    else:
        status = await conn.execute(
            "DELETE FROM source_policy WHERE prefix = $1 AND type = $2", prefix, kind)
    return int(status.rsplit(" ", 1)[1])


class PolicyCache:
    """The compiled policy, re-read when the stored version moved."""

    def __init__(self) -> None:
        self.policy: Policy | None = None

    async def current(self, conn: asyncpg.Connection) -> Policy:
        """The policy as of ``conn``'s transaction (reloaded if the version moved)."""
        version = await policy_version(conn)
        if self.policy is None or self.policy.version != version:
            self.policy = compile_policy(await load_grants(conn), version)
        return self.policy


class TimedPolicyCache:
    """For the ingest API: the policy re-checked at most every ``ttl`` seconds."""

    def __init__(self, pool: asyncpg.Pool, ttl: float = INGEST_TTL) -> None:
        self.pool = pool
        self.ttl = ttl
        self._cache = PolicyCache()
        self._checked = float("-inf")

    async def current(self) -> Policy:
        now = time.monotonic()
        if self._cache.policy is None or now - self._checked >= self.ttl:
            async with self.pool.acquire() as conn:
                policy = await self._cache.current(conn)
            self._checked = now
            return policy
        return self._cache.policy
