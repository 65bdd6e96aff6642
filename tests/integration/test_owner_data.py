"""registry.owner.data on PostgreSQL directly (no HTTP): an owner's notices, newest
first, as many as asked, each with every field and every delivery attempt as stored;
preferences set and cleared; the access log, newest first, as many as asked; the
issued plates in key order up to the cap.
`make mutate` found the routes' tests not looking at these."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest
from api_helpers import insert_plate, owner
from owner_support import insert_notice

from platereg.security.keys import create_key
from registry.owner import data

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)


async def test_an_owner_s_notices_newest_first_with_every_attempt(pool: asyncpg.Pool) -> None:
    older = await insert_notice(pool, "own-a", "CA-ON/AAA111", "renewal_reminder",
                                [("email", "retry"), ("email", "sent")],
                                context={"days_before": 30}, created_at=T0)
    newer = await insert_notice(pool, "own-a", "CA-QC/AAA222", "suspended", [],
                                created_at=T0 + dt.timedelta(hours=1))
    await insert_notice(pool, "own-b", "CA-ON/BBB111", "suspended", [("sms", "sent")],
                        created_at=T0 + dt.timedelta(hours=2))
    at = {r["attempt"]: r["at"] for r in await pool.fetch(
        "SELECT attempt, at FROM notice_deliveries WHERE notice_id = $1", older)}

    assert [n["notice_id"] for n in await data.notices(pool, "own-a", 1)] == [str(newer)]
    assert await data.notices(pool, "own-a", 10) == [
        {"notice_id": str(newer), "kind": "suspended", "jurisdiction": "CA-QC",
         "plate": "AAA222", "owner_id": "own-a", "language": "en", "channels": ["email"],
         "created_at": T0 + dt.timedelta(hours=1), "context": {}, "deliveries": []},
        {"notice_id": str(older), "kind": "renewal_reminder", "jurisdiction": "CA-ON",
         "plate": "AAA111", "owner_id": "own-a", "language": "en", "channels": ["email"],
         "created_at": T0, "context": {"days_before": 30}, "deliveries": [
             {"channel": "email", "attempt": 1, "outcome": "retry", "status_code": 503,
              "error": "HTTP 503", "at": at[1]},
             {"channel": "email", "attempt": 2, "outcome": "sent", "status_code": None,
              "error": None, "at": at[2]}]}]
    assert await data.notices(pool, "nobody", 10) == []


async def test_preferences_are_stored_as_given_and_cleared_to_the_default(
        pool: asyncpg.Pool) -> None:
    assert await data.preferences(pool, "own-a") == {
        "owner_id": "own-a", "channels": None, "language": None, "updated_at": None}
    put = await data.put_preferences(pool, "own-a", ["email", "paper"], "fr")
    assert (put["channels"], put["language"]) == (["email", "paper"], "fr")
    assert await data.preferences(pool, "own-a") == put
    cleared = await data.put_preferences(pool, "own-a", None, None)
    assert (cleared["channels"], cleared["language"]) == (None, None)
    assert cleared["updated_at"] >= put["updated_at"]


async def test_the_access_log_is_newest_first_and_as_long_as_asked(pool: asyncpg.Pool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a"))
    key_id, _ = await create_key(pool, role="enforcement", name="patrol")
    for minutes, purpose in ((1, "first"), (2, "second"), (3, "third")):
        await pool.execute(
            "INSERT INTO audit_log (at, key_id, kind, jurisdiction, plate, purpose, result)"
            " VALUES ($1, $2, 'single', 'CA-ON', 'AAA111', $3, 'valid')",
            T0 + dt.timedelta(minutes=minutes), key_id, purpose)
    log = await data.access_log(pool, "own-a", 2)
    assert log == [
        {"at": T0 + dt.timedelta(minutes=m), "key_name": "patrol", "role": "enforcement",
         "kind": "single", "purpose": p, "jurisdiction": "CA-ON", "plate": "AAA111"}
        for m, p in ((3, "third"), (2, "second"))]


async def test_an_owner_s_plates_are_issued_ones_in_key_order_up_to_the_cap(
        pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    for jurisdiction, plate, issued in (("CA-QC", "AAA3", True), ("CA-ON", "AAA1", True),
                                        ("CA-ON", "AAA2", True), ("CA-ON", "AAA0", False)):
        await insert_plate(pool, jurisdiction, plate, issued=issued,
                           owner_data=owner("own-a"))
    await insert_plate(pool, "CA-ON", "BBB1", owner_data=owner("own-b"))
    today = dt.date(2026, 3, 1)
    assert [(v["jurisdiction"], v["plate"]) for v in await data.plates(
        pool, "own-a", today, T0)] == [("CA-ON", "AAA1"), ("CA-ON", "AAA2"), ("CA-QC", "AAA3")]
    monkeypatch.setattr(data, "MAX_PLATES", 2)
    assert [v["plate"] for v in await data.plates(pool, "own-a", today, T0)] == [
        "AAA1", "AAA2"]
