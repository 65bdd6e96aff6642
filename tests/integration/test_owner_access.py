"""Owner tokens and the /v1/me routes against the real PostgreSQL: sign-in links work once
and for 14 days, portal mints are audited and limited per owner in a budget apart from
the owner's own sign-ins, an owner token sees only its owner's data whatever ids a
request carries, PUT takes what GET returns, and every mint and owner read is in the
audit log."""

from __future__ import annotations

import datetime as dt
import time

import asyncpg
import pytest
from api_helpers import bearer, insert_event, insert_plate, owner, role_keys, running_api
from owner_support import OWNER_KEY, PREVIOUS_KEY, insert_notice, read_plate

from platereg.metrics import AUTH_FAILURES
from platereg.security.keys import create_key
from platereg.security.owner_links import link_token_hash, mint_link_token, mint_sign_in_link
from registry.owner.tokens import OwnerTokens

pytestmark = pytest.mark.integration


@pytest.fixture
async def keys(pool: asyncpg.Pool) -> dict[str, str]:
    return await role_keys(pool)


def _key_id(key: str) -> str:
    return key.split("_")[1]


async def _plates(pool: asyncpg.Pool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"),
                       suspension_reasons=("insurance_lapsed",))
    await insert_plate(pool, "CA-QC", "AAA222", owner_data=owner("own-a", "Alice A"))
    await insert_plate(pool, "CA-ON", "BBB111", owner_data=owner("own-b", "Bob B"))


async def _link_session(api, pool, owner_id: str) -> str:
    token = await mint_link_token(pool, owner_id, None)
    r = await api.client.post("/v1/owner-sessions/link", json={"link_token": token})
    assert r.status_code == 201, r.text
    return r.json()["token"]


async def test_sign_in_links_work_once_and_for_fourteen_days(settings, pool) -> None:
    await _plates(pool)
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        link = await mint_sign_in_link(pool, settings.owner_page_url, "own-a")
        assert link.startswith(settings.owner_page_url + "?token=")
        token = link.split("token=", 1)[1]
        stored = await pool.fetchrow("SELECT * FROM owner_tokens WHERE owner_id = 'own-a'")
        assert stored["token_hash"] == link_token_hash(token) != token  # only the hash
        assert stored["expires_at"] - stored["created_at"] == dt.timedelta(days=14)

        r = await api.client.post("/v1/owner-sessions/link", json={"link_token": token})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["token"].startswith("ot_")
        expires = dt.datetime.fromisoformat(body["expires_at"])
        assert dt.timedelta(minutes=14) < expires - dt.datetime.now(dt.UTC) \
            <= dt.timedelta(minutes=15)
        again = await api.client.post("/v1/owner-sessions/link", json={"link_token": token})
        assert again.status_code == 410
        assert again.headers["content-type"] == "application/problem+json"
        assert "already been used" in again.json()["detail"]

        old = await mint_link_token(pool, "own-a", None,
                                    dt.datetime.now(dt.UTC) - dt.timedelta(days=15))
        r = await api.client.post("/v1/owner-sessions/link", json={"link_token": old})
        assert r.status_code == 410 and "expired" in r.json()["detail"]
        assert (await pool.fetchval("SELECT used_at FROM owner_tokens WHERE token_hash = $1",
                                    link_token_hash(old))) is None
        r = await api.client.post("/v1/owner-sessions/link",
                                  json={"link_token": "x" * 43})
        assert r.status_code == 401
        r = await api.client.post("/v1/owner-sessions/link", json={"token": token})
        assert r.status_code == 422 and token not in r.text
    rows = await pool.fetch("SELECT key_id, kind, owner_id, result FROM audit_log"
                            " WHERE kind = 'owner_session'")
    assert [tuple(r) for r in rows] == [("link", "owner_session", "own-a", "minted")]


