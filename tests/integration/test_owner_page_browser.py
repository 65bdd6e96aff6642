"""The owner page in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright from PyPI; nothing is downloaded at run time) walks an owner from the sign-in
link of a real e-mail notice (real dispatcher, real SMTP server) to the page and back out,
in English and in French, and checks each promise the page makes:

* opening a link (a mail scanner's GET, then the browser's) uses nothing; the page's one
  button does; the owner cookie's flags;
* signing in while another owner's session is open says so and asks first;
* each status says what it means and what to do (expired: renew, with the renewal link;
  suspended: each reason and whom to contact; stolen; cancelled), the department's name,
  phone and website, the session length from PLATEREG_OWNER_TOKEN_MINUTES, times in the
  plate jurisdiction's zone with the zone shown, no webhook channel unless
  PLATEREG_OWNER_WEBHOOKS, the 410 page in the owner's language;
* axe-core (npm, installed into a cache dir when missing) on every screen: zero
  violations, whatever their impact. CSP and cookie flags are read from the responses.

With PLATEREG_UPDATE_SCREENSHOTS=1 the screenshots in docs/ are rewritten."""

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
from owner_support import OWNER_KEY, insert_notice

from devtools.debian_tools import find_or_install
from platereg.security.keys import create_key
from platereg.security.owner_links import link_token_hash, mint_sign_in_link
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
#: A notice about the CA-BC plate, at 19:30 UTC: 12:30 in Vancouver (PDT in July).
BC_NOTICE_AT = dt.datetime(2026, 7, 1, 19, 30, tzinfo=dt.UTC)
ENV = {"PLATEREG_OWNER_TOKEN_KEYS": OWNER_KEY, "PLATEREG_OWNER_TOKEN_MINUTES": "20"}


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


async def assert_accessible(page, screen: str, checked: list[str]) -> None:
    """axe-core's every rule (WCAG A/AA and best practices): no violation of any impact."""
    result = await page.evaluate(
        "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
        " return {passed: r.passes.map(p => p.id), violations: r.violations.map(v => ({"
        " id: v.id, impact: v.impact, nodes: v.nodes.length,"
        " targets: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))}; }")
    assert result["violations"] == [], f"{screen}: {result['violations']}"
    # The rules that matter here did run and pass (not a vacuous check).
    assert {"color-contrast", "html-has-lang", "landmark-one-main", "region"} <= set(
        result["passed"]), result["passed"]
    checked.append(screen)


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
    """Alice's five plates, one per status, and Bob, who reads French."""
    alice = owner(7, language="en") | {"name": "Alice Tremblay"}
    bob = owner(8, language="fr") | {"name": "Bob Other"}
    before = NOW - dt.timedelta(days=2)
    today = today_in(settings.tz, NOW)  # the registry's day, which the page counts from
    await apply_events(pool, settings, [
        issued("CA-ON/DEMO701", today + dt.timedelta(days=20), before, alice),
        issued("CA-QC/DEMO702", today + dt.timedelta(days=300), before, alice),
        issued("CA-BC/DEMO703", today - dt.timedelta(days=3), before, alice),
        issued("CA-ON/DEMO704", today + dt.timedelta(days=200), before, alice),
        issued("CA-ON/DEMO705", today + dt.timedelta(days=200), before, alice),
        issued("CA-QC/OTHER8", today + dt.timedelta(days=300), before, bob),
        event("plate.suspended", "CA-ON/DEMO701", NOW - dt.timedelta(minutes=5),
              {"reason": "unpaid_fines"}, source="/fines/city/"),
        event("plate.stolen_reported", "CA-ON/DEMO704", NOW - dt.timedelta(minutes=4),
              {"agency": "Toronto Police", "report_id": "R-1"}, source="/police/tps/"),
        event("plate.cancelled", "CA-ON/DEMO705", NOW - dt.timedelta(minutes=3),
              {"reason": "surrendered"}),
    ], NOW)
    await pool.execute("INSERT INTO owner_preferences (owner_id, channels, language)"
                       " VALUES ('own-8', '{email}', 'fr')")
    return alice


