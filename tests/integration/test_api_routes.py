"""Registry API routes against the real PostgreSQL: views, batch, candidates, events,
hotlist paging, owners, audit query."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg
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
from schemas.views import EnforcementView, FullView, HotlistEntry, UnknownPlateResult

pytestmark = pytest.mark.integration


@pytest.fixture
async def keys(pool: asyncpg.Pool) -> dict[str, str]:
    return await role_keys(pool)


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
        for spelling in ("/v1/plates/ca-on/abc-123", "/v1/plates/CA-ON/ABC%20123",
                         "/v1/plates/Ca-On/a.b.c.1.2.3"):
            r = await api.client.get(spelling, headers=enf)
            assert r.status_code == 200, r.text
            view = EnforcementView.model_validate(r.json())
            assert (view.jurisdiction, view.plate) == ("CA-ON", "ABC123")
            assert view.status == "valid" and view.flags == []  # expiring today: still valid
            assert "owner" not in r.json()
        r = await api.client.get("/v1/plates/CA-ON/OLD1", headers=enf)
        assert r.json()["status"] == "suspended"
        assert r.json()["flags"] == ["suspended", "expired"]
        # issued = false is an unknown plate; so is a missing one.
        for path in ("/v1/plates/CA-QC/GHOST", "/v1/plates/CA-QC/NOPE"):
            r = await api.client.get(path, headers=enf)
            assert r.status_code == 404
            assert r.headers["content-type"] == "application/problem+json"
        for role in ("portal", "operator"):
            r = await api.client.get("/v1/plates/CA-ON/ABC123", headers=bearer(keys[role]))
            full = FullView.model_validate(r.json())
            assert full.owner is not None and full.owner.owner_id == "own-abc123"


async def test_batch_results_in_request_order_with_unknowns(settings, pool, keys) -> None:
    for i in range(5):
        await insert_plate(pool, "US-NY", f"NY{i}", stolen=i == 3)
    await insert_plate(pool, "US-NY", "UNISSUED", issued=False)
    order = ["NY4", "MISSING", "ny-0", "UNISSUED", "NY3", "NY4"]
    body = {"plates": [{"jurisdiction": "us-ny", "plate": p} for p in order],
            "purpose": "checkpoint"}
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
                       {"jurisdiction": "CANADA", "plate": "OK2"}]}
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
        r = await api.client.get("/v1/plates/ca-on/abc-123/candidates",
                                 headers=bearer(keys["enforcement"]))
        assert r.status_code == 200, r.text
        body = r.json()
        found = [c["plate"] for c in body["candidates"]]
        assert sorted(found) == ["A8C123", "A8CL23", "ABC1Z3"]
        assert found[-1] == "A8CL23"  # two substitutions come after one
        assert body["variants_checked"] == 12 and body["truncated"] is False
        assert all("owner" not in c for c in body["candidates"])
        r = await api.client.get("/v1/plates/CA-ON/A8C123/candidates",
                                 headers=bearer(keys["operator"]))
        assert r.json()["candidates"][0]["plate"] == "A8C123"  # the plate itself first
        assert r.json()["candidates"][0]["owner"] is not None
        r = await api.client.get("/v1/plates/CA-ON/OOOOOOOOOO/candidates",
                                 headers=bearer(keys["enforcement"]))
        assert r.json()["truncated"] is True and r.json()["variants_checked"] == 1024


async def test_events_in_fold_order(settings, pool, keys) -> None:
    key = await insert_plate(pool, "CA-ON", "EVT1")
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    await insert_event(pool, key, "b", "plate.renewed", t, {"expires_on": "2027-01-01"})
    await insert_event(pool, key, "c", "plate.suspended", t - dt.timedelta(days=1),
                       {"reason": "court_order"})
    await insert_event(pool, key, "a", "plate.renewed", t, {"expires_on": "2028-01-01"})
    async with running_api(settings) as api:
        r = await api.client.get("/v1/plates/ca-on/evt1/events", headers=bearer(keys["operator"]))
        assert r.status_code == 200
        assert [e["id"] for e in r.json()["events"]] == ["c", "a", "b"]
        assert r.json()["events"][1]["data"] == {"expires_on": "2028-01-01"}
        r = await api.client.get("/v1/plates/ca-on/evt1/events",
                                 params={"limit": 2}, headers=bearer(keys["operator"]))
        assert len(r.json()["events"]) == 2 and r.json()["truncated"] is True
        r = await api.client.get("/v1/plates/CA-ON/NONE/events", headers=bearer(keys["operator"]))
        assert r.status_code == 404


def _view(plate: str, status: str) -> dict:
    return {"jurisdiction": "CA-ON", "plate": plate, "status": status,
            "flags": [] if status == "valid" else [status], "expires_on": "2027-01-31",
            "plate_class": "passenger", "suspension_reasons":
                ["court_order"] if status == "suspended" else [],
            "vehicle": {"make": "Honda", "model": "Civic", "year": 2019, "colour": "blue"},
            "smart_plate": False, "as_of": "2026-11-24T15:04:05Z",
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
            params = {"limit": 2} | ({"since": cursor} if cursor else {})
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
        r = await api.client.get("/v1/hotlist", params={"since": cursor}, headers=enf)
        assert r.json()["entries"] == [] and before > 0
        # ... and then yields every flagged-related change in order.
        await insert_change(pool, _view("H02", "valid"), False, False)       # not hotlist
        await insert_change(pool, _view("H07", "stolen"), True, True)        # still flagged
        await insert_change(pool, _view("H01", "valid"), False, True)        # leaves
        await insert_change(pool, _view("H09", "suspended"), True, False)    # enters
        r = await api.client.get("/v1/hotlist", params={"since": cursor, "limit": 2},
                                 headers=enf)
        first = r.json()
        # The valid -> valid change of H02 is not a hotlist change.
        assert [(e["plate"], e["status"], e["removed"]) for e in first["entries"]] == [
            ("H07", "stolen", False), ("H01", "valid", True)]
        r = await api.client.get("/v1/hotlist", params={"since": first["next"]}, headers=enf)
        second = r.json()
        assert [(e["plate"], e["removed"]) for e in second["entries"]] == [("H09", False)]
        assert all("owner" not in e for e in first["entries"] + second["entries"])
        r = await api.client.get("/v1/hotlist", params={"since": second["next"]}, headers=enf)
        assert r.json() == {"entries": [], "next": second["next"]}


async def test_owner_plates_notices_and_preferences(settings, pool, keys) -> None:
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
    portal = bearer(keys["portal"])
    async with running_api(settings) as api:
        r = await api.client.get("/v1/owners/o-1/plates", headers=portal)
        assert r.status_code == 200
        assert [(p["jurisdiction"], p["plate"]) for p in r.json()["plates"]] == [
            ("CA-ON", "OWN1"), ("CA-QC", "OWN2")]
        assert r.json()["plates"][0]["owner"]["name"] == "Ann Smith"
        r = await api.client.get("/v1/owners/o-1/notices", headers=portal)
        (notice,) = r.json()["notices"]
        assert notice["plate"] == "OWN1" and notice["context"] == {"days_before": 30}
        assert [(d["attempt"], d["outcome"]) for d in notice["deliveries"]] == [
            (1, "retry"), (2, "sent")]
        r = await api.client.get("/v1/owners/o-1/preferences", headers=portal)
        assert r.json()["channels"] is None
        r = await api.client.put("/v1/owners/o-1/preferences", headers=portal,
                                 json={"channels": ["sms", "plate_display"], "language": "fr"})
        assert r.status_code == 200 and r.json()["channels"] == ["sms", "plate_display"]
        r = await api.client.get("/v1/owners/o-1/preferences", headers=portal)
        assert (r.json()["channels"], r.json()["language"]) == (["sms", "plate_display"], "fr")
        for bad in ({"channels": []}, {"channels": ["fax"]}, {"channels": ["sms", "sms"]},
                    {"channels": ["sms"], "language": "de"}, {"channels": ["sms"], "x": 1}):
            r = await api.client.put("/v1/owners/o-1/preferences", headers=portal, json=bad)
            assert r.status_code == 422, bad
        r = await api.client.get("/v1/owners/bad%20id/plates", headers=portal)
        assert r.status_code == 422


async def test_audit_query_filters_and_pages(settings, pool, keys) -> None:
    await insert_plate(pool, "CA-ON", "AUD1")
    op = bearer(keys["operator"])
    async with running_api(settings) as api:
        for _ in range(5):
            await api.client.get("/v1/plates/ca-on/aud1", headers=bearer(keys["enforcement"]),
                                 )
        await api.client.get("/v1/plates/CA-ON/AUD2", headers=op)
        await api.flush()
        r = await api.client.get("/v1/audit", params={"jurisdiction": "ca-on", "plate": "aud-1",
                                                      "limit": 2}, headers=op)
        entries, cursor = r.json()["entries"], r.json()["next"]
        while cursor:
            r = await api.client.get("/v1/audit", params={
                "jurisdiction": "ca-on", "plate": "aud-1", "limit": 2, "cursor": cursor},
                headers=op)
            entries += r.json()["entries"]
            cursor = r.json()["next"]
        assert len(entries) == 5 and {e["result"] for e in entries} == {"valid"}
        enf_id = keys["enforcement"].split("_")[1]
        r = await api.client.get("/v1/audit", params={"key_id": enf_id}, headers=op)
        assert len(r.json()["entries"]) == 5
        r = await api.client.get("/v1/audit", params={"since": "2199-01-01T00:00:00Z"},
                                 headers=op)
        assert r.json()["entries"] == []
        r = await api.client.get("/v1/audit", params={"plate": "AUD2"}, headers=op)
        assert r.status_code == 422  # plate needs jurisdiction
        for bad in ({"since": "yesterday"}, {"since": "2026-01-01T00:00:00"},
                    {"since": "2999-01-01T00:00:00Z"},          # outside 1900..2200
                    {"cursor": "%%%"}, {"limit": 0}, {"key_id": "UPPER"}):
            r = await api.client.get("/v1/audit", params=bad, headers=op)
            assert r.status_code in (400, 422), bad
            assert r.headers["content-type"] == "application/problem+json"