async def test_portal_mints_are_audited_and_limited_per_owner(settings, pool, keys) -> None:
    await _plates(pool)
    async with running_api(settings, owner_token_keys=[OWNER_KEY],
                           owner_portal_sessions_per_hour=3, owner_sessions_per_hour=2) as api:
        for role in ("enforcement", "operator", "ingest"):
            r = await api.client.post("/v1/owner-sessions", headers=bearer(keys[role]),
                                      json={"owner_id": "own-a"})
            assert r.status_code == 403, role
        assert (await api.client.post("/v1/owner-sessions", json={"owner_id": "own-a"})
                ).status_code == 401
        portal = bearer(keys["portal"])
        for _ in range(3):
            r = await api.client.post("/v1/owner-sessions", headers=portal,
                                      json={"owner_id": "own-a"})
            assert r.status_code == 201, r.text
        r = await api.client.post("/v1/owner-sessions", headers=portal,
                                  json={"owner_id": "own-a"})
        assert r.status_code == 429
        assert 3000 < int(r.headers["Retry-After"]) <= 3600
        # The limit is per owner: another owner still gets a token.
        r = await api.client.post("/v1/owner-sessions", headers=portal,
                                  json={"owner_id": "own-b"})
        assert r.status_code == 201
        # A portal cannot use up the owner's own sign-ins, nor another portal's budget.
        link = await mint_link_token(pool, "own-a", None)
        r = await api.client.post("/v1/owner-sessions/link", json={"link_token": link})
        assert r.status_code == 201, r.text
        _, second = await create_key(pool, role="portal", name="second portal")
        r = await api.client.post("/v1/owner-sessions", headers=bearer(second),
                                  json={"owner_id": "own-a"})
        assert r.status_code == 201
        # The owner's own budget: past it 429, and the refused link is not used up.
        await _link_session(api, pool, "own-a")
        link = await mint_link_token(pool, "own-a", None)
        r = await api.client.post("/v1/owner-sessions/link", json={"link_token": link})
        assert r.status_code == 429
        assert await pool.fetchval("SELECT used_at FROM owner_tokens WHERE token_hash = $1",
                                   link_token_hash(link)) is None
        r = await api.client.post("/v1/owner-sessions", headers=bearer(second),
                                  json={"owner_id": "own-a"})
        assert r.status_code == 201
        r = await api.client.post("/v1/owner-sessions", headers=portal,
                                  json={"owner_id": "own a"})
        assert r.status_code == 422
    rows = await pool.fetch("SELECT key_id, owner_id FROM audit_log"
                            " WHERE kind = 'owner_session' ORDER BY id")
    portal_id, second_id = _key_id(keys["portal"]), _key_id(second)
    assert [tuple(r) for r in rows] == [(portal_id, "own-a")] * 3 + [
        (portal_id, "own-b"), ("link", "own-a"), (second_id, "own-a"), ("link", "own-a"),
        (second_id, "own-a")]


async def test_put_preferences_takes_what_get_returns(settings, pool) -> None:
    await _plates(pool)
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        me = bearer(await _link_session(api, pool, "own-a"))
        # No choice yet: the defaults (null) go back and forth unchanged.
        got = (await api.client.get("/v1/me/preferences", headers=me)).json()
        assert got == {"owner_id": "own-a", "channels": None, "language": None,
                       "updated_at": None}
        r = await api.client.put("/v1/me/preferences", headers=me, json=got)
        assert r.status_code == 200, r.text
        assert r.json()["channels"] is None and r.json()["language"] is None
        # Every channel offered, a language: GET's body, edited, then PUT as it is.
        got = (await api.client.get("/v1/me/preferences", headers=me)).json()
        got |= {"channels": ["email", "sms", "plate_display", "paper"], "language": "fr"}
        r = await api.client.put("/v1/me/preferences", headers=me, json=got)
        assert r.status_code == 200, r.text
        again = (await api.client.get("/v1/me/preferences", headers=me)).json()
        r = await api.client.put("/v1/me/preferences", headers=me, json=again)
        assert r.status_code == 200, r.text
        assert {k: v for k, v in r.json().items() if k != "updated_at"} == {
            k: v for k, v in again.items() if k != "updated_at"}
        # Webhooks are not offered here (PLATEREG_OWNER_WEBHOOKS off)...
        r = await api.client.put("/v1/me/preferences", headers=me,
                                 json=again | {"channels": ["webhook"]})
        assert r.status_code == 422 and "webhook" in r.text
        # ...but an owner who has one (set up by their portal) keeps it through a round trip.
        await pool.execute("UPDATE owner_preferences SET channels = '{webhook,email}',"
                           " webhook_url = 'https://hooks.example.org/a'")
        got = (await api.client.get("/v1/me/preferences", headers=me)).json()
        assert (await api.client.put("/v1/me/preferences", headers=me, json=got)
                ).status_code == 200
        # Read-only owner_id: another owner's is refused, as is an unknown field.
        r = await api.client.put("/v1/me/preferences", headers=me,
                                 json=got | {"owner_id": "own-b"})
        assert r.status_code == 422 and "read-only" in r.text
        r = await api.client.put("/v1/me/preferences", headers=me, json=got | {"extra": 1})
        assert r.status_code == 422
    async with running_api(settings, owner_token_keys=[OWNER_KEY], owner_webhooks=True) as api:
        me = bearer(await _link_session(api, pool, "own-b"))
        r = await api.client.put("/v1/me/preferences", headers=me,
                                 json={"channels": ["webhook", "paper"], "language": None})
        assert r.status_code == 200, r.text