async def _alices_email(pool: asyncpg.Pool, topics: Settings, smtp: MailCatcher,
                        base: str, alice: dict) -> str:
    """The HTML of a real e-mail notice to Alice, with its sign-in link."""
    settings = with_(topics, smtp_port=smtp.port, owner_page_url=f"{base}/owner/")
    async with notices_running(settings):
        await wait_until(lambda: any(m["To"].addresses[0].addr_spec == alice["email"]
                                     for m in smtp.messages), what="Alice's e-mail")
        await wait_until(lambda: pool.fetchval("SELECT count(*) FROM audit_log"),
                         what="the police read in the audit log")
    mail = next(m for m in smtp.messages if m["To"].addresses[0].addr_spec == alice["email"])
    await insert_notice(pool, "own-7", "CA-BC/DEMO703", "expired", [("email", "sent")],
                        created_at=BC_NOTICE_AT)
    return mail.get_body(("html",)).get_content()


async def test_owner_walks_from_the_email_link_through_the_page(topics, pool, smtp,
                                                               tmp_path) -> None:
    from playwright.async_api import async_playwright

    executable, axe = chromium(), axe_source()
    alice = await _data(pool, topics)
    _, police = await create_key(pool, role="enforcement", name="Toronto Police ALPR")
    with served_registry(str(tmp_path / "registry.log"), env=ENV) as served:
        async with httpx.AsyncClient(base_url=served.url) as client:
            r = await client.post("/v1/plates/query", headers={
                "Authorization": f"Bearer {police}"}, json={
                "jurisdiction": "CA-ON", "plate": "DEMO701", "purpose": "traffic_stop"})
            assert r.status_code == 200, r.text
        html = await _alices_email(pool, topics, smtp, served.url, alice)
        link = re.search(r'href="([^"]+)"', html).group(1).replace("&amp;", "&")
        assert link.startswith(f"{served.url}/owner/?token=")
        bob_link = await mint_sign_in_link(pool, f"{served.url}/owner/", "own-8")
        # A mail scanner follows the link first: a page with a button, nothing used.
        async with httpx.AsyncClient() as scanner:
            r = await scanner.get(link)
            assert r.status_code == 200 and "platereg_owner=" not in r.headers["set-cookie"]
        assert not await _used(pool, link)
        checked: list[str] = []
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=executable, headless=True)
            try:
                await walk(browser, axe, served.url, html, link, bob_link, pool, checked)
            finally:
                await browser.close()
        print("axe-core: 0 violations on", len(checked), "screens:", ", ".join(checked))
    log = served.log()
    assert "token=" not in log and "DEMO701" not in log and "own-7" not in log
    assert '/owner/' in log


async def _used(pool: asyncpg.Pool, link: str) -> bool:
    token = link.split("token=", 1)[1]
    return await pool.fetchval("SELECT used_at IS NOT NULL FROM owner_tokens"
                               " WHERE token_hash = $1", link_token_hash(token))


async def walk(browser, axe: str, base: str, email_html: str, link: str, bob_link: str,
               pool: asyncpg.Pool, checked: list[str]) -> None:
    context = await browser.new_context(locale="en-CA")
    await context.add_init_script(script=axe)  # injected by the browser: the page's CSP holds
    page = await context.new_page()
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text)
            if "Content Security Policy" in m.text else None)
    responses: list = []
    page.on("response", lambda r: responses.append(r) if "/owner/" in r.url else None)

    await _bob_signs_in(page, bob_link, checked)
    await _alice_signs_in_over_bob(page, base, email_html, link, pool, responses, checked)
    await _the_page_in_english(page, checked)
    await _the_page_in_french(page, checked)
    await _preferences_and_sign_out(page, context, pool, checked)
    # The link works once; its 410 page speaks Alice's language, now French.
    response = await page.goto(link)
    assert response.status == 410
    assert await page.locator("html").get_attribute("lang") == "fr"
    text = await _text(page.get_by_role("main"))
    assert "Ce lien a déjà été utilisé : chaque lien ne fonctionne qu'une fois." in text
    assert "already" not in text
    await assert_accessible(page, "link used (fr)", checked)
    assert not csp_errors, csp_errors
    await context.close()


