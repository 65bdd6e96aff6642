"""``/docs`` of both HTTP APIs: Swagger UI served by the API itself, so that it works on a
network without internet access (air-gapped government networks are common).

* Swagger UI's files come from the npm package ``swagger-ui-dist``, the Swagger project's
  own build (Apache-2.0, released with every Swagger UI release), vendored at a pinned
  version (:data:`SWAGGER_UI_VERSION`) in ``platereg/swagger_ui/`` with its LICENSE,
  NOTICE and the licences of what its bundle contains. ``MANIFEST.json`` there holds the
  version, the npm tarball's integrity and each file's SHA-256 (a unit test checks them);
  ``python devtools/vendor_swagger_ui.py VERSION`` replaces them. The PyPI packages that
  ship Swagger UI repackage the same files and trail its releases by months or years.
* The page has no inline script or style: it loads the bundle and ``platereg-init.js``
  (ours: the Swagger UI options) from ``/docs/static/``, so its Content-Security-Policy
  (:data:`DOCS_CSP`) allows scripts, styles, images and requests from this origin only
  (images also as ``data:`` URLs, which the stylesheet's icons are). Swagger UI's
  validator badge, which would call an outside service, is off.
* Assets are read once, served with an ETag (304 on a match), and gzipped for clients
  that accept it (the bundle is 1.7 MB, about 0.5 MB gzipped).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

SWAGGER_UI_VERSION = "5.35.0"
DOCS_PATH = "/docs"
STATIC_PATH = "/docs/static"
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
#: What /docs/static serves: file name -> media type.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "platereg-init.js": "text/javascript; charset=utf-8",
}
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} documentation</title>
<link rel="stylesheet" href="{static}/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script src="{static}/platereg-init.js"></script>
</body>
</html>
"""


class Asset:
    """One file of ``platereg/swagger_ui``: its bytes, gzipped bytes and ETag."""

    def __init__(self, name: str) -> None:
        self.body = files("platereg").joinpath("swagger_ui", name).read_bytes()
        self.gzipped = gzip.compress(self.body, compresslevel=9, mtime=0)
        self.etag = f'"{hashlib.sha256(self.body).hexdigest()[:32]}"'
        self.media_type = ASSETS[name]

    def response(self, request: Request) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": "public, max-age=3600",
                   "Vary": "Accept-Encoding", "X-Content-Type-Options": "nosniff"}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(self.gzipped, media_type=self.media_type,
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(self.body, media_type=self.media_type, headers=headers)


@functools.cache
def asset(name: str) -> Asset:
    return Asset(name)


def docs_page(title: str, openapi_url: str) -> str:
    """The /docs page: markup and script references only."""
    return _PAGE.format(title=html.escape(title), openapi=html.escape(openapi_url),
                        static=STATIC_PATH)


def install_docs(app: FastAPI) -> None:
    """``GET /docs`` and ``GET /docs/static/{name}`` on ``app`` (create it with
    ``docs_url=None``); no key needed, not in the OpenAPI document."""
    page = docs_page(app.title, app.openapi_url or "/openapi.json")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui() -> Response:
        return HTMLResponse(page, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @app.get(STATIC_PATH + "/{name}", include_in_schema=False)
    async def swagger_ui_asset(name: str, request: Request) -> Response:
        if name not in ASSETS:
            raise HTTPException(404)
        return asset(name).response(request)