async def test_owner_token_sees_only_its_owner(settings, pool, keys) -> None:
    await _plates(pool)
    await insert_notice(pool, "own-a", "CA-ON/AAA111", "renewal_reminder",
                        [("email", "retry"), ("email", "sent")],
                        context={"expires_on": "2027-01-01", "days_before": 30})
    await insert_notice(pool, "own-b", "CA-ON/BBB111", "suspended", [("sms", "sent")])
    await pool.execute("INSERT INTO owner_preferences (owner_id, channels, language)"
                       " VALUES ('own-b', '{sms}', 'en')")
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        token = await _link_session(api, pool, "own-a")
        me = bearer(token)
        # Ids in the query are not parameters of these routes: still own-a's data only.
        r = await api.client.get("/v1/me/plates?owner_id=own-b", headers=me)
        assert r.status_code == 200, r.text
        plates = r.json()["plates"]
        assert sorted(p["plate"] for p in plates) == ["AAA111", "AAA222"]
        assert {p["owner"]["owner_id"] for p in plates} == {"own-a"}
        assert "Bob" not in r.text and "own-b" not in r.text
        r = await api.client.get("/v1/me/notices", headers=me)
        notices = r.json()["notices"]
        assert [n["plate"] for n in notices] == ["AAA111"]
        assert [(d["attempt"], d["outcome"]) for d in notices[0]["deliveries"]] == [
            (1, "retry"), (2, "sent")]
        # Another owner's id in a body is refused; B's preferences stay as they were.
        r = await api.client.put("/v1/me/preferences", headers=me, json={
            "owner_id": "own-b", "channels": ["paper"], "language": "fr"})
        assert r.status_code == 422
        r = await api.client.put("/v1/me/preferences", headers=me,
                                 json={"channels": ["email", "paper"], "language": "fr"})
        assert r.status_code == 200 and r.json()["owner_id"] == "own-a"
        assert (await api.client.get("/v1/me/preferences", headers=me)).json()["channels"] \
            == ["email", "paper"]
        b = await pool.fetchrow("SELECT channels, language FROM owner_preferences"
                                " WHERE owner_id = 'own-b'")
        assert (list(b["channels"]), b["language"]) == (["sms"], "en")
        # Routes for API keys, about owner B or anyone: 403 for an owner token.
        for method, path, body in (
                ("POST", "/v1/owners/query", {"owner_id": "own-b", "purpose": "testing"}),
                ("POST", "/v1/plates/query", {"jurisdiction": "CA-ON", "plate": "BBB111",
                                              "purpose": "testing"}),
                ("GET", "/v1/hotlist?purpose=testing", None),
                ("POST", "/v1/audit/query", {"purpose": "audit_review"})):
            r = await api.client.request(method, path, headers=me, json=body)
            assert r.status_code == 403, (path, r.status_code)
            assert "Bob" not in r.text
        r = await api.client.post("/v1/owner-sessions", headers=me, json={"owner_id": "own-b"})
        assert r.status_code == 403
        # API keys on /v1/me: 403 (a valid key, a role without these routes); none: 401.
        for role in ("portal", "operator", "enforcement"):
            assert (await api.client.get("/v1/me/plates", headers=bearer(keys[role]))
                    ).status_code == 403
        assert (await api.client.get("/v1/me/plates")).status_code == 401
    rows = await pool.fetch("SELECT key_id, kind, jurisdiction, plate, owner_id FROM audit_log"
                            " WHERE key_id = 'owner' ORDER BY id")
    assert {r["owner_id"] for r in rows} == {"own-a"}
    kinds = [r["kind"] for r in rows]
    assert kinds.count("owner_self") == 2 and "owner_notices" in kinds
    assert "owner_preferences" in kinds


