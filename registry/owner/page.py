"""The owner page, ``GET /owner/`` on the registry API: server-rendered HTML (Jinja2,
autoescaped, :mod:`registry.owner.html`), no JavaScript, English and French.

* Signed in (the cookie :mod:`registry.owner.sign_in` sets from a sign-in link): the
  owner's plates, each with its status in words, what it means and what to do next
  (:mod:`registry.owner.guidance`), notices with their delivery attempts, channel and
  language preferences (a form), the access log, and the department's contact. Times
  are shown in the plate jurisdiction's zone, zone named (:mod:`registry.owner.zones`).
* A ``?token=`` (a notice's link) is handed to :func:`registry.owner.sign_in.link_page`,
  which shows one button and uses nothing.
* Forms (preferences, sign-out) are POSTed with a CSRF token bound to the session
  (:meth:`OwnerTokens.csrf`); the cookie's SameSite=Strict is a second guard.
* No plate or owner id is ever in a URL; the access log records only the route
  template.
"""

from __future__ import annotations

import datetime as dt
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from platereg import i18n
from registry.owner import data, html, sessions, sign_in, words
from registry.owner.access import OwnerAccess, owner_access
from registry.owner.guidance import Department, guidance
from registry.owner.tokens import OwnerClaims
from registry.owner.words import gettext
from registry.owner.zones import Zones

router = APIRouter(include_in_schema=False)
_CSS = files("registry.owner").joinpath("static/owner.css").read_bytes()


def _plate_item(v: dict[str, Any], today: dt.date, lang: str, department: Department,
                renew_within: int) -> dict[str, Any]:
    vehicle = v.get("vehicle") or {}
    parts = [str(vehicle[k]) for k in ("year", "make", "model", "colour") if vehicle.get(k)]
    return {**v, "status_words": words.status(v, lang),
            "expiry_words": words.expiry(v, today, lang),
            "blocked_words": words.blocked(v, lang), "vehicle_words": " ".join(parts),
            "guidance": guidance(v, today, lang, department, renew_within)}


def _notice_item(n: dict[str, Any], lang: str, zones: Zones) -> dict[str, Any]:
    tz = zones.of(n["jurisdiction"])
    return {**n, "kind_words": words.kind(n["kind"], lang),
            "created_words": words.moment(n["created_at"], lang, tz),
            "deliveries": [{**d, "channel_words": words.channel(d["channel"], lang),
                            "outcome_words": words.outcome(d["outcome"], lang),
                            "at_words": words.moment(d["at"], lang, tz)}
                           for d in n["deliveries"]]}


def _access_item(a: dict[str, Any], lang: str, zones: Zones, home: dt.tzinfo) -> dict[str, Any]:
    """An access-log row; a row about no plate is shown in the owner's ``home`` zone."""
    if a["plate"]:
        what = f"{a['jurisdiction']} {a['plate']}"
    elif a["kind"] == "owner_session":
        what = gettext("signed you in", lang)
    else:
        what = gettext("your owner record", lang)
    tz = zones.of(a["jurisdiction"]) if a["plate"] else home
    return {**a, "at_words": words.moment(a["at"], lang, tz), "what": what,
            "role_words": words.role(a["role"], lang),
            "purpose_words": words.purpose(a["purpose"], lang)}


def _channel_choices(offered: tuple[str, ...], chosen: list[str], lang: str) -> list[dict]:
    return [{"value": c, "label": words.channel(c, lang), "checked": c in chosen}
            for c in offered]


