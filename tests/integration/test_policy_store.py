"""platereg.security.policy_store on PostgreSQL directly: a grant stored as checked (its
reasons sorted, replaced on the same prefix and type), removed one type or a whole
prefix with the count, and the policy read back in one snapshot with its version.
`make mutate` found these reached only through `platereg sources` in a process of its
own, where its changes do not go."""

from __future__ import annotations

import asyncpg
import pytest

from platereg.security.policy_store import (
    PolicyCache,
    load_policy,
    policy_version,
    remove_grants,
    set_grant,
)
from schemas.policy import Grant, PolicyError

pytestmark = pytest.mark.integration


async def rows(pool: asyncpg.Pool, prefix: str) -> list[tuple]:
    return [tuple(r) for r in await pool.fetch(
        "SELECT prefix, type, reasons FROM source_policy WHERE prefix = $1 ORDER BY type",
        prefix)]


async def test_grants_are_stored_as_checked_replaced_and_removed(pool: asyncpg.Pool) -> None:
    assert await set_grant(pool, "/x/", "plate.suspended", ("unpaid_fines", "court_order")
                           ) == Grant("/x/", "plate.suspended",
                                      frozenset({"court_order", "unpaid_fines"}))
    await set_grant(pool, "/x/", "plate.renewed", None)
    await set_grant(pool, "/x/", "plate.cancelled", None)
    await set_grant(pool, "/y/", "plate.renewed", None)
    assert await rows(pool, "/x/") == [
        ("/x/", "plate.cancelled", None), ("/x/", "plate.renewed", None),
        ("/x/", "plate.suspended", ["court_order", "unpaid_fines"])]
    await set_grant(pool, "/x/", "plate.suspended", ["insurance_lapsed"])
    assert (await rows(pool, "/x/"))[-1] == ("/x/", "plate.suspended", ["insurance_lapsed"])
    with pytest.raises(PolicyError):
        await set_grant(pool, "/x/", "plate.repainted", None)
    assert await remove_grants(pool, "/x/", "plate.renewed") == 1
    assert await remove_grants(pool, "/x/", "plate.renewed") == 0
    assert await remove_grants(pool, "/x/") == 2
    assert await rows(pool, "/x/") == [] and len(await rows(pool, "/y/")) == 1


async def test_the_policy_is_read_with_its_version_and_cached_until_it_moves(
        pool: asyncpg.Pool) -> None:
    cache = PolicyCache()
    async with pool.acquire() as conn:
        before = await load_policy(conn)
        assert before.version == await policy_version(conn)
        assert not before.allows("/z/1", "plate.renewed")
        assert await cache.current(conn) is await cache.current(conn)
        await set_grant(conn, "/z/", "plate.renewed", None)
        after = await load_policy(conn)
        assert after.version > before.version and after.allows("/z/1", "plate.renewed")
        assert Grant("/z/", "plate.renewed") in after.grants
        fresh = await cache.current(conn)
        assert fresh.version == after.version and fresh.allows("/z/1", "plate.renewed")


class Asked:
    """A connection that notes the transactions asked of it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.transactions: list[dict] = []

    def transaction(self, **options: object):
        self.transactions.append(options)
        return self.conn.transaction(**options)

    def __getattr__(self, name: str) -> object:
        return getattr(self.conn, name)


async def test_the_policy_and_its_version_come_from_one_read_only_snapshot(
        pool: asyncpg.Pool) -> None:
    """A grant committed between the two reads must not give a policy labelled with the
    other version (no deterministic race here: the snapshot asked for is checked)."""
    async with pool.acquire() as conn:
        asked = Asked(conn)
        policy = await load_policy(asked)   # type: ignore[arg-type]
    assert asked.transactions == [{"isolation": "repeatable_read", "readonly": True}]
    assert policy.grants
