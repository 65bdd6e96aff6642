"""Event-driven notices made in the registry consumer's batch transaction
(``apply_batch`` on the real PostgreSQL): one per event per recipient, none
for a duplicate, none for a late event older than the latest of its kind."""

from __future__ import annotations

import datetime as dt

import asyncpg
import orjson
import pytest

from platereg.settings import Settings
from tests.integration.notices_support import apply_events, event, issued, owner

pytestmark = pytest.mark.integration

T = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)


async def kinds(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT kind, owner_id FROM notices WHERE window_days IS NULL "
                            "ORDER BY seq")
    return [tuple(r) for r in rows]


async def test_event_notices_once_per_event_and_recipient(settings: Settings,
                                                          pool: asyncpg.Pool) -> None:
    now = dt.datetime.now(dt.UTC)
    s = "CA-ON/EVT1"
    a, b = owner(1), owner(2, language="fr")
    transfer = event("plate.transferred", s, T + dt.timedelta(minutes=10), {"owner": b})
    await apply_events(pool, settings, [
        issued(s, T.date() + dt.timedelta(days=300), T, a), transfer,
        event("plate.suspended", s, T + dt.timedelta(minutes=20), {"reason": "court_order"},
              source="/courts/on/"),
        event("plate.recovered", s, T + dt.timedelta(minutes=30), {}, source="/police/opp/"),
        event("plate.renewed", s, T + dt.timedelta(minutes=40),
              {"expires_on": (T.date() + dt.timedelta(days=700)).isoformat()})], now)
    first = await kinds(pool)
    assert first == [("transferred_in", "own-2"), ("transferred_out", "own-1"),
                     ("suspended", "own-2"), ("recovered", "own-2"), ("renewed", "own-2")]
    # The same transfer again (a redelivery) and late events older than the latest
    # of their kind: no notice. A late event of a kind with nothing newer: a notice.
    out = await apply_events(pool, settings, [
        transfer,
        event("plate.reinstated", s, T + dt.timedelta(minutes=15), {"reason": "court_order"},
              source="/courts/on/"),
        event("plate.renewed", s, T + dt.timedelta(minutes=35),
              {"expires_on": (T.date() + dt.timedelta(days=500)).isoformat()}),
        event("plate.cancelled", s, T + dt.timedelta(minutes=25), {"reason": "replaced"})],
        now)
    assert out.refolded == 1 and sum(out.duplicates.values()) == 1
    assert await kinds(pool) == [*first, ("cancelled", "own-2")]
    row = await pool.fetchrow("SELECT * FROM notices WHERE kind = 'suspended'")
    assert row["language"] == "fr" and row["channels"] == ["email", "paper"]
    assert row["context"] == {"reason": "court_order", "blocked_by": ["court_order"],
                              "expires_on": (T.date() + dt.timedelta(days=300)).isoformat()}
    assert orjson.loads(orjson.dumps(row["recipient"]))["email"] == b["email"]
