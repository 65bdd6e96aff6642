"""notifications.store on PostgreSQL directly: deliveries enqueued once per notice and
channel (paper to the print queue, the others pending; unknown notices skipped, the
count is what was started), due deliveries claimed as many as asked and leased, and the
scheduler's last day that only moves forward (a clock stepped back does not make a day
due again). `make mutate` found no test reaching these statements by themselves."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest
from owner_support import insert_notice

from notifications import store

pytestmark = pytest.mark.integration


async def test_deliveries_are_enqueued_once_per_notice_and_channel(pool: asyncpg.Pool) -> None:
    notice = await insert_notice(pool, "own-a", "CA-ON/AAA111", "suspended", [])
    assert await store.enqueue(pool, []) == 0
    assert await store.enqueue(pool, [(notice, "email"), (notice, "paper"),
                                      (uuid.uuid4(), "email")]) == 2
    assert await store.enqueue(pool, [(notice, "email"), (notice, "sms")]) == 1
    rows = await pool.fetch("SELECT channel, state FROM notice_dispatch WHERE notice_id = $1"
                            " ORDER BY channel", notice)
    assert [tuple(r) for r in rows] == [("email", "pending"), ("paper", "print"),
                                        ("sms", "pending")]


async def test_the_scheduler_s_last_day_only_moves_forward(pool: asyncpg.Pool) -> None:
    day = dt.date(2026, 3, 1)
    async with pool.acquire() as conn:
        assert await store.last_day(conn, "windows") is None
        await store.set_last_day(conn, "windows", day)
        await store.set_last_day(conn, "other", day + dt.timedelta(days=5))
        await store.set_last_day(conn, "windows", day - dt.timedelta(days=1))
        assert await store.last_day(conn, "windows") == day
        await store.set_last_day(conn, "windows", day + dt.timedelta(days=1))
        assert await store.last_day(conn, "windows") == day + dt.timedelta(days=1)
        assert await store.last_day(conn, "other") == day + dt.timedelta(days=5)


async def test_due_deliveries_are_claimed_as_many_as_asked_and_leased(
        pool: asyncpg.Pool) -> None:
    notice = await insert_notice(pool, "own-a", "CA-ON/AAA111", "suspended", [])
    await store.enqueue(pool, [(notice, "email"), (notice, "sms"), (notice, "webhook"),
                               (notice, "paper")])
    async with pool.acquire() as conn:
        first = await store.claim_due(conn, 2, 60.0)
        rest = await store.claim_due(conn, 10, 60.0)
        again = await store.claim_due(conn, 10, 60.0)
    assert len(first) == 2 and len(rest) == 1 and again == []   # paper is printed, leased
    assert sorted(r["channel"] for r in [*first, *rest]) == ["email", "sms", "webhook"]
    assert {(r["attempts"], r["owner_id"], r["kind"]) for r in [*first, *rest]} == {
        (1, "own-a", "suspended")}
