"""The owner page, ``GET /owner/`` on the registry API: server-rendered HTML (Jinja2,
autoescaped), no JavaScript, English and French.

* Sign-in: a notice's link is ``/owner/?token=...``. The token is exchanged at once
  (:func:`routes.mint_from_link`), the owner token goes into an ``HttpOnly``,
  ``SameSite=Strict`` cookie (``Secure`` unless the page was reached on a loopback
  host), and the answer moves the browser to the clean ``/owner/`` with a meta
  refresh, which replaces the link's entry in the history. A 303 would not do: a
  browser withholds ``SameSite=Strict`` cookies along a redirect chain that a
  click in another site (the webmail) started, whereas the refresh is a
  navigation started by this site.
* Forms (preferences, sign-out) are POSTed with a CSRF token bound to the session
  (:meth:`OwnerTokens.csrf`); the cookie's SameSite=Strict is a second guard.
* Every answer carries a strict Content-Security-Policy (no script at all, styles
  from ``/owner/static/owner.css`` only), ``no-store``, ``nosniff``, no referrer and
  no framing. No plate or owner id is ever in a URL; the access log records only
  the route template.
"""

from __future__ import annotations

import datetime as dt
import functools
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from platereg import i18n
from platereg.http import ProblemError
from registry.owner import data, sessions, words
from registry.owner.access import OWNER_KEY_ID, OwnerAccess, owner_access
from registry.owner.routes import mint_from_link
from registry.owner.tokens import OwnerClaims
from registry.owner.words import gettext

router = APIRouter(include_in_schema=False)
COOKIE = "platereg_owner"
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "Cache-Control": "no-store", "Cross-Origin-Opener-Policy": "same-origin",
}
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
MAX_FORM_BYTES = 4096
_CSS = files("registry.owner").joinpath("static/owner.css").read_bytes()


