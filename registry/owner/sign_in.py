"""Signing in to the owner page with a notice's one-time link.

* Opening the link (``GET /owner/?token=...``) uses nothing: it looks the link up and
  shows one button (a form), or says in the owner's language why the link cannot be
  used (401 unknown, 410 used or expired). Mail scanners and link previews that
  follow links leave it as it was.
* Only the button's ``POST /owner/sign-in`` uses the link. The form carries a token
  signed over a random nonce that the GET also put in a ``SameSite=Strict`` cookie: a
  form posted from another site arrives without that cookie and is refused, so nobody
  can sign a browser into their own session (login CSRF).
* When the browser already holds another owner's session, the POST does not replace
  it silently: it says so and asks; only a second POST with ``replace=1`` signs the
  other owner out (their session is revoked) and signs this one in. The POST answers
  with a 303 to ``/owner/``: a navigation this site started, so the ``SameSite=Strict``
  cookie goes along.
* Links that cannot be used count against the client address
  (:class:`registry.owner.guard.LinkLimiter`); past the limit every link from it gets
  429 with ``Retry-After``, before it is looked up.
"""

from __future__ import annotations

import math
import re
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import Response

from platereg.http import ProblemError
from platereg.i18n import N_, translations
from registry.owner import html, sessions
from registry.owner.access import OwnerAccess, owner_access
from registry.owner.guidance import Department
from registry.owner.routes import mint_from_link
from registry.owner.tokens import SIGN_IN_SECONDS, OwnerClaims
from registry.owner.words import gettext

router = APIRouter(include_in_schema=False)
NONCE_COOKIE = "platereg_sign_in"
_LINK = re.compile(r"[A-Za-z0-9_-]{16,128}")
_REFUSED = {
    "unknown": N_("This link is not valid."),
    "used": N_("This link has already been used: each link works once."),
    "expired": N_("This link has expired: links work for 14 days."),
}


def _refused_page(lang: str, department: Department, reason: str) -> Response:
    return html.message(lang, department, gettext("This link cannot be used", lang),
                        html.sign_in_help(lang), 401 if reason == "unknown" else 410,
                        notice=gettext(_REFUSED[reason], lang))


def _wait_page(lang: str, department: Department, exc: ProblemError, why: str) -> Response:
    retry_after = (exc.headers or {}).get("Retry-After", "60")
    minutes = max(1, math.ceil(int(retry_after) / 60))
    again = translations(lang).ngettext("Try again in %(num)d minute.",
                                        "Try again in %(num)d minutes.", minutes)
    return html.message(lang, department, gettext("Please wait", lang), gettext(why, lang),
                        429, notice=again % {"num": minutes},
                        headers={"Retry-After": retry_after})


_TOO_MANY_LINKS = N_("Too many links that could not be used came from your network.")
_TOO_MANY_SIGN_INS = N_("You have signed in many times in the last hour.")


async def _usable(request: Request, access: OwnerAccess, link: str, lang: str | None,
                  client: str) -> sessions.Link | Response:
    """The link, if it can still be used; else the page saying why (counted)."""
    department = Department.from_settings(access.settings)
    found = None
    if _LINK.fullmatch(link):
        try:
            found = await sessions.peek_link(access.pool, link, access.clock.now())
        except sessions.LinkRefused:
            found = None
    if found is None or found.refused:
        access.links.refused(client)
        shown = html.page_language(request, lang, found.language if found else None)
        return _refused_page(shown, department, (found.refused if found else None) or "unknown")
    return found


def _form_page(request: Request, access: OwnerAccess, link: str, lang: str, nonce: str, *,
               switching: bool) -> Response:
    other = "fr" if lang == "en" else "en"
    heading = N_("Another owner is signed in") if switching else N_("Sign in to your owner page")
    return html.render(
        "sign_in.html.j2", lang, Department.from_settings(access.settings),
        409 if switching else 200, heading=gettext(heading, lang), link=link,
        csrf=access.signer().sign_in_csrf(nonce), switching=switching,
        switch_href=f"/owner/?token={link}&lang={other}")


async def link_page(request: Request, access: OwnerAccess, link: str,
                    lang: str | None) -> Response:
    """``GET /owner/?token=...``: the sign-in button, or why the link cannot be used."""
    department = Department.from_settings(access.settings)
    try:
        client = access.check_link_budget(request)
    except ProblemError as exc:
        return _wait_page(html.page_language(request, lang), department, exc, _TOO_MANY_LINKS)
    found = await _usable(request, access, link, lang, client)
    if isinstance(found, Response):
        return found
    nonce = secrets.token_urlsafe(24)
    response = _form_page(request, access, link, html.page_language(request, lang,
                                                                   found.language),
                          nonce, switching=False)
    html.set_cookie(response, request, access, NONCE_COOKIE, nonce, SIGN_IN_SECONDS)
    return response


@router.post("/owner/sign-in")
async def sign_in(request: Request) -> Response:
    """Use the link: the owner cookie and a 303 to the page, or a page saying why not."""
    access = owner_access(request)
    department = Department.from_settings(access.settings)
    fields = await html.form(request)
    lang = html.form_lang(fields)
    try:
        client = access.check_link_budget(request)
    except ProblemError as exc:
        return _wait_page(html.page_language(request, lang), department, exc, _TOO_MANY_LINKS)
    nonce = request.cookies.get(NONCE_COOKIE)
    if not access.signer().sign_in_csrf_ok(nonce, html.first(fields, "csrf")):
        shown = html.page_language(request, lang)
        return html.message(shown, department, gettext("Sign in", shown), gettext(
            "This sign-in form has expired or came from another site. Open the link in "
            "your notice again.", shown), 403)
    link = html.first(fields, "link") or ""
    found = await _usable(request, access, link, lang, client)
    if isinstance(found, Response):
        return found
    shown = html.page_language(request, lang, found.language)
    current = await html.signed_in(request, access)
    if (current is not None and current.owner_id != found.owner_id
            and html.first(fields, "replace") != "1"):
        return _form_page(request, access, link, shown, nonce or "", switching=True)
    return await _use(request, access, link, client, shown, current)


async def _use(request: Request, access: OwnerAccess, link: str, client: str, lang: str,
               current: OwnerClaims | None) -> Response:
    department = Department.from_settings(access.settings)
    try:
        minted = await mint_from_link(access, link, client)
    except ProblemError as exc:
        if exc.status == 429:
            return _wait_page(lang, department, exc, _TOO_MANY_SIGN_INS)
        if exc.status in (401, 410):  # used by a racing request since the look-up
            reason = ("unknown" if exc.status == 401
                      else "expired" if "expired" in (exc.detail or "") else "used")
            return _refused_page(lang, department, reason)
        raise
    if current is not None:
        await sessions.revoke(access.pool, current, access.clock.now())
    response = html.redirect(html.with_lang("/owner/", lang))
    html.set_cookie(response, request, access, html.COOKIE, minted.token,
                    access.signer().lifetime)
    html.clear_cookie(response, request, access, NONCE_COOKIE)
    return response
