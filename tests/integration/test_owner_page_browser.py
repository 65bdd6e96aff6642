"""The owner page in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright from PyPI; nothing is downloaded at run time) walks an owner from the sign-in
link of a real e-mail notice (real dispatcher, real SMTP server) to the page, checks
plates, notices and the access log, changes the language and a channel through the form,
and signs out. axe-core (npm, installed into a cache dir when missing) runs on each
screen: no serious or critical violations. CSP and cookie flags are read from the
responses. With PLATEREG_UPDATE_SCREENSHOTS=1 the screenshots in docs/ are rewritten."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from api_helpers import served_registry
from owner_support import OWNER_KEY

from devtools.debian_tools import find_or_install
from platereg.security.keys import create_key
from platereg.settings import Settings
from schemas.fold import today_in
from tests.integration.notices_support import (
    MailCatcher,
    apply_events,
    event,
    issued,
    owner,
    smtp_catcher,
    wait_until,
)
from tests.integration.test_notices_dispatch import notices_running, with_

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AXE_CACHE = Path(os.environ.get("PLATEREG_AXE_DIR",
                                Path.home() / ".cache" / "platereg" / "axe-core"))
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def axe_source() -> str:
    """axe-core's browser bundle, installed from npm into a cache dir when missing."""
    path = AXE_CACHE / "node_modules" / "axe-core" / "axe.min.js"
    if not path.exists():
        npm = shutil.which("npm") or find_or_install("npm", "npm", who="owner page test")
        if npm is None:
            pytest.fail("npm is needed to install axe-core (apt-get install npm)")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(AXE_CACHE),
                        "axe-core@4"], check=True, capture_output=True, timeout=300)
    return path.read_text(encoding="utf-8")


def chromium() -> str:
    path = find_or_install("chromium", "chromium", who="owner page test")
    if path is None:
        pytest.fail("Debian's chromium is needed (apt-get install chromium)")
    return path


@pytest.fixture
def smtp() -> Iterator[MailCatcher]:
    with smtp_catcher() as catcher:
        yield catcher


async def assert_accessible(page, screen: str) -> None:
    result = await page.evaluate(
        "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
        " return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}));"
        " }")
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    assert not bad, f"{screen}: {bad}"


async def screenshot(page, name: str) -> None:
    if os.environ.get("PLATEREG_UPDATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(REPO / "docs" / name), full_page=True)


def check_headers(response) -> None:
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'self'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


async def _data(pool: asyncpg.Pool, settings: Settings) -> dict:
    alice = owner(7, language="en") | {"name": "Alice Tremblay"}
    other = owner(8) | {"name": "Bob Other"}
    before = NOW - dt.timedelta(days=2)
    today = today_in(settings.tz, NOW)  # the registry's day, which the page counts from
    await apply_events(pool, settings, [
        issued("CA-ON/DEMO701", today + dt.timedelta(days=20), before, alice),
        issued("CA-QC/DEMO702", today + dt.timedelta(days=300), before, alice),
        issued("CA-ON/OTHER8", today + dt.timedelta(days=300), before, other),
        event("plate.suspended", "CA-ON/DEMO701", NOW - dt.timedelta(minutes=5),
              {"reason": "unpaid_fines"}, source="/fines/city/"),
    ], NOW)
    return alice


async def test_owner_walks_from_the_email_link_through_the_page(topics, pool, smtp,
                                                               tmp_path) -> None:
    from playwright.async_api import async_playwright

    executable, axe = chromium(), axe_source()
    alice = await _data(pool, topics)
    _, police = await create_key(pool, role="enforcement", name="Toronto Police ALPR")
    env = {"PLATEREG_OWNER_TOKEN_KEYS": OWNER_KEY, "PLATEREG_AUDIT_FLUSH_SECONDS": "0.05"}
    with served_registry(str(tmp_path / "registry.log"), env=env) as served:
        async with httpx.AsyncClient(base_url=served.url) as client:
            headers = {"Authorization": f"Bearer {police}"}
            r = await client.post("/v1/plates/query", headers=headers, json={
                "jurisdiction": "CA-ON", "plate": "DEMO701", "purpose": "traffic_stop"})
            assert r.status_code == 200, r.text
        settings = with_(topics, smtp_port=smtp.port, owner_page_url=f"{served.url}/owner/")
        async with notices_running(settings):
            await wait_until(lambda: any(m["To"].addresses[0].addr_spec == alice["email"]
                                         for m in smtp.messages), what="Alice's e-mail")
            await wait_until(lambda: pool.fetchval("SELECT count(*) FROM audit_log"),
                             what="the police read in the audit log")
        mail = next(m for m in smtp.messages if m["To"].addresses[0].addr_spec == alice["email"])
        html = mail.get_body(("html",)).get_content()
        link = re.search(r'href="([^"]+)"', html).group(1).replace("&amp;", "&")
        assert link.startswith(f"{served.url}/owner/?token=")

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=executable, headless=True)
            try:
                await walk(browser, axe, served.url, html, link, pool)
            finally:
                await browser.close()
    log = served.log()
    assert "token=" not in log and "DEMO701" not in log and "own-7" not in log
    assert '/owner/' in log