async def _page(request: Request, access: OwnerAccess, claims: OwnerClaims, lang: str | None,
                *, message: str | None = None, error: str | None = None,
                status: int = 200) -> Response:
    now, today = access.now()
    owner_id, settings, zones = claims.owner_id, access.settings, access.zones
    plates = await data.plates(access.pool, owner_id, today, now)
    notices = await data.notices(access.pool, owner_id, 50)
    prefs = await data.preferences(access.pool, owner_id)
    access_log = await data.access_log(access.pool, owner_id, 100)
    await access.audit(data.self_read_rows(owner_id, now, views=plates, record="page"))
    owner_language = next((p["owner"].get("language") for p in plates if p.get("owner")), None)
    lang = words.pick_language(lang, prefs["language"], owner_language)
    department = Department.from_settings(settings)
    renew_within = max(settings.renewal_reminder_days)
    home = zones.common(p["jurisdiction"] for p in plates)
    chosen = prefs["channels"] or []
    return html.render(
        "page.html.j2", lang, department, status, message=message, error=error,
        session_words=words.session_length(settings.owner_token_minutes, lang),
        plates=[_plate_item(p, today, lang, department, renew_within) for p in plates],
        notices=[_notice_item(n, lang, zones) for n in notices],
        access=[_access_item(a, lang, zones, home) for a in access_log], prefs=prefs,
        channels=_channel_choices(words.offered_channels(settings.owner_webhooks, chosen),
                                  chosen, lang),
        notice_language=words.pick_language(prefs["language"], owner_language),
        csrf=access.signer().csrf(claims.session_id))


@router.get("/owner/")
async def owner_page(request: Request) -> Response:
    access = owner_access(request)
    params = request.query_params
    lang = params.get("lang") if params.get("lang") in i18n.LANGUAGES else None
    department = Department.from_settings(access.settings)
    if access.tokens is None:
        lang = html.page_language(request, lang)
        return html.message(lang, department, gettext("Sign in", lang),
                            html.sign_in_help(lang), 503)
    link = params.get("token")
    if link is not None:
        return await sign_in.link_page(request, access, link, lang)
    claims = await html.signed_in(request, access)
    if claims is None:
        lang = html.page_language(request, lang)
        notice = gettext("You are signed out.", lang) if params.get("signed_out") else None
        return html.message(lang, department, gettext("Sign in", lang),
                            html.sign_in_help(lang), notice=notice)
    message = (gettext("Your preferences are saved.", words.pick_language(lang))
               if params.get("saved") else None)
    return await _page(request, access, claims, lang, message=message)


async def _form_session(request: Request) -> tuple[OwnerAccess, OwnerClaims | None,
                                                   dict[str, list[str]], str | None, bool]:
    access = owner_access(request)
    fields = await html.form(request)
    lang = html.form_lang(fields)
    claims = await html.signed_in(request, access)
    csrf_ok = claims is not None and access.signer().csrf_ok(
        claims.session_id, html.first(fields, "csrf"))
    return access, claims, fields, lang, csrf_ok


@router.post("/owner/preferences")
async def owner_preferences(request: Request) -> Response:
    access, claims, fields, lang, csrf_ok = await _form_session(request)
    if claims is None:
        return html.redirect(html.with_lang("/owner/", lang))
    page_lang = words.pick_language(lang)
    if not csrf_ok:
        return await _page(request, access, claims, lang, status=403,
                           error=gettext("Your form expired. Please try again.", page_lang))
    current = await data.preferences(access.pool, claims.owner_id)
    offered = words.offered_channels(access.settings.owner_webhooks, current["channels"])
    channels = [c for c in offered if c in set(fields.get("channels", []))]
    language = html.first(fields, "language")
    if not channels or language not in i18n.LANGUAGES:
        return await _page(request, access, claims, lang, status=422,
                           error=gettext("Choose at least one channel.", page_lang))
    await data.put_preferences(access.pool, claims.owner_id, channels, language)
    return html.redirect(html.with_lang("/owner/", lang, saved="1"))


@router.post("/owner/sign-out")
async def owner_sign_out(request: Request) -> Response:
    access, claims, _, lang, csrf_ok = await _form_session(request)
    if claims is not None and not csrf_ok:
        error = gettext("Your form expired. Please try again.", words.pick_language(lang))
        return await _page(request, access, claims, lang, error=error, status=403)
    if claims is not None:
        await sessions.revoke(access.pool, claims, access.clock.now())
    response = html.redirect(html.with_lang("/owner/", lang, signed_out="1"))
    html.clear_cookie(response, request, access, html.COOKIE)
    return response


@router.get("/owner/static/owner.css")
async def owner_css() -> Response:
    return Response(_CSS, media_type="text/css; charset=utf-8",
                    headers={**html.SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"})