@functools.cache
def _env(lang: str) -> Environment:
    """The page's templates with ``lang``'s words (one environment per language)."""
    return i18n.install(Environment(
        loader=PackageLoader("registry.owner", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"]), lang)


def _html(template: str, lang: str, status: int = 200, **values: Any) -> Response:
    values.setdefault("heading", gettext("Your owner page", lang))
    values.setdefault("refresh_to", None)
    other = "fr" if lang == "en" else "en"
    body = _env(lang).get_template(template).render(lang=lang, other=other,
                                                    other_name=i18n.NAMES[other], **values)
    return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                    headers=SECURITY_HEADERS)


def _message(lang: str, heading: str, body: str, status: int = 200, *,
             message: str | None = None, refresh_to: str | None = None,
             continue_to: str | None = None) -> Response:
    return _html("message.html.j2", lang, status, heading=heading, body=body, message=message,
                 refresh_to=refresh_to, continue_to=continue_to)


def _sign_in_help(lang: str) -> str:
    return gettext("Use the personal link in your latest notice from the Plate Registry, or "
                   "sign in through your online services portal.", lang)


def _secure(request: Request) -> bool:
    return (request.url.hostname or "") not in LOOPBACK


def _set_cookie(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(COOKIE, token, max_age=max_age, path="/owner/", httponly=True,
                        samesite="strict", secure=_secure(request))


def _clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/owner/", httponly=True, samesite="strict",
                           secure=_secure(request))


async def _signed_in(request: Request, access: OwnerAccess) -> OwnerClaims | None:
    token = request.cookies.get(COOKIE)
    if not token or access.tokens is None:
        return None
    try:
        claims = await access.claims(token)
    except ProblemError:
        return None
    request.state.key_id = OWNER_KEY_ID
    return claims


def _plate_item(v: dict[str, Any], today: dt.date, lang: str) -> dict[str, Any]:
    vehicle = v.get("vehicle") or {}
    parts = [str(vehicle[k]) for k in ("year", "make", "model", "colour") if vehicle.get(k)]
    return {**v, "status_words": words.status(v, lang),
            "expiry_words": words.expiry(v, today, lang),
            "blocked_words": words.blocked(v, lang), "vehicle_words": " ".join(parts)}


def _notice_item(n: dict[str, Any], lang: str, tz: dt.tzinfo) -> dict[str, Any]:
    return {**n, "kind_words": words.kind(n["kind"], lang),
            "created_words": words.moment(n["created_at"], lang, tz),
            "deliveries": [{**d, "channel_words": words.channel(d["channel"], lang),
                            "outcome_words": words.outcome(d["outcome"], lang),
                            "at_words": words.moment(d["at"], lang, tz)}
                           for d in n["deliveries"]]}


def _access_item(a: dict[str, Any], lang: str, tz: dt.tzinfo) -> dict[str, Any]:
    if a["plate"]:
        what = f"{a['jurisdiction']} {a['plate']}"
    elif a["kind"] == "owner_session":
        what = gettext("signed you in", lang)
    else:
        what = gettext("your owner record", lang)
    return {**a, "at_words": words.moment(a["at"], lang, tz), "what": what,
            "role_words": words.role(a["role"], lang),
            "purpose_words": words.purpose(a["purpose"], lang)}


async def _page(request: Request, access: OwnerAccess, claims: OwnerClaims, lang: str | None,
                *, message: str | None = None, error: str | None = None,
                status: int = 200) -> Response:
    now, today = access.now()
    owner_id = claims.owner_id
    plates = await data.plates(access.pool, owner_id, today, now)
    notices = await data.notices(access.pool, owner_id, 50)
    prefs = await data.preferences(access.pool, owner_id)
    access_log = await data.access_log(access.pool, owner_id, 100)
    access.audit(data.self_read_rows(owner_id, now, views=plates, record="page"))
    owner_language = next((p["owner"].get("language") for p in plates if p.get("owner")), None)
    lang = words.pick_language(lang, prefs["language"], owner_language)
    tz = access.settings.tz
    chosen = prefs["channels"] or []
    return _html(
        "page.html.j2", lang, status, message=message, error=error,
        plates=[_plate_item(p, today, lang) for p in plates],
        notices=[_notice_item(n, lang, tz) for n in notices],
        access=[_access_item(a, lang, tz) for a in access_log], prefs=prefs,
        channels=[{"value": c, "label": words.channel(c, lang), "checked": c in chosen}
                  for c in words.CHANNELS],
        notice_language=words.pick_language(prefs["language"], owner_language),
        csrf=access.signer().csrf(claims.session_id))


@router.get("/owner/")
async def owner_page(request: Request) -> Response:
    access = owner_access(request)
    params = request.query_params
    lang = params.get("lang") if params.get("lang") in i18n.LANGUAGES else None
    if access.tokens is None:
        lang = lang or "en"
        return _message(lang, gettext("Sign in", lang), _sign_in_help(lang), 503)
    link = params.get("token")
    if link is not None:
        return await _sign_in_from_link(request, access, link, lang)
    claims = await _signed_in(request, access)
    if claims is None:
        lang = lang or "en"
        message = gettext("You are signed out.", lang) if params.get("signed_out") else None
        return _message(lang, gettext("Sign in", lang), _sign_in_help(lang), message=message)
    message = (gettext("Your preferences are saved.", words.pick_language(lang))
               if params.get("saved") else None)
    return await _page(request, access, claims, lang, message=message)


async def _sign_in_from_link(request: Request, access: OwnerAccess, link: str,
                             lang: str | None) -> Response:
    lang = lang or "en"
    if not 16 <= len(link) <= 128:
        return _message(lang, gettext("This link cannot be used", lang), _sign_in_help(lang),
                        401, message="this sign-in link is not valid")
    try:
        minted = await mint_from_link(access, link)
    except ProblemError as exc:
        if exc.status == 503:
            raise
        return _message(lang, gettext("This link cannot be used", lang), _sign_in_help(lang),
                        exc.status, message=exc.detail)
    response = _message(lang, gettext("You are signed in.", lang), "", refresh_to="/owner/",
                        continue_to="/owner/")
    _set_cookie(response, request, minted.token, access.signer().lifetime)
    return response


async def _form(request: Request) -> dict[str, list[str]]:
    if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"):
        raise ProblemError(415, "Unsupported Media Type", "send the page's form")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ProblemError(413, "Content Too Large", "form too large")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=False,
                    max_num_fields=20)


async def _form_session(request: Request) -> tuple[OwnerAccess, OwnerClaims | None,
                                                   dict[str, list[str]], str | None, bool]:
    access = owner_access(request)
    form = await _form(request)
    lang = (form.get("lang") or [None])[0]
    lang = lang if lang in i18n.LANGUAGES else None
    claims = await _signed_in(request, access)
    csrf_ok = claims is not None and access.signer().csrf_ok(
        claims.session_id, (form.get("csrf") or [None])[0])
    return access, claims, form, lang, csrf_ok


def _redirect(location: str) -> Response:
    return Response(status_code=303, headers={**SECURITY_HEADERS, "Location": location})


@router.post("/owner/preferences")
async def owner_preferences(request: Request) -> Response:
    access, claims, form, lang, csrf_ok = await _form_session(request)
    if claims is None:
        return _redirect("/owner/" + (f"?lang={lang}" if lang else ""))
    page_lang = words.pick_language(lang)
    if not csrf_ok:
        return await _page(request, access, claims, lang, status=403,
                           error=gettext("Your form expired. Please try again.", page_lang))
    channels = [c for c in words.CHANNELS if c in set(form.get("channels", []))]
    language = (form.get("language") or [None])[0]
    if not channels or language not in i18n.LANGUAGES:
        return await _page(request, access, claims, lang, status=422,
                           error=gettext("Choose at least one channel.", page_lang))
    await data.put_preferences(access.pool, claims.owner_id, channels, language)
    return _redirect("/owner/?saved=1" + (f"&lang={lang}" if lang else ""))


@router.post("/owner/sign-out")
async def owner_sign_out(request: Request) -> Response:
    access, claims, _, lang, csrf_ok = await _form_session(request)
    if claims is not None and not csrf_ok:
        error = gettext("Your form expired. Please try again.", words.pick_language(lang))
        return await _page(request, access, claims, lang, error=error, status=403)
    if claims is not None:
        await sessions.revoke(access.pool, claims, access.clock.now())
    response = _redirect("/owner/?signed_out=1" + (f"&lang={lang}" if lang else ""))
    _clear_cookie(response, request)
    return response


@router.get("/owner/static/owner.css")
async def owner_css() -> Response:
    return Response(_CSS, media_type="text/css; charset=utf-8",
                    headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"})

