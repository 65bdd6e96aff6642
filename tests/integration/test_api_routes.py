"""Registry API routes against the real PostgreSQL: views (now and `at`), batch,
candidates, history, hotlist paging, owners, audit query. Plates and owner ids travel
in POST bodies only; every read names a purpose."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from api_helpers import (
    bearer,
    insert_change,
    insert_event,
    insert_plate,
    owner,
    role_keys,
    running_api,
)

from platereg.settings import Settings
from registry.api.models import OwnerRecord
from schemas.views import EnforcementView, FullView, HotlistEntry, UnknownPlateResult

pytestmark = pytest.mark.integration


@pytest.fixture
async def keys(pool: asyncpg.Pool) -> dict[str, str]:
    return await role_keys(pool)


def q(jurisdiction: str, plate: str, **extra: object) -> dict:
    """A query body for one plate (purpose ``testing`` unless given)."""
    return {"jurisdiction": jurisdiction, "plate": plate, "purpose": "testing", **extra}


def _today(settings: Settings) -> dt.date:
    return dt.datetime.now(ZoneInfo(settings.timezone)).date()


async def test_single_lookup_normalizes_and_derives_status_today(settings, pool, keys) -> None:
    today = _today(settings)
    await insert_plate(pool, "CA-ON", "ABC123", expires_on=today)
    await insert_plate(pool, "CA-ON", "OLD1", expires_on=today - dt.timedelta(days=1),
                       suspension_reasons=("unpaid_fines",))
    await insert_plate(pool, "CA-QC", "GHOST", issued=False)
    async with running_api(settings) as api:
        enf = bearer(keys["enforcement"])
        for j, p in (("ca-on", "abc-123"), ("CA-ON", "ABC 123"), ("Ca-On", "a.b.c.1.2.3")):
            r = await api.client.post("/v1/plates/query", json=q(j, p), headers=enf)
            assert r.status_code == 200, r.text
            view = EnforcementView.model_validate(r.json())
            assert (view.jurisdiction, view.plate) == ("CA-ON", "ABC123")
            assert view.status == "valid" and view.flags == []  # expiring today: still valid
            assert "owner" not in r.json() and view.version == 1
        r = await api.client.post("/v1/plates/query", json=q("CA-ON", "OLD1"), headers=enf)
        assert r.json()["status"] == "suspended"
        assert r.json()["flags"] == ["suspended", "expired"]
        # issued = false is an unknown plate; so is a missing one.
        for plate in ("GHOST", "NOPE"):
            r = await api.client.post("/v1/plates/query", json=q("CA-QC", plate), headers=enf)
            assert r.status_code == 404
            assert r.headers["content-type"] == "application/problem+json"
        r = await api.client.post("/v1/plates/query", json=q("CA-ON", "ABC123"),
                                  headers=bearer(keys["operator"]))
        full = FullView.model_validate(r.json())
        assert full.owner is not None and full.owner.owner_id == "own-abc123"


async def test_batch_results_in_request_order_with_unknowns(settings, pool, keys) -> None:
    for i in range(5):
        await insert_plate(pool, "US-NY", f"NY{i}", stolen=i == 3)
    await insert_plate(pool, "US-NY", "UNISSUED", issued=False)
    order = ["NY4", "MISSING", "ny-0", "UNISSUED", "NY3", "NY4"]
    body = {"plates": [{"jurisdiction": "us-ny", "plate": p} for p in order],
            "purpose": "traffic_stop", "case_ref": "TS-1"}
    async with running_api(settings) as api:
        r = await api.client.post("/v1/plates/lookup", json=body,
                                  headers=bearer(keys["enforcement"]))
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["plate"] for x in results] == ["NY4", "MISSING", "NY0", "UNISSUED", "NY3",
                                                 "NY4"]
        assert [x["status"] for x in results] == ["valid", "unknown", "valid", "unknown",
                                                  "stolen", "valid"]
        UnknownPlateResult.model_validate(results[1])
        assert all("owner" not in x for x in results)
        r = await api.client.post("/v1/plates/lookup", json=body,
                                  headers=bearer(keys["operator"]))
        assert r.json()["results"][0]["owner"]["owner_id"] == "own-ny4"


async def test_batch_with_invalid_items_lists_their_indexes(settings, pool, keys) -> None:
    body = {"plates": [{"jurisdiction": "CA-ON", "plate": "OK1"},
                       {"jurisdiction": "CA-ON", "plate": "TOO-LONG-PLATE-123"},
                       {"jurisdiction": "CANADA", "plate": "OK2"}], "purpose": "testing"}
    async with running_api(settings) as api:
        r = await api.client.post("/v1/plates/lookup", json=body,
                                  headers=bearer(keys["enforcement"]))
        assert r.status_code == 422
        fields = {e["field"] for e in r.json()["errors"]}
        assert fields == {"plates.1.plate", "plates.2.jurisdiction"}
        assert "TOO-LONG" not in r.text and "CANADA" not in r.text


async def test_candidates_returns_existing_confusable_plates_nearest_first(
        settings, pool, keys) -> None:
    for plate in ("A8C123", "ABC1Z3", "A8CL23", "ABC124", "XBC123"):
        await insert_plate(pool, "CA-ON", plate)
    await insert_plate(pool, "CA-QC", "ABC123")  # other jurisdiction: never a candidate
    async with running_api(settings) as api:
        r = await api.client.post("/v1/plates/candidates", json=q("ca-on", "abc-123"),
                                  headers=bearer(keys["enforcement"]))
        assert r.status_code == 200, r.text
        body = r.json()
        found = [c["plate"] for c in body["candidates"]]
        assert sorted(found) == ["A8C123", "A8CL23", "ABC1Z3"]
        assert found[-1] == "A8CL23"  # two substitutions come after one
        assert body["variants_checked"] == 12 and body["truncated"] is False
        assert all("owner" not in c for c in body["candidates"])
        r = await api.client.post("/v1/plates/candidates", json=q("CA-ON", "A8C123"),
                                  headers=bearer(keys["operator"]))
        assert r.json()["candidates"][0]["plate"] == "A8C123"  # the plate itself first
        assert r.json()["candidates"][0]["owner"] is not None
        r = await api.client.post("/v1/plates/candidates", json=q("CA-ON", "OOOOOOOOOO"),
                                  headers=bearer(keys["enforcement"]))
        assert r.json()["truncated"] is True and r.json()["variants_checked"] == 1024


async def test_history_in_fold_order(settings, pool, keys) -> None:
    key = await insert_plate(pool, "CA-ON", "EVT1")
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    await insert_event(pool, key, "b", "plate.renewed", t, {"expires_on": "2027-01-01"})
    await insert_event(pool, key, "c", "plate.suspended", t - dt.timedelta(days=1),
                       {"reason": "court_order"})
    await insert_event(pool, key, "a", "plate.renewed", t, {"expires_on": "2028-01-01"})
    async with running_api(settings) as api:
        op = bearer(keys["operator"])
        r = await api.client.post("/v1/plates/history", json=q("ca-on", "evt1"), headers=op)
        assert r.status_code == 200
        assert [e["id"] for e in r.json()["events"]] == ["c", "a", "b"]
        assert r.json()["events"][1]["data"] == {"expires_on": "2028-01-01"}
        assert r.json()["truncated"] is False
        r = await api.client.post("/v1/plates/history", json=q("CA-ON", "NONE"), headers=op)
        assert r.status_code == 404


def _view(plate: str, status: str) -> dict:
    return {"jurisdiction": "CA-ON", "plate": plate, "status": status,
            "flags": [] if status == "valid" else [status], "expires_on": "2027-01-31",
            "plate_class": "passenger", "suspension_reasons":
                ["court_order"] if status == "suspended" else [],
            "vehicle": {"make": "Honda", "model": "Civic", "year": 2019, "colour": "blue"},
            "smart_plate": False, "as_of": "2026-11-24T15:04:05Z", "version": 2,
            "owner": {"name": "must never leak"}}


async def test_hotlist_full_list_pages_then_deltas(settings, pool, keys) -> None:
    today = _today(settings)
    flagged = {"H01", "H03", "H05", "H07", "H08"}
    for i in range(10):
        plate = f"H{i:02d}"
        await insert_plate(pool, "CA-ON", plate, stolen=plate in ("H01", "H05"),
                           cancelled=plate == "H03",
                           suspension_reasons=("court_order",) if plate == "H07" else (),
                           expires_on=today - dt.timedelta(days=1) if plate == "H08" else None)
    before = await insert_change(pool, _view("H01", "stolen"), True, False)
    enf = bearer(keys["enforcement"])
    async with running_api(settings) as api:
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            params = {"limit": 2, "purpose": "alpr_hit"} | ({"since": cursor} if cursor else {})
            r = await api.client.get("/v1/hotlist", params=params, headers=enf)
            assert r.status_code == 200, r.text
            page = r.json()
            for e in page["entries"]:
                HotlistEntry.model_validate(e)
                assert e["removed"] is False
            seen += [e["plate"] for e in page["entries"]]
            cursor = page["next"]
            if len(page["entries"]) < 2:
                break
        assert seen == sorted(flagged)
        # The cursor after the full list covers the changes before it ...
        r = await api.client.get("/v1/hotlist", params={"since": cursor, "purpose": "alpr_hit"},
                                 headers=enf)
        assert r.json()["entries"] == [] and before > 0
        # ... and then yields every flagged-related change in order.
        await insert_change(pool, _view("H02", "valid"), False, False)       # not hotlist
        await insert_change(pool, _view("H07", "stolen"), True, True)        # still flagged
        await insert_change(pool, _view("H01", "valid"), False, True)        # leaves
        await insert_change(pool, _view("H09", "suspended"), True, False)    # enters
        r = await api.client.get("/v1/hotlist", params={"since": cursor, "limit": 2,
                                                                "purpose": "alpr_hit"},
                                 headers=enf)
        first = r.json()
        # The valid -> valid change of H02 is not a hotlist change.
        assert [(e["plate"], e["status"], e["removed"]) for e in first["entries"]] == [
            ("H07", "stolen", False), ("H01", "valid", True)]
        r = await api.client.get("/v1/hotlist", params={"since": first["next"],
                                                                "purpose": "alpr_hit"}, headers=enf)
        second = r.json()
        assert [(e["plate"], e["removed"]) for e in second["entries"]] == [("H09", False)]
        assert all("owner" not in e for e in first["entries"] + second["entries"])
        r = await api.client.get("/v1/hotlist", params={"since": second["next"],
                                                                "purpose": "alpr_hit"}, headers=enf)
        assert r.json() == {"entries": [], "next": second["next"]}


async def test_owner_query_gives_plates_notices_and_preferences(settings, pool, keys) -> None:
    await insert_plate(pool, "CA-ON", "OWN1", owner_data=owner("o-1", "Ann Smith"))
    await insert_plate(pool, "CA-QC", "OWN2", owner_data=owner("o-1", "Ann Smith"))
    await insert_plate(pool, "CA-ON", "OTHER", owner_data=owner("o-2"))
    nid = await pool.fetchval(
        "INSERT INTO notices (notice_id, dedupe_key, kind, plate_key, owner_id, language,"
        " channels, context) VALUES (gen_random_uuid(), 'k1', 'renewal_reminder',"
        " 'CA-ON/OWN1', 'o-1', 'en', '{email}', '{\"days_before\": 30}') RETURNING notice_id")
    await pool.execute(
        "INSERT INTO notice_deliveries (notice_id, channel, attempt, outcome, status_code)"
        " VALUES ($1, 'email', 1, 'retry', 503), ($1, 'email', 2, 'sent', NULL)", nid)
    await pool.execute("INSERT INTO owner_preferences (owner_id, channels, language)"
                       " VALUES ('o-1', '{sms,plate_display}', 'fr')")
    op = bearer(keys["operator"])
    body = {"owner_id": "o-1", "purpose": "registry_administration", "case_ref": "REQ-1"}
    async with running_api(settings) as api:
        r = await api.client.post("/v1/owners/query", json=body, headers=op)
        assert r.status_code == 200, r.text
        record = OwnerRecord.model_validate(r.json())
        assert [(p.jurisdiction, p.plate) for p in record.plates] == [
            ("CA-ON", "OWN1"), ("CA-QC", "OWN2")]
        assert record.plates[0].owner is not None and record.plates[0].owner.name == "Ann Smith"
        (notice,) = r.json()["notices"]
        assert notice["plate"] == "OWN1" and notice["context"] == {"days_before": 30}
        assert [(d["attempt"], d["outcome"]) for d in notice["deliveries"]] == [
            (1, "retry"), (2, "sent")]
        assert (r.json()["preferences"]["channels"], r.json()["preferences"]["language"]) == (
            ["sms", "plate_display"], "fr")
        r = await api.client.post("/v1/owners/query", headers=op,
                                  json={**body, "owner_id": "nobody"})
        assert r.json() == {"owner_id": "nobody", "plates": [], "notices": [], "preferences": {
            "owner_id": "nobody", "channels": None, "language": None, "updated_at": None}}
        for bad in ({**body, "owner_id": "bad id"}, {"owner_id": "o-1"},
                    {**body, "purpose": "curiosity"}, {**body, "case_ref": "a b"}):
            r = await api.client.post("/v1/owners/query", headers=op, json=bad)
            assert r.status_code == 422, bad
            assert "curiosity" not in r.text and "bad id" not in r.text
    rows = await pool.fetch("SELECT kind, jurisdiction, plate, owner_id, purpose, case_ref,"
                            " result FROM audit_log WHERE owner_id = 'o-1' ORDER BY id")
    why = ("registry_administration", "REQ-1")
    assert [tuple(r) for r in rows] == [
        ("owner", "CA-ON", "OWN1", "o-1", *why, "valid"),
        ("owner", "CA-QC", "OWN2", "o-1", *why, "valid"),
        ("owner_notices", "CA-ON", "OWN1", "o-1", *why, "renewal_reminder"),
        ("owner_preferences", None, None, "o-1", *why, "found")]


async def test_audit_query_filters_and_pages(settings, pool, keys) -> None:
    await insert_plate(pool, "CA-ON", "AUD1")
    op = bearer(keys["operator"])
    review = {"purpose": "audit_review"}
    async with running_api(settings) as api:
        for _ in range(5):
            await api.client.post("/v1/plates/query", json=q("ca-on", "aud1", case_ref="C-9"),
                                  headers=bearer(keys["enforcement"]))
        await api.client.post("/v1/plates/query", json=q("CA-ON", "AUD2"), headers=op)
        query = {**review, "jurisdiction": "ca-on", "plate": "aud-1", "limit": 2}
        r = await api.client.post("/v1/audit/query", json=query, headers=op)
        entries, cursor = r.json()["entries"], r.json()["next"]
        while cursor:
            assert "AUD1" not in cursor and "aud" not in cursor.lower()
            r = await api.client.post("/v1/audit/query", json={**query, "cursor": cursor},
                                      headers=op)
            entries += r.json()["entries"]
            cursor = r.json()["next"]
        assert len(entries) == 5 and {e["result"] for e in entries} == {"valid"}
        assert {(e["purpose"], e["case_ref"], e["kind"]) for e in entries} == {
            ("testing", "C-9", "single")}
        enf_id = keys["enforcement"].split("_")[1]
        r = await api.client.post("/v1/audit/query", json={**review, "key_id": enf_id},
                                  headers=op)
        assert len(r.json()["entries"]) == 5
        r = await api.client.post("/v1/audit/query", headers=op,
                                  json={**review, "since": "2199-01-01T00:00:00Z"})
        assert r.json()["entries"] == []
        r = await api.client.post("/v1/audit/query", json={**review, "plate": "AUD2"},
                                  headers=op)
        assert r.status_code == 422  # plate needs jurisdiction
        for bad in ({"since": "yesterday"}, {"since": "2026-01-01T00:00:00"},
                    {"since": "2999-01-01T00:00:00Z"},          # outside 1900..2200
                    {"cursor": "%%%"}, {"cursor": "ZDox"}, {"limit": 0}, {"key_id": "UPPER"},
                    {"purpose": None}, {"purpose": "curiosity"}):
            r = await api.client.post("/v1/audit/query", json={**review, **bad}, headers=op)
            assert r.status_code in (400, 422), bad
            assert r.headers["content-type"] == "application/problem+json"
        r = await api.client.post("/v1/audit/query", json={"key_id": enf_id}, headers=op)
        assert r.status_code == 422  # purpose is required here too
    # The audit query is itself audited.
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE kind = 'audit'"
                               " AND purpose = 'audit_review'") >= 5


async def test_at_folds_the_kept_history_with_flags_for_that_day(settings, pool,
                                                                  keys) -> None:
    """`at` against the stored history: before the issue 404; after a suspension the
    suspended view; expiry judged on the day of `at` in the registry's time zone
    (America/Toronto: 03:59Z on 1 November is still 31 October there)."""
    key = await insert_plate(pool, "CA-ON", "HIST1", suspension_reasons=("unpaid_fines",))
    t = dt.datetime(2026, 10, 1, 12, tzinfo=dt.UTC)
    await insert_event(pool, key, "e1", "plate.issued", t, {
        "plate_class": "passenger", "expires_on": "2026-10-31", "owner": owner("own-h")})
    await insert_event(pool, key, "e2", "plate.suspended", t + dt.timedelta(days=2),
                       {"reason": "unpaid_fines"})
    await insert_event(pool, key, "e3", "plate.renewed", dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
                       {"expires_on": "2027-10-31"})
    enf = bearer(keys["enforcement"])
    async with running_api(settings) as api:
        async def at(text: str, role: str = "enforcement") -> httpx.Response:
            return await api.client.post("/v1/plates/query", headers=bearer(keys[role]),
                                         json=q("ca-on", "hist1", at=text))

        assert (await at("2026-10-01T11:59:59Z")).status_code == 404
        r = await at("2026-10-01T12:00:00Z")
        assert (r.json()["status"], r.json()["version"], r.json()["flags"]) == ("valid", 1, [])
        assert r.json()["as_of"] == "2026-10-01T12:00:00Z" and "owner" not in r.json()
        r = await at("2026-11-01T03:59:59Z")
        assert (r.json()["flags"], r.json()["version"]) == (["suspended"], 2)
        r = await at("2026-11-01T00:00:00-04:00", role="operator")
        assert r.json()["flags"] == ["suspended", "expired"]
        assert r.json()["owner"]["owner_id"] == "own-h"
        r = await at("2026-11-03T00:00:00Z")
        assert (r.json()["flags"], r.json()["version"]) == (["suspended"], 3)
        r = await api.client.post("/v1/plates/lookup", headers=enf, json={
            "plates": [{"jurisdiction": "CA-ON", "plate": "HIST1"},
                       {"jurisdiction": "CA-ON", "plate": "NOHIST"}],
            "purpose": "collision", "at": "2026-11-01T04:00:00Z"})
        assert [x["status"] for x in r.json()["results"]] == ["suspended", "unknown"]
        assert r.json()["results"][0]["flags"] == ["suspended", "expired"]
        for bad in ("2026-11-01", "2026-11-01T00:00:00", "soon"):
            assert (await at(bad)).status_code == 422
    row = await pool.fetchrow("SELECT purpose, as_at FROM audit_log WHERE plate = 'NOHIST'")
    assert (row["purpose"], row["as_at"]) == ("collision",
                                              dt.datetime(2026, 11, 1, 4, tzinfo=dt.UTC))
