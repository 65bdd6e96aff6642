"""The registry's pool and single-lookup path on the real PostgreSQL: connections are
handed out first come, first served (a request arriving as a connection is released
does not jump the queue), and concurrent single lookups are coalesced into one
statement whose rows are exactly what each lookup alone would return."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from platereg.db import FairPool, connect, create_pool
from registry.api import lookups

pytestmark = pytest.mark.integration

INSERT = """
INSERT INTO plates (plate_key, jurisdiction, plate, issued, plate_class, expires_on, owner_id,
                    owner, last_event_time, last_event_id, event_count)
SELECT 'CA-ON/T' || i, 'CA-ON', 'T' || i, i % 5 <> 0, 'passenger', current_date + i,
       'own-' || i, jsonb_build_object('owner_id', 'own-' || i, 'name', 'Owner ' || i),
       now(), 'ev-' || i, 1
FROM generate_series(1, $1) AS i
"""


async def _no_reset(_: asyncpg.Connection) -> None:
    """As the registry API's pool: no reset query, so a release returns at once."""


@pytest.mark.parametrize("turns", range(5))
async def test_waiters_get_connections_in_arrival_order(database_url: str, turns: int) -> None:
    """Two waiters queue, a connection is released and a newcomer arrives ``turns`` loop
    turns later: with asyncpg's own pool it can take the connection before the woken
    waiter, which then goes to the back of the queue (seen at 1 and 3 turns)."""
    pool = await create_pool(database_url, min_size=2, max_size=2, reset=_no_reset)
    assert isinstance(pool, FairPool)
    order: list[str] = []
    try:
        held = [await pool.acquire(), await pool.acquire()]

        async def waiter(name: str) -> None:
            async with pool.acquire() as conn:
                order.append(name)
                assert await conn.fetchval("SELECT 1") == 1

        tasks = [asyncio.create_task(waiter(n)) for n in ("first", "second")]
        while pool.waiting < 2:   # both queued (a condition, not a sleep)
            await asyncio.sleep(0)
        releasing = asyncio.create_task(pool.release(held.pop()))
        for _ in range(turns):
            await asyncio.sleep(0)
        tasks.append(asyncio.create_task(waiter("newcomer")))
        await releasing
        while not order:
            await asyncio.sleep(0)
        await pool.release(held.pop())
        await asyncio.gather(*tasks)
        assert order == ["first", "second", "newcomer"]
    finally:
        await pool.close()


async def test_acquire_timeout_and_release_give_the_permit_back(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        held = await pool.acquire()
        with pytest.raises(TimeoutError):
            await pool.acquire(timeout=0.05)
        await pool.release(held)
        for _ in range(3):   # a timed-out acquisition left no permit or connection behind
            assert await pool.fetchval("SELECT 41 + 1") == 42
    finally:
        await pool.close()


async def test_concurrent_single_lookups_are_one_statement_with_each_own_row(
        database_url: str) -> None:
    conn = await connect(database_url)
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        await conn.execute(INSERT, 40)
        keys = [f"CA-ON/T{i}" for i in range(1, 46)]  # 41..45 do not exist; i % 5 == 0 unissued
        asks = [(k, i % 3 == 0) for i, k in enumerate(keys)] + [(keys[0], False)] * 3
        got = await asyncio.gather(*(lookups.plate(pool, k, o) for k, o in asks))
        reader = lookups._reader_of(pool)
        assert reader is not None and reader.statements == 2   # owner and no-owner columns
        for (key, with_owner), row in zip(asks, got, strict=True):
            alone = await lookups.plate(conn, key, with_owner)   # not coalesced
            if alone is None:
                assert row is None, key
            else:
                assert row is not None
                assert {k: row[k] for k in alone.keys()} == dict(alone), key
                assert (row["owner"] is not None) == with_owner
        assert sum(r is not None for r in got) == 32 + 3
    finally:
        await pool.close()
        await conn.close()


async def test_a_failed_statement_fails_every_coalesced_lookup(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    await pool.close()
    results = await asyncio.gather(*(lookups.plate(pool, f"CA-ON/T{i}", False)
                                     for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, asyncpg.InterfaceError) for r in results), results


VARIED = """
INSERT INTO plates (plate_key, jurisdiction, plate, issued, plate_class, expires_on, vehicle,
                    owner_id, owner, device_id, suspension_reasons, stolen, cancelled,
                    last_event_time, last_event_id, event_count)
SELECT 'CA-ON/V' || i, 'CA-ON', 'V' || i, true,
       CASE WHEN i % 4 <> 0 THEN 'passenger' END,
       CASE WHEN i % 6 <> 0 THEN current_date + (i % 5) - 2 END,
       CASE i % 3 WHEN 0 THEN NULL
                  WHEN 1 THEN jsonb_build_object('vin', 'VIN' || i, 'make', 'Honda',
                                                 'year', 2000 + i)
                  ELSE jsonb_build_object('make', 'Kia', 'model', 'Rio', 'colour', 'red',
                                          'year', 2019, 'extra', 'x') END,
       CASE WHEN i % 7 <> 0 THEN 'own-' || i END,
       CASE WHEN i % 7 <> 0 THEN jsonb_build_object('owner_id', 'own-' || i, 'name', 'N' || i,
                                                     'language', 'fr', 'secret', 's') END,
       CASE WHEN i % 2 = 0 THEN 'dev-' || i END,
       CASE i % 5 WHEN 0 THEN ARRAY['insurance_lapsed', 'unpaid_fines'] WHEN 1 THEN '{}'::text[]
                  ELSE ARRAY['court_order'] END,
       i % 8 = 0, i % 9 = 0, now(), 'ev-' || i, i
FROM generate_series(1, $1) AS i
"""


async def test_batch_views_from_view_rows_equal_the_domain_views(database_url: str) -> None:
    """The batch reads only the view's parts (``lookups.view_rows``) and builds the views
    without a PlateState per row: the same views as ``registry.domain`` gives for the
    whole row (every flag, no vehicle/owner, extra keys), with and without the owner."""
    from registry.api.routes.common import view_of, views_of_rows

    conn = await connect(database_url)
    try:
        await conn.execute(VARIED, 90)
        today = await conn.fetchval("SELECT current_date")
        now = await conn.fetchval("SELECT now()")
        keys = [f"CA-ON/V{i}" for i in range(1, 95)]   # 91..94 do not exist
        for with_owner in (False, True):
            views = views_of_rows(await lookups.view_rows(conn, keys, with_owner),
                                  with_owner, today, now)
            expected = {}
            for key in keys:
                row = await lookups.plate(conn, key, with_owner)
                if row is not None:
                    expected[key] = view_of(row, with_owner, today, now)
            assert views == expected
            assert len(views) == 90
            statuses = {v["status"] for v in views.values()}
            assert statuses == {"valid", "stolen", "cancelled", "suspended", "expired"}
    finally:
        await conn.close()
