"""The owner page over HTTP (no browser): cookie flags by host, CSRF on both forms,
security headers on every answer, no owner data without a session."""

from __future__ import annotations

import re

import pytest
from api_helpers import insert_plate, owner, running_api
from owner_support import OWNER_KEY

from platereg.security.owner_links import mint_link_token

pytestmark = pytest.mark.integration


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


async def _signed_in(api, pool, base: str) -> str:
    """Follow a sign-in link; returns the page HTML (the client keeps the cookie)."""
    token = await mint_link_token(pool, "own-a", None)
    r = await api.client.get(f"{base}/owner/", params={"token": token})
    assert r.status_code == 200, r.text
    assert '<meta http-equiv="refresh" content="0; url=/owner/">' in r.text
    page = await api.client.get(f"{base}/owner/")
    assert page.status_code == 200
    return page.text


async def test_cookie_is_secure_except_on_loopback(settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"))
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        for base, secure in (("http://127.0.0.1:8080", False), ("http://localhost", False),
                             ("https://registry.example.org", True)):
            api.client.cookies.clear()
            token = await mint_link_token(pool, "own-a", None)
            r = await api.client.get(f"{base}/owner/", params={"token": token})
            cookie = r.headers["set-cookie"]
            assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
            assert ("Secure" in cookie) is secure, (base, cookie)


async def test_forms_need_the_session_csrf_token(settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"))
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        base = "http://127.0.0.1"
        html = await _signed_in(api, pool, base)
        assert "CA-ON AAA111" in html and "Alice A" not in html.split("<main", 1)[0]
        csrf = _csrf(html)
        form = {"channels": ["paper"], "language": "fr"}
        r = await api.client.post(f"{base}/owner/preferences", data=form)
        assert r.status_code == 403
        r = await api.client.post(f"{base}/owner/preferences", data={**form, "csrf": "x" * 40})
        assert r.status_code == 403
        assert await pool.fetchval("SELECT count(*) FROM owner_preferences") == 0
        r = await api.client.post(f"{base}/owner/preferences",
                                  data={"csrf": csrf, "language": "fr"})
        assert r.status_code == 422
        r = await api.client.post(f"{base}/owner/preferences", json={**form, "csrf": csrf})
        assert r.status_code == 415
        r = await api.client.post(f"{base}/owner/preferences", data={**form, "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/owner/?saved=1"
        row = await pool.fetchrow("SELECT channels, language FROM owner_preferences")
        assert (list(row["channels"]), row["language"]) == (["paper"], "fr")
        # Sign-out without the token does not sign out; with it, it does.
        r = await api.client.post(f"{base}/owner/sign-out", data={"lang": "en"})
        assert r.status_code == 403
        r = await api.client.post(f"{base}/owner/sign-out", data={"csrf": csrf})
        assert r.status_code == 303 and "platereg_owner=" in r.headers["set-cookie"]
        assert await pool.fetchval(
            "SELECT count(*) FROM owner_sessions WHERE revoked_at IS NULL") == 0
        for header in ("content-security-policy", "x-content-type-options", "cache-control"):
            assert header in r.headers


async def test_page_without_a_session_shows_no_owner_data(settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "AAA111", owner_data=owner("own-a", "Alice A"))
    async with running_api(settings, owner_token_keys=[OWNER_KEY]) as api:
        r = await api.client.get("http://127.0.0.1/owner/")
        assert r.status_code == 200 and "AAA111" not in r.text
        assert "personal link" in r.text
        api.client.cookies.set("platereg_owner", "ot_x")
        r = await api.client.get("http://127.0.0.1/owner/")
        assert r.status_code == 200 and "AAA111" not in r.text
        r = await api.client.get("http://127.0.0.1/owner/", params={"token": "y" * 43})
        assert r.status_code == 401 and "not valid" in r.text
        css = await api.client.get("http://127.0.0.1/owner/static/owner.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert not [p for p in api.app.openapi()["paths"] if p.startswith("/owner")]