async def test_expired_forged_and_signed_out_tokens_are_refused(settings, pool) -> None:
    await _plates(pool)
    async with running_api(settings, owner_token_keys=[OWNER_KEY, PREVIOUS_KEY]) as api:
        token = await _link_session(api, pool, "own-a")
        session = await pool.fetchval("SELECT session_id FROM owner_sessions")
        expired_before = AUTH_FAILURES.labels("expired_token")._value.get()
        past = OwnerTokens([OWNER_KEY], 15, lambda: time.time() - 16 * 60)
        r = await api.client.get("/v1/me/plates", headers=bearer(past.mint("own-a", session)))
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        assert AUTH_FAILURES.labels("expired_token")._value.get() == expired_before + 1
        # Signed with the previous key (rotation): accepted; with an unknown key: refused.
        previous = OwnerTokens([PREVIOUS_KEY], 15, time.time).mint("own-a", session)
        assert (await api.client.get("/v1/me/plates", headers=bearer(previous))
                ).status_code == 200
        forged = OwnerTokens(["f" * 40], 15, time.time).mint("own-b", session)
        assert (await api.client.get("/v1/me/plates", headers=bearer(forged))
                ).status_code == 401
        # A token naming another owner with this session (signed right) is still refused.
        other = OwnerTokens([OWNER_KEY], 15, time.time).mint("own-b", session)
        assert (await api.client.get("/v1/me/plates", headers=bearer(other))
                ).status_code == 401
        assert (await api.client.get("/v1/me/plates", headers=bearer(token))).status_code == 200
        await pool.execute("UPDATE owner_sessions SET revoked_at = now()")
        r = await api.client.get("/v1/me/plates", headers=bearer(token))
        assert r.status_code == 401 and "ended" in r.json()["detail"]


async def test_owner_routes_without_a_key_configured_say_which_variable(settings, pool) -> None:
    async with running_api(settings, owner_token_keys=[]) as api:
        r = await api.client.post("/v1/owner-sessions/link", json={"link_token": "x" * 43})
        assert r.status_code == 503
        assert "PLATEREG_OWNER_TOKEN_KEYS" in r.json()["detail"]


async def test_access_log_lists_reads_of_my_plates_and_nobody_elses(settings, pool,
                                                                    keys) -> None:
    await _plates(pool)
    now = dt.datetime.now(dt.UTC)
    # AAA222 became own-a's an hour ago; a read before that was about its previous owner.
    await insert_event(pool, "CA-QC/AAA222", "tr-1", "plate.transferred",
                       now - dt.timedelta(hours=1), {"owner": owner("own-a")})
    await pool.execute(
        "INSERT INTO audit_log (at, key_id, kind, jurisdiction, plate, purpose, result)"
        " VALUES ($1, $2, 'single', 'CA-QC', 'AAA222', 'investigation', 'valid')",
        now - dt.timedelta(hours=2), _key_id(keys["operator"]))
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        for jurisdiction, plate in (("CA-ON", "AAA111"), ("CA-ON", "BBB111"),
                                    ("CA-QC", "AAA222")):
            r = await read_plate(api.client, keys["enforcement"], jurisdiction, plate,
                                 "traffic_stop")
            assert r.status_code == 200, r.text
        token = await _link_session(api, pool, "own-a")
        r = await api.client.get("/v1/me/access-log", headers=bearer(token))
        assert r.status_code == 200, r.text
        entries = r.json()["entries"]
    seen = sorted((e["jurisdiction"], e["plate"], e["key_name"], e["role"], e["purpose"])
                  for e in entries)
    assert seen == [("CA-ON", "AAA111", "test enforcement", "enforcement", "traffic_stop"),
                    ("CA-QC", "AAA222", "test enforcement", "enforcement", "traffic_stop")]
    assert all(e["at"] for e in entries)
    assert "BBB111" not in r.text and "investigation" not in r.text


