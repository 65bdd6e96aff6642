"""What every owner page answer shares: the templates (Jinja2, autoescaped, one
environment per language), the security headers, the cookies, the signed-in check and
the forms' parsing.

* Every answer carries a strict Content-Security-Policy (no script at all, styles
  from ``/owner/static/owner.css`` only), ``no-store``, ``nosniff``, no referrer and
  no framing.
* The owner token lives in an ``HttpOnly``, ``SameSite=Strict`` cookie on
  ``/owner/``, ``Secure`` as :func:`registry.owner.guard.cookie_secure` decides
  (from the configured page address or a trusted proxy, never from ``Host``).
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from platereg import i18n
from platereg.http import ProblemError
from registry.owner import words
from registry.owner.access import OWNER_KEY_ID, OwnerAccess
from registry.owner.guard import cookie_secure
from registry.owner.guidance import Department
from registry.owner.tokens import OwnerClaims
from registry.owner.words import gettext

COOKIE = "platereg_owner"
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "Cache-Control": "no-store", "Cross-Origin-Opener-Policy": "same-origin",
}
MAX_FORM_BYTES = 4096


@functools.cache
def _env(lang: str) -> Environment:
    """The page's templates with ``lang``'s words (one environment per language)."""
    return i18n.install(Environment(
        loader=PackageLoader("registry.owner", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"]), lang)


def render(template: str, lang: str, department: Department, status: int = 200,
           headers: dict[str, str] | None = None, **values: Any) -> Response:
    """A template in ``lang`` with the department's contact in its footer."""
    values.setdefault("heading", gettext("Your owner page", lang))
    other = "fr" if lang == "en" else "en"
    values.setdefault("switch_href", f"/owner/?lang={other}")
    body = _env(lang).get_template(template).render(
        lang=lang, other=other, other_name=i18n.NAMES[other], department=department,
        **values)
    return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                    headers={**SECURITY_HEADERS, **(headers or {})})


def message(lang: str, department: Department, heading: str, body: str, status: int = 200, *,
            notice: str | None = None, headers: dict[str, str] | None = None) -> Response:
    """A page of a few words: a heading, an optional notice and a paragraph."""
    return render("message.html.j2", lang, department, status, headers, heading=heading,
                  body=body, message=notice)


def page_language(request: Request, chosen: str | None, *known: str | None) -> str:
    """The language of a page: ``chosen`` (``?lang``), else what is ``known`` of the
    owner, else the browser's ``Accept-Language``, else English."""
    return words.pick_language(chosen, *known,
                               words.accept_language(request.headers.get("accept-language")))


def sign_in_help(lang: str) -> str:
    return gettext("Use the personal link in your latest notice from the Plate Registry, or "
                   "sign in through your online services portal.", lang)


def set_cookie(response: Response, request: Request, access: OwnerAccess, name: str,
               value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/owner/", httponly=True,
                        samesite="strict", secure=cookie_secure(request, access.settings))


def clear_cookie(response: Response, request: Request, access: OwnerAccess, name: str) -> None:
    response.delete_cookie(name, path="/owner/", httponly=True, samesite="strict",
                           secure=cookie_secure(request, access.settings))


async def signed_in(request: Request, access: OwnerAccess) -> OwnerClaims | None:
    """The owner whose session the cookie holds, if it is still active."""
    token = request.cookies.get(COOKIE)
    if not token or access.tokens is None:
        return None
    try:
        claims = await access.claims(token)
    except ProblemError:
        return None
    request.state.key_id = OWNER_KEY_ID
    return claims


async def form(request: Request) -> dict[str, list[str]]:
    if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"):
        raise ProblemError(415, "Unsupported Media Type", "send the page's form")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ProblemError(413, "Content Too Large", "form too large")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=False,
                    max_num_fields=20)


def first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def form_lang(fields: dict[str, list[str]]) -> str | None:
    lang = first(fields, "lang")
    return lang if lang in i18n.LANGUAGES else None


def redirect(location: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=303,
                    headers={**SECURITY_HEADERS, **(headers or {}), "Location": location})


def with_lang(path: str, lang: str | None, **params: str) -> str:
    """``path`` with ``params`` and the chosen language (if any) as the query."""
    query = [f"{k}={v}" for k, v in params.items()] + ([f"lang={lang}"] if lang else [])
    return path + ("?" + "&".join(query) if query else "")