async def walk(browser, axe: str, base: str, email_html: str, link: str,
               pool: asyncpg.Pool) -> None:
    context = await browser.new_context(locale="en-CA")
    await context.add_init_script(script=axe)  # injected by the browser: the page's CSP holds
    page = await context.new_page()
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text)
            if "Content Security Policy" in m.text else None)
    responses = []
    page.on("response", lambda r: responses.append(r) if "/owner/" in r.url else None)

    # The e-mail, opened from another site (as in a webmail); the owner clicks the link.
    await page.set_content(email_html)
    await page.get_by_role("link", name="Sign in to your owner page").click()
    await page.wait_for_url(f"{base}/owner/")
    assert "token" not in page.url
    sign_in = next(r for r in responses if "token=" in r.url)
    check_headers(sign_in)
    cookie = await sign_in.header_value("set-cookie")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert "Path=/owner/" in cookie
    assert "Secure" not in cookie  # 127.0.0.1: loopback
    [jar] = [c for c in await context.cookies() if c["name"] == "platereg_owner"]
    assert jar["httpOnly"] and jar["sameSite"] == "Strict" and not jar["secure"]
    check_headers(responses[-1])

    await page.get_by_role("heading", level=1, name="Your owner page").wait_for()
    assert await page.locator("html").get_attribute("lang") == "en"
    main = page.get_by_role("main")
    text = await main.inner_text()
    assert "CA-ON DEMO701" in text and "CA-QC DEMO702" in text and "OTHER8" not in text
    assert "Suspended: you have unpaid fines" in text
    assert "Renewal is blocked: you have unpaid fines." in text
    assert "(in 20 days)" in text
    assert "Plate suspended – CA-ON DEMO701" in text and "E-mail" in text  # notice, attempt
    assert "Toronto Police ALPR" in text and "traffic stop" in text and "Enforcement" in text
    assert "Bob" not in text
    await assert_accessible(page, "page (en)")
    await screenshot(page, "owner-page-en.png")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"

    await page.get_by_role("link", name="Français").click()
    await page.get_by_role("heading", level=1, name="Votre page de propriétaire").wait_for()
    assert await page.locator("html").get_attribute("lang") == "fr"
    assert "Suspendue : vous avez des amendes impayées" in await main.inner_text()
    await assert_accessible(page, "page (fr)")
    await screenshot(page, "owner-page-fr.png")

    # The form, by keyboard: tick paper, choose French, submit with Enter.
    await page.get_by_label("Lettre papier").focus()
    await page.keyboard.press("Space")
    await page.get_by_label("Français", exact=True).check()
    await page.get_by_role("button", name="Enregistrer les préférences").focus()
    await page.keyboard.press("Enter")
    await page.get_by_text("Vos préférences sont enregistrées.").wait_for()
    assert "owner" not in page.url.split("/owner/", 1)[1] and "own-" not in page.url
    prefs = await pool.fetchrow("SELECT channels, language FROM owner_preferences"
                                " WHERE owner_id = 'own-7'")
    assert "paper" in prefs["channels"] and prefs["language"] == "fr"
    assert await page.get_by_label("Lettre papier").is_checked()
    await assert_accessible(page, "saved (fr)")

    await page.get_by_role("button", name="Se déconnecter").click()
    await page.get_by_text("Vous êtes déconnecté.").wait_for()
    assert [c for c in await context.cookies() if c["name"] == "platereg_owner"] == []
    assert await pool.fetchval("SELECT count(*) FROM owner_sessions WHERE owner_id = 'own-7'"
                               " AND revoked_at IS NULL") == 0
    await assert_accessible(page, "signed out")

    # The link works once.
    response = await page.goto(link)
    assert response.status == 410
    assert "already been used" in await page.get_by_role("main").inner_text()
    assert not csp_errors, csp_errors
    await context.close()