async def test_owner_tokens_are_rate_limited_per_session_in_units(settings, pool) -> None:
    await _plates(pool)
    async with running_api(settings, owner_token_keys=[OWNER_KEY], rate_limit_burst=3,
                           owner_requests_per_second=0.01) as api:
        me = bearer(await _link_session(api, pool, "own-a"))
        r = await api.client.get("/v1/me/preferences", headers=me)
        assert r.status_code == 200
        assert (r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"]) == ("3", "2")
        r = await api.client.get("/v1/me/plates", headers=me)  # two plates: two units
        assert r.status_code == 200 and r.headers["RateLimit-Remaining"] == "0"
        r = await api.client.get("/v1/me/plates", headers=me)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.headers["RateLimit-Remaining"] == "0"
        # Another owner's session has its own bucket.
        other = bearer(await _link_session(api, pool, "own-b"))
        assert (await api.client.get("/v1/me/plates", headers=other)).status_code == 200


async def test_a_portal_key_reads_no_owner_data_directly(settings, pool, keys) -> None:
    """Portal keys reach owner data only through owner tokens (contract section 5)."""
    await _plates(pool)
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        portal = bearer(keys["portal"])
        for path, body in (("/v1/plates/query", {"jurisdiction": "CA-ON", "plate": "AAA111",
                                                 "purpose": "testing"}),
                           ("/v1/plates/lookup", {"plates": [{"jurisdiction": "CA-ON",
                                                              "plate": "AAA111"}],
                                                  "purpose": "testing"}),
                           ("/v1/owners/query", {"owner_id": "own-a", "purpose": "testing"})):
            r = await api.client.post(path, headers=portal, json=body)
            assert r.status_code == 403, (path, r.status_code)
            assert "Alice" not in r.text
        for path in ("/v1/owners/own-a/plates", "/v1/owners/own-a/notices",
                     "/v1/owners/own-a/preferences", "/v1/plates/CA-ON/AAA111"):
            r = await api.client.get(path, headers=portal)
            assert r.status_code in (403, 404, 405), (path, r.status_code)
            assert "Alice" not in r.text


async def test_access_log_leaves_out_reads_of_another_owners_record_on_my_plate(
        settings, pool, keys) -> None:
    """AAA111 was own-b's until an hour ago. An operator reading own-b's record now lists
    own-b's old notice about AAA111: that read is about own-b, not own-a, although it names
    own-a's plate and comes after the transfer; own-a's log lists only reads about own-a's
    record or about the plate itself."""
    await _plates(pool)
    now = dt.datetime.now(dt.UTC)
    await insert_event(pool, "CA-ON/AAA111", "tr-a", "plate.transferred",
                       now - dt.timedelta(hours=1), {"owner": owner("own-a")})
    await insert_notice(pool, "own-b", "CA-ON/AAA111", "suspended", [("email", "sent")],
                        created_at=now - dt.timedelta(days=3))
    op = bearer(keys["operator"])
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        for owner_id in ("own-b", "own-a"):
            r = await api.client.post("/v1/owners/query", headers=op, json={
                "owner_id": owner_id, "purpose": "registry_administration"})
            assert r.status_code == 200, r.text
        r = await read_plate(api.client, keys["enforcement"], "CA-ON", "AAA111", "traffic_stop")
        assert r.status_code == 200
        # In the database: own-b's notice read names own-a's plate, after the transfer.
        assert await pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE owner_id = 'own-b' AND plate = 'AAA111'"
            " AND kind = 'owner_notices' AND at > $1", now - dt.timedelta(hours=1)) == 1
        token = await _link_session(api, pool, "own-a")
        r = await api.client.get("/v1/me/access-log", headers=bearer(token))
        assert r.status_code == 200, r.text
    seen = sorted((e["kind"], e["jurisdiction"] or "", e["plate"] or "", e["role"])
                  for e in r.json()["entries"])
    assert seen == sorted([
        ("owner", "CA-ON", "AAA111", "operator"),        # own-a's record: their plates
        ("owner", "CA-QC", "AAA222", "operator"),
        ("owner_notices", "", "", "operator"),           # own-a has no notices
        ("owner_preferences", "", "", "operator"),
        ("single", "CA-ON", "AAA111", "enforcement"),    # the plate itself
    ])
