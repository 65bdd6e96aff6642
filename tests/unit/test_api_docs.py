"""/docs of both APIs from the vendored Swagger UI (platereg/api_docs.py), and the registry
API's front pages (registry/api/landing.py): the vendored files are the pinned release byte for
byte, the pages load nothing from elsewhere and carry strict Content-Security-Policies.
(tests/integration/test_api_docs_browser.py renders them in a browser, network cut.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from importlib.resources import files
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from ingest.api import create_ingest_app
from platereg import api_docs
from platereg.settings import load_settings
from registry.api import landing
from registry.api.app import create_registry_app

VENDORED = Path(api_docs.__file__).resolve().parent / "swagger_ui"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def apps() -> dict[str, FastAPI]:
    settings = load_settings()   # no lifespan: these routes need no database
    return {"registry": create_registry_app(settings),
            "ingest": create_ingest_app(settings)}


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_the_vendored_files_are_the_pinned_release() -> None:
    manifest = json.loads((VENDORED / "MANIFEST.json").read_text())
    assert (manifest["package"], manifest["version"]) == ("swagger-ui-dist",
                                                          api_docs.SWAGGER_UI_VERSION)
    assert manifest["integrity"].startswith("sha512-")
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == digest, name
    ours = {"MANIFEST.json", "platereg-init.js"}
    assert {p.name for p in VENDORED.iterdir()} == set(manifest["sha256"]) | ours
    assert set(api_docs.ASSETS) <= set(manifest["sha256"]) | ours
    assert "Apache License" in (VENDORED / "LICENSE").read_text()
    assert "Version 2.0" in (VENDORED / "LICENSE").read_text()


def test_the_page_has_no_inline_script_or_style_and_loads_only_its_own_files() -> None:
    page = api_docs.docs_page("T <&>", "/openapi.json")
    assert "T &lt;&amp;&gt;" in page
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
    assert "<style" not in page and "style=" not in page
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert url.startswith(api_docs.STATIC_PATH + "/"), url
        assert url.rsplit("/", 1)[1] in api_docs.ASSETS
    assert "unsafe" not in api_docs.DOCS_CSP and "default-src 'none'" in api_docs.DOCS_CSP
    init = files("platereg").joinpath("swagger_ui", "platereg-init.js").read_text()
    assert "validatorUrl: null" in init   # the validator badge would call an outside service


@pytest.mark.parametrize("api", ["registry", "ingest"])
async def test_docs_and_assets_are_served(apps: dict[str, FastAPI], api: str) -> None:
    async with client(apps[api]) as c:
        await check_docs_and_assets(c)


async def check_docs_and_assets(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert docs.headers["content-security-policy"] == api_docs.DOCS_CSP
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text
    bundle = await client.get("/docs/static/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and bundle.headers["content-encoding"] == "gzip"
    assert bundle.content == (VENDORED / "swagger-ui-bundle.js").read_bytes()
    assert bundle.headers["content-type"].startswith("text/javascript")
    again = await client.get("/docs/static/swagger-ui-bundle.js",
                             headers={"If-None-Match": bundle.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    plain = await client.get("/docs/static/swagger-ui.css",
                             headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content.startswith(b".swagger-ui")
    for name in ("MANIFEST.json", "LICENSE", "nope.js", "..%2fapi_docs.py"):
        missing = await client.get(f"/docs/static/{name}")
        assert missing.status_code == 404, name
        assert missing.headers["content-type"] == "application/problem+json"
    assert "/docs" not in (await client.get("/openapi.json")).json()["paths"]


def _style_hash(page: str) -> str:
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    return "'sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() + "'"


async def test_the_front_page_links_what_a_newcomer_looks_for(apps: dict[str, FastAPI]) -> None:
    async with client(apps["registry"]) as registry:
        page = await registry.get("/")
    assert page.status_code == 200
    links = set(re.findall(r'href="([^"]+)"', page.text))
    assert {"/docs", "/docs/events", "/owner/", "/healthz", "/readyz", "/metrics",
            "/openapi.json", "/docs/asyncapi.yaml"} == links
    csp = page.headers["content-security-policy"]
    assert f"style-src {_style_hash(page.text)};" in csp and "script-src" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    async with client(apps["ingest"]) as ingest:
        assert (await ingest.get("/")).status_code == 404   # the registry API's page only


async def test_the_event_catalogue_and_asyncapi_document_are_served(
        apps: dict[str, FastAPI]) -> None:
    async with client(apps["registry"]) as registry:
        page = await registry.get("/docs/events")
        document = await registry.get("/docs/asyncapi.yaml")
    generated = ROOT / "schemas" / "generated"
    assert page.text == (generated / "event-catalogue.html").read_text()
    assert f"style-src {_style_hash(page.text)};" in page.headers["content-security-policy"]
    assert document.headers["content-type"].startswith("application/yaml")
    assert document.text == (generated / "asyncapi.yaml").read_text()
    assert landing.csp("<p>no style</p>").startswith("default-src 'none'; style-src 'none';")
