"""``/docs`` with the network cut, in a real browser: headless Chromium (Debian's
``chromium``, driven by Playwright) whose only way out is a proxy that refuses every
connection, and which aborts (and records) any request that is not to this machine.
Both APIs run as ``platereg serve`` processes; each one's Swagger UI must show every
operation of its OpenAPI document, from files the API serves itself, with no Content
Security Policy violation. The registry API's ``GET /`` and event catalogue render under
their own policies, every link of ``/`` answers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from api_helpers import free_port, served_registry
from owner_support import OWNER_KEY

from platereg.settings import Settings
from tests.integration.test_owner_page_browser import chromium
from tests.integration.test_prometheus import platereg

pytestmark = pytest.mark.integration

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
#: Collects securitypolicyviolation events from the first moment of every page.
VIOLATIONS = """window.__csp = [];
document.addEventListener("securitypolicyviolation",
  e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));"""
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@contextlib.contextmanager
def served_ingest(log_path: Path) -> Iterator[str]:
    port = free_port()
    with platereg(["serve", "ingest", "--port", str(port)], port, log_path) as url:
        yield url


def operations(url: str) -> set[tuple[str, str]]:
    document = httpx.get(f"{url}/openapi.json", timeout=10).json()
    return {(method.upper(), path) for path, ops in document["paths"].items()
            for method in ops if method in METHODS}


class Offline:
    """A browser context with the network cut: every request not to loopback is aborted
    and recorded; the browser's proxy refuses the rest anyway."""

    def __init__(self) -> None:
        self.outside: list[str] = []
        self.local: list[str] = []

    async def route(self, route: Any) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in LOOPBACK:
            self.local.append(route.request.url)
            await route.continue_()
        else:
            self.outside.append(route.request.url)
            await route.abort("internetdisconnected")


async def check_swagger_ui(context: Any, offline: Offline, url: str, title: str) -> None:
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    response = await page.goto(f"{url}/docs")
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    expected = operations(url)
    await page.locator(".opblock").nth(len(expected) - 1).wait_for(timeout=30_000)
    shown = set()
    for block in await page.locator(".opblock-summary").all():
        method = (await block.locator(".opblock-summary-method").inner_text()).strip()
        path = (await block.locator(".opblock-summary-path").get_attribute("data-path"))
        shown.add((method, path))
    assert shown == expected
    assert title in await page.locator(".info .title").inner_text()
    # An operation opens and shows its responses: the UI works, not only its first paint.
    await page.locator(".opblock-summary").first.click()
    await page.locator(".responses-wrapper").first.wait_for()
    assert await page.evaluate("window.__csp") == []
    assert [m for m in console if "Content Security Policy" in m] == []
    await page.close()


async def check_front_pages(context: Any, url: str) -> None:
    page = await context.new_page()
    response = await page.goto(f"{url}/")
    assert "style-src 'sha256-" in response.headers["content-security-policy"]
    links = await page.locator("main a").evaluate_all("as => as.map(a => a.href)")
    assert {urlsplit(link).path for link in links} >= {
        "/docs", "/docs/events", "/owner/", "/healthz", "/metrics", "/openapi.json"}
    for link in links:
        assert httpx.get(link, timeout=10).status_code == 200, link
    await page.get_by_role("link", name="Event catalogue").click()
    await page.get_by_role("heading", level=1, name="Plate Registry: event catalogue").wait_for()
    assert await page.get_by_role("heading", name="plate.issued").count() == 1
    assert await page.evaluate("getComputedStyle(document.querySelector('th')).borderStyle") \
        == "solid"   # the hashed style element applied
    assert await page.evaluate("window.__csp") == []
    await page.close()


async def test_docs_render_with_the_network_cut(topics: Settings, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    executable = chromium()
    owner_page = {"PLATEREG_OWNER_TOKEN_KEYS": OWNER_KEY}
    with served_registry(str(tmp_path / "registry.log"), env=owner_page) as registry, \
            served_ingest(tmp_path / "ingest.log") as ingest:
        async with async_playwright() as pw:
            # Chromium sends loopback requests direct; anything else to a closed port.
            browser = await pw.chromium.launch(executable_path=executable, headless=True,
                                               args=["--proxy-server=http://127.0.0.1:9"])
            try:
                context = await browser.new_context()
                offline = Offline()
                await context.route("**/*", offline.route)
                await context.add_init_script(script=VIOLATIONS)
                await check_swagger_ui(context, offline, registry.url, "Plate Registry API")
                await check_swagger_ui(context, offline, ingest, "ingest")
                await check_front_pages(context, registry.url)
                assert offline.outside == []
                assert any(u.endswith("/docs/static/swagger-ui-bundle.js")
                           for u in offline.local)
                # The cut holds: an outside address does not load.
                page = await context.new_page()
                with pytest.raises(Exception, match="ERR_INTERNET_DISCONNECTED"):
                    await page.goto("https://example.org/")
                assert offline.outside == ["https://example.org/"]
            finally:
                await browser.close()
