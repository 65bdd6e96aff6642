"""The owner page over HTTP (no browser): opening a sign-in link uses nothing and only the
button's POST does; no silent switch to another owner's session (login CSRF); the cookie's
Secure flag from the configured address or a trusted proxy, never from Host; refused
links limited per client address; CSRF on the forms; security headers on every answer;
no owner data without a session; the refusal pages in the owner's language."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from api_helpers import insert_plate, owner, running_api
from owner_support import OWNER_KEY, form_fields, sign_in_with_link

from platereg.security.owner_links import link_token_hash, mint_link_token

pytestmark = pytest.mark.integration

BASE = "http://127.0.0.1"


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


async def _used(pool, token: str) -> bool:
    return await pool.fetchval("SELECT used_at IS NOT NULL FROM owner_tokens"
                               " WHERE token_hash = $1", link_token_hash(token))


async def _signed_in(api, pool, base: str = BASE, owner_id: str = "own-a") -> str:
    """Open a sign-in link and press its button; returns the page HTML (the client keeps
    the cookie)."""
    token = await mint_link_token(pool, owner_id, None)
    r = await sign_in_with_link(api.client, base, token)
    assert r.status_code == 303 and r.headers["location"] == "/owner/?lang=en", r.text
    page = await api.client.get(f"{base}/owner/")
    assert page.status_code == 200
    return page.text


async def test_opening_a_link_uses_nothing_only_the_button_does(settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"))
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        token = await mint_link_token(pool, "own-a", None)
        # A mail scanner follows the link twice: a page with one button, nothing used.
        for _ in range(2):
            r = await api.client.get(f"{BASE}/owner/", params={"token": token})
            assert r.status_code == 200 and "AAA111" not in r.text
            assert "platereg_owner=" not in r.headers.get("set-cookie", "")
            assert len(re.findall(r"<button", r.text)) == 1
            nonce_cookie = r.headers["set-cookie"]
            assert nonce_cookie.startswith("platereg_sign_in=") and "HttpOnly" in nonce_cookie
            assert "samesite=strict" in nonce_cookie.lower()
        assert not await _used(pool, token)
        assert await pool.fetchval("SELECT count(*) FROM owner_sessions") == 0
        fields = form_fields(r.text)
        assert set(fields) == {"link", "csrf", "lang"}
        # The form posted from another site arrives without the SameSite=Strict nonce.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app)) as other:
            r = await other.post(f"{BASE}/owner/sign-in", data=fields)
            assert r.status_code == 403 and "another site" in r.text
        r = await api.client.post(f"{BASE}/owner/sign-in", data={**fields, "csrf": "x" * 40})
        assert r.status_code == 403
        assert not await _used(pool, token)
        # The button: the link is used, the cookie set, a 303 to the clean page.
        r = await api.client.post(f"{BASE}/owner/sign-in", data=fields)
        assert r.status_code == 303 and r.headers["location"] == "/owner/?lang=en"
        assert "platereg_owner=" in r.headers["set-cookie"]
        assert await _used(pool, token)
        page = await api.client.get(f"{BASE}/owner/")
        assert "CA-ON AAA111" in page.text
        # Used once: the form is spent (its nonce cookie cleared), the link says so.
        r = await api.client.post(f"{BASE}/owner/sign-in", data=fields)
        assert r.status_code == 403
        r = await api.client.get(f"{BASE}/owner/", params={"token": token})
        assert r.status_code == 410 and "already been used" in r.text


async def test_another_owners_session_is_not_replaced_silently(settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"))
    await insert_plate(pool, "CA-ON", "BBB111", owner_data=owner("own-b", "Bob B"))
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        assert "CA-ON AAA111" in await _signed_in(api, pool)
        # A link of another owner (sent by an attacker, or a shared computer): asked first.
        token_b = await mint_link_token(pool, "own-b", None)
        r = await sign_in_with_link(api.client, BASE, token_b)
        assert r.status_code == 409, r.text
        assert "Another owner is signed in" in r.text and "BBB111" not in r.text
        assert not await _used(pool, token_b)
        assert "CA-ON AAA111" in (await api.client.get(f"{BASE}/owner/")).text
        fields = form_fields(r.text)
        assert fields["replace"] == "1"
        # Saying yes signs Alice out and Bob in.
        r = await api.client.post(f"{BASE}/owner/sign-in", data=fields)
        assert r.status_code == 303
        page = (await api.client.get(f"{BASE}/owner/")).text
        assert "CA-ON BBB111" in page and "AAA111" not in page
        assert await pool.fetchval("SELECT count(*) FROM owner_sessions WHERE owner_id = 'own-a'"
                                   " AND revoked_at IS NULL") == 0
        # The same owner's new link: no question, the old session ends.
        token_b2 = await mint_link_token(pool, "own-b", None)
        assert (await sign_in_with_link(api.client, BASE, token_b2)).status_code == 303
        assert await pool.fetchval("SELECT count(*) FROM owner_sessions WHERE owner_id = 'own-b'"
                                   " AND revoked_at IS NULL") == 1


def _owner_cookie(response: httpx.Response) -> str:
    return next(c for c in response.headers.get_list("set-cookie")
                if c.startswith("platereg_owner="))


@pytest.mark.parametrize(("page_url", "proxies", "base", "headers", "secure"), [
    # The configured address decides, whatever the Host header says.
    ("http://127.0.0.1:8080/owner/", [], "http://127.0.0.1:8080", {}, False),
    ("http://127.0.0.1:8080/owner/", [], "http://registry.example.org", {}, False),
    ("https://registry.example.org/owner/", [], "http://127.0.0.1", {}, True),
    ("http://registry.internal/owner/", [], "http://127.0.0.1", {}, True),
    # X-Forwarded-Proto only from a trusted proxy (the test client is 127.0.0.1).
    ("http://127.0.0.1:8080/owner/", [], BASE, {"X-Forwarded-Proto": "https"}, False),
    ("http://127.0.0.1:8080/owner/", ["10.0.0.0/8"], BASE, {"X-Forwarded-Proto": "https"},
     False),
    ("http://127.0.0.1:8080/owner/", ["127.0.0.1"], BASE, {"X-Forwarded-Proto": "https"}, True),
])
async def test_cookie_secure_flag_comes_from_the_configured_address_or_a_trusted_proxy(
        settings, pool, page_url, proxies, base, headers, secure) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"))
    async with running_api(settings, owner_token_keys=[OWNER_KEY], owner_page_url=page_url,
                           trusted_proxies=proxies) as api:
        api.client.headers.update(headers)
        token = await mint_link_token(pool, "own-a", None)
        r = await api.client.get(f"{base}/owner/", params={"token": token})
        nonce = r.headers["set-cookie"]
        r = await api.client.post(f"{base}/owner/sign-in", data=form_fields(r.text),
                                  headers={"Cookie": nonce.split(";")[0]})
        assert r.status_code == 303, r.text
        for cookie in (nonce, _owner_cookie(r)):
            assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
            assert ("Secure" in cookie) is secure, (page_url, base, headers, cookie)


async def test_refused_links_are_limited_per_client_address(settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"))
    async with running_api(settings, owner_token_keys=[OWNER_KEY],
                           owner_link_failures_per_address=3,
                           owner_link_failure_window_minutes=15) as api:
        good = await mint_link_token(pool, "own-a", None)
        wrong = ["w" * 43, "short", "x" * 43]
        statuses = [(await api.client.get(f"{BASE}/owner/", params={"token": t})).status_code
                    for t in wrong]
        assert statuses == [401, 401, 401]
        # A fourth link from this address, even a good one, waits; it is not looked at.
        for attempt in (api.client.get(f"{BASE}/owner/", params={"token": good}),
                        api.client.post("/v1/owner-sessions/link", json={"link_token": good})):
            r = await attempt
            assert r.status_code == 429, r.text
            assert 800 < int(r.headers["Retry-After"]) <= 900
        assert not await _used(pool, good)
        # Another client address still signs in; X-Forwarded-For from an untrusted peer
        # changes nothing.
        r = await api.client.get(f"{BASE}/owner/", params={"token": good},
                                 headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 429
        other = httpx.ASGITransport(app=api.app, client=("198.51.100.7", 5000))
        async with httpx.AsyncClient(transport=other, base_url=BASE) as client:
            assert (await sign_in_with_link(client, BASE, good)).status_code == 303


async def test_a_trusted_proxy_names_the_client_address(settings, pool) -> None:
    async with running_api(settings, owner_token_keys=[OWNER_KEY], trusted_proxies=["127.0.0.1"],
                           owner_link_failures_per_address=1) as api:
        r = await api.client.post("/v1/owner-sessions/link", json={"link_token": "w" * 43},
                                  headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 401
        r = await api.client.post("/v1/owner-sessions/link", json={"link_token": "w" * 43},
                                  headers={"X-Forwarded-For": "203.0.113.10"})
        assert r.status_code == 401
        r = await api.client.post("/v1/owner-sessions/link", json={"link_token": "w" * 43},
                                  headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 429


async def test_refusal_pages_speak_the_owners_language(settings, pool) -> None:
    await insert_plate(pool, "CA-QC", "QQQ111", owner_data=owner("own-q", "Quentin Q"))
    await pool.execute("INSERT INTO owner_preferences (owner_id, channels, language)"
                       " VALUES ('own-q', '{email}', 'fr')")
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        token = await mint_link_token(pool, "own-q", None)
        r = await api.client.get(f"{BASE}/owner/", params={"token": token})
        assert '<html lang="fr">' in r.text and "Accéder à ma page" in r.text
        assert (await api.client.post(f"{BASE}/owner/sign-in", data=form_fields(r.text))
                ).status_code == 303
        r = await api.client.get(f"{BASE}/owner/", params={"token": token})
        assert r.status_code == 410 and '<html lang="fr">' in r.text
        assert "Ce lien a déjà été utilisé" in r.text and "already" not in r.text
        # An unknown link: the browser's language.
        r = await api.client.get(f"{BASE}/owner/", params={"token": "u" * 43},
                                 headers={"Accept-Language": "fr-CA,fr;q=0.9,en;q=0.5"})
        assert r.status_code == 401 and "Ce lien n'est pas valide." in html.unescape(r.text)


async def test_forms_need_the_session_csrf_token(settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"))
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        page = await _signed_in(api, pool)
        assert "CA-ON AAA111" in page and "Alice A" not in page.split("<main", 1)[0]
        csrf = _csrf(page)
        form = {"channels": ["paper"], "language": "fr"}
        r = await api.client.post(f"{BASE}/owner/preferences", data=form)
        assert r.status_code == 403
        r = await api.client.post(f"{BASE}/owner/preferences", data={**form, "csrf": "x" * 40})
        assert r.status_code == 403
        assert await pool.fetchval("SELECT count(*) FROM owner_preferences") == 0
        r = await api.client.post(f"{BASE}/owner/preferences",
                                  data={"csrf": csrf, "language": "fr"})
        assert r.status_code == 422
        r = await api.client.post(f"{BASE}/owner/preferences", json={**form, "csrf": csrf})
        assert r.status_code == 415
        r = await api.client.post(f"{BASE}/owner/preferences", data={**form, "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/owner/?saved=1"
        row = await pool.fetchrow("SELECT channels, language FROM owner_preferences")
        assert (list(row["channels"]), row["language"]) == (["paper"], "fr")
        # Sign-out without the token does not sign out; with it, it does.
        r = await api.client.post(f"{BASE}/owner/sign-out", data={"lang": "en"})
        assert r.status_code == 403
        r = await api.client.post(f"{BASE}/owner/sign-out", data={"csrf": csrf})
        assert r.status_code == 303 and "platereg_owner=" in r.headers["set-cookie"]
        assert await pool.fetchval(
            "SELECT count(*) FROM owner_sessions WHERE revoked_at IS NULL") == 0
        for header in ("content-security-policy", "x-content-type-options", "cache-control"):
            assert header in r.headers


@pytest.mark.parametrize("allowed", [False, True])
async def test_webhook_is_offered_only_where_allowed(settings, pool, allowed: bool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"))
    async with running_api(settings, owner_token_keys=[OWNER_KEY],
                           owner_webhooks=allowed) as api:
        page = await _signed_in(api, pool)
        assert ('value="webhook"' in page) is allowed
        assert 'value="paper"' in page
        r = await api.client.post(f"{BASE}/owner/preferences", data={
            "csrf": _csrf(page), "language": "en", "channels": ["webhook", "email"]})
        assert r.status_code == 303
        row = await pool.fetchval("SELECT channels FROM owner_preferences")
        assert list(row) == (["email", "webhook"] if allowed else ["email"])


async def test_page_without_a_session_shows_no_owner_data(settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"))
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        r = await api.client.get(f"{BASE}/owner/")
        assert r.status_code == 200 and "AAA111" not in r.text
        assert "personal link" in r.text
        api.client.cookies.set("platereg_owner", "ot_x")
        r = await api.client.get(f"{BASE}/owner/")
        assert r.status_code == 200 and "AAA111" not in r.text
        r = await api.client.get(f"{BASE}/owner/", params={"token": "y" * 43})
        assert r.status_code == 401 and "not valid" in r.text
        css = await api.client.get(f"{BASE}/owner/static/owner.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert not [p for p in api.app.openapi()["paths"] if p.startswith("/owner")]