async def _bob_signs_in(page, bob_link: str, checked: list[str]) -> None:
    """Bob (French) signs in on this browser first: his sign-in page is in French."""
    await page.goto(bob_link)
    await page.get_by_role("heading", level=1,
                           name="Connectez-vous à votre page de propriétaire").wait_for()
    assert await page.locator("html").get_attribute("lang") == "fr"
    await assert_accessible(page, "sign-in button (fr)", checked)
    await page.get_by_role("button", name="Accéder à ma page").click()
    await page.get_by_role("heading", level=1, name="Votre page de propriétaire").wait_for()
    assert "CA-QC OTHER8" in await page.get_by_role("main").inner_text()


async def _alice_signs_in_over_bob(page, base: str, email_html: str, link: str,
                                   pool: asyncpg.Pool, responses: list,
                                   checked: list[str]) -> None:
    # The e-mail, opened from another site (as in a webmail); Alice clicks the link.
    await page.set_content(email_html)
    await page.get_by_role("link", name="Sign in to your owner page").click()
    await page.get_by_role("heading", level=1, name="Sign in to your owner page").wait_for()
    assert await page.get_by_role("button").count() == 1
    assert not await _used(pool, link)  # opened: nothing used
    check_headers(next(r for r in responses if "token=" in r.url))
    await assert_accessible(page, "sign-in button (en)", checked)
    await page.get_by_role("button", name="Sign in to my page").click()
    # Bob's session is open in this browser: the page says so and asks.
    await page.get_by_role("heading", level=1, name="Another owner is signed in").wait_for()
    assert not await _used(pool, link)
    assert await pool.fetchval("SELECT count(*) FROM owner_sessions WHERE owner_id = 'own-8'"
                               " AND revoked_at IS NULL") == 1
    await assert_accessible(page, "another owner signed in (en)", checked)
    await page.get_by_role("button", name="Sign the other owner out and sign in").click()
    await page.wait_for_url(f"{base}/owner/?lang=en")
    assert await _used(pool, link)
    assert await pool.fetchval("SELECT count(*) FROM owner_sessions WHERE owner_id = 'own-8'"
                               " AND revoked_at IS NULL") == 0
    posted = [r for r in responses if r.url.endswith("/owner/sign-in")][-1]
    check_headers(posted)
    cookie = next(c for c in (await posted.header_value("set-cookie")).split("\n")
                  if c.startswith("platereg_owner="))
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert "Path=/owner/" in cookie
    assert "Secure" not in cookie  # PLATEREG_OWNER_PAGE_URL is http://127.0.0.1: loopback
    [jar] = [c for c in await page.context.cookies() if c["name"] == "platereg_owner"]
    assert jar["httpOnly"] and jar["sameSite"] == "Strict" and not jar["secure"]
    check_headers(responses[-1])


async def _text(locator) -> str:
    """A locator's text with Babel's narrow and no-break spaces as plain spaces."""
    return (await locator.inner_text()).replace("\u202f", " ").replace("\xa0", " ")


def _card(text: str, plate: str) -> str:
    """The part of the page's text about one plate (up to the next plate's heading)."""
    return text.split(plate, 1)[1].split("\nCA-", 1)[0]


async def _the_page_in_english(page, checked: list[str]) -> None:
    await page.get_by_role("heading", level=1, name="Your owner page").wait_for()
    assert await page.locator("html").get_attribute("lang") == "en"
    text = await _text(page.get_by_role("main"))
    assert "You stay signed in for 20 minutes." in text and "15 minutes" not in text
    assert "CA-ON DEMO701" in text and "CA-QC DEMO702" in text and "OTHER8" not in text
    assert "Bob" not in text
    suspended = _card(text, "CA-ON DEMO701")
    assert "Suspended: you have unpaid fines" in suspended and "(in 20 days)" in suspended
    assert "Renewal is blocked: you have unpaid fines." in suspended
    assert "may not be driven on public roads until each reason below is cleared" in suspended
    assert "Unpaid fines: pay them to the court or municipality that issued them" in suspended
    assert "Nothing to do now." in _card(text, "CA-QC DEMO702")
    expired = _card(text, "CA-BC DEMO703")
    assert "This plate has expired" in expired and "Renew it online" in expired
    assert "tell the police service that took the report" in _card(text, "CA-ON DEMO704")
    assert "register it with a new plate with ServiceOntario" in _card(text, "CA-ON DEMO705")
    renew = page.get_by_role("link", name="Renew online with ServiceOntario")
    assert await renew.count() == 1
    assert await renew.get_attribute("href") == "https://www.ontario.ca/page/renew-your-licence-plate"
    # Times in the plate's zone, named: the CA-BC notice in Vancouver time.
    assert "Plate expired – CA-BC DEMO703" in text
    assert "Sent: Jul 1, 2026, 12:30:00 p.m. PDT" in text
    assert re.search(r"Plate suspended – CA-ON DEMO701\s+Sent: [^\n]* (EST|EDT)\n", text), text
    assert "Toronto Police ALPR" in text and "traffic stop" in text and "Enforcement" in text
    # No webhook for citizens (PLATEREG_OWNER_WEBHOOKS unset).
    assert await page.get_by_label("Webhook").count() == 0
    assert await page.get_by_label("Paper letter").count() == 1
    footer = await _text(page.get_by_role("contentinfo"))
    assert "ServiceOntario" in footer and "1-800-267-8097" in footer
    phone = page.get_by_role("link", name="1-800-267-8097")
    assert await phone.get_attribute("href") == "tel:18002678097"
    await assert_accessible(page, "owner page (en)", checked)
    await screenshot(page, "owner-page-en.png")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"


async def _the_page_in_french(page, checked: list[str]) -> None:
    await page.get_by_role("link", name="Français").click()
    await page.get_by_role("heading", level=1, name="Votre page de propriétaire").wait_for()
    assert await page.locator("html").get_attribute("lang") == "fr"
    text = await _text(page.get_by_role("main"))
    assert "Vous restez connecté pendant 20 minutes." in text
    suspended = _card(text, "CA-ON DEMO701")
    assert "Suspendue : vous avez des amendes impayées" in suspended
    assert "Amendes impayées : payez-les au tribunal ou à la municipalité" in suspended
    assert "Cette plaque est expirée" in _card(text, "CA-BC DEMO703")
    assert "avisez le service de police qui a pris la déclaration" in text
    assert await page.get_by_role("link",
                                  name="Renouveler en ligne auprès de ServiceOntario").count() == 1
    assert "Envoyé : 1 juill. 2026, 12 h 30 min 00 s HAP" in text
    footer = await _text(page.get_by_role("contentinfo"))
    assert "Des questions?" in footer and "Site Web de ServiceOntario" in footer
    assert await page.get_by_label("Webhook").count() == 0
    await assert_accessible(page, "owner page (fr)", checked)
    await screenshot(page, "owner-page-fr.png")


async def _preferences_and_sign_out(page, context, pool: asyncpg.Pool,
                                    checked: list[str]) -> None:
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
    assert list(prefs["channels"]) == ["paper"] and prefs["language"] == "fr"
    assert await page.get_by_label("Lettre papier").is_checked()
    await assert_accessible(page, "saved (fr)", checked)

    await page.get_by_role("button", name="Se déconnecter").click()
    await page.get_by_text("Vous êtes déconnecté.").wait_for()
    assert [c for c in await context.cookies() if c["name"] == "platereg_owner"] == []
    assert await pool.fetchval("SELECT count(*) FROM owner_sessions WHERE owner_id = 'own-7'"
                               " AND revoked_at IS NULL") == 0
    await assert_accessible(page, "signed out (fr)", checked)
