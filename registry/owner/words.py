"""The owner page's plain-language phrasing of plate status, renewal blockers, notice kinds,
channels and delivery outcomes, in the page's language (English source strings, catalogs
in ``platereg/locale``; see :mod:`platereg.i18n`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from babel import Locale
from babel.dates import format_date, format_datetime, get_timezone_name

from platereg.i18n import LANGUAGES, LOCALES, N_, translations

_STATUS = {"valid": N_("Valid"), "expired": N_("Expired"), "suspended": N_("Suspended"),
           "stolen": N_("Reported stolen"), "cancelled": N_("Cancelled")}
_BLOCKERS = {"insurance_lapsed": N_("your insurance has lapsed"),
             "unpaid_fines": N_("you have unpaid fines"),
             "emissions_failed": N_("the vehicle failed its emissions test"),
             "court_order": N_("a court order"), "administrative": N_("an administrative hold")}
_KINDS = {"renewal_reminder": N_("Renewal reminder"), "expired": N_("Plate expired"),
          "renewed": N_("Plate renewed"), "suspended": N_("Plate suspended"),
          "reinstated": N_("Plate reinstated"), "stolen_reported": N_("Plate reported stolen"),
          "recovered": N_("Plate recovered"), "transferred_in": N_("Plate transferred to you"),
          "transferred_out": N_("Plate transferred away"), "cancelled": N_("Plate cancelled")}
CHANNELS = ("email", "sms", "webhook", "plate_display", "paper")
_CHANNELS = {"email": N_("E-mail"), "sms": N_("Text message (SMS)"), "webhook": N_("Webhook"),
             "plate_display": N_("Smart plate display"), "paper": N_("Paper letter")}
_OUTCOMES = {"sent": N_("Sent"), "retry": N_("Failed, will retry"), "failed": N_("Failed")}
_ROLES = {"enforcement": N_("Enforcement"), "operator": N_("Registry staff"),
          "portal": N_("Online services portal"), "ingest": N_("Data feed")}
_PURPOSES = {"traffic_stop": N_("traffic stop"), "parking_enforcement": N_("parking enforcement"),
             "alpr_hit": N_("automatic plate reader"), "investigation": N_("investigation"),
             "collision": N_("collision"),
             "registry_administration": N_("registry administration"),
             "audit_review": N_("audit review"), "testing": N_("testing")}


def gettext(message: str, language: str) -> str:
    return translations(language).gettext(message)


def _coded(table: dict[str, str], code: str, language: str) -> str:
    """A code in words (an unknown code is shown as it is)."""
    return gettext(table[code], language) if code in table else code


def pick_language(*candidates: str | None) -> str:
    for c in candidates:
        if c in LANGUAGES:
            return c  # type: ignore[return-value]
    return "en"


def accept_language(header: str | None) -> str | None:
    """The page language a browser's ``Accept-Language`` asks for first, if any."""
    ranked = []
    for n, part in enumerate((header or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
        try:
            weight = float(q)
        except ValueError:
            continue
        if tag and weight > 0:
            ranked.append((-weight, n, tag.strip()))
    preferred = [tag for _, _, tag in sorted(ranked)]
    found = Locale.negotiate(preferred, list(LANGUAGES), sep="-")
    return str(found) if found is not None else None


def date(value: dt.date | str | None, language: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = dt.date.fromisoformat(value)
    return format_date(value, format="long", locale=LOCALES[language])


def moment(value: dt.datetime, language: str, tz: dt.tzinfo) -> str:
    """A time in ``tz`` with the zone shown: 'Nov 24, 2026, 7:04:05 a.m. PST'."""
    local = value.astimezone(tz)
    zone = get_timezone_name(local, width="short", locale=LOCALES[language])
    return f"{format_datetime(local, format='medium', locale=LOCALES[language])} {zone}"


def zone_name(tz: dt.tzinfo, language: str) -> str:
    """A zone's generic name: 'Pacific Time', 'heure du Pacifique'."""
    return get_timezone_name(tz, width="long", locale=LOCALES[language])


def session_length(minutes: int, language: str) -> str:
    return translations(language).ngettext(
        "You stay signed in for %(num)d minute.", "You stay signed in for %(num)d minutes.",
        minutes) % {"num": minutes}


def offered_channels(allow_webhooks: bool, chosen: list[str] | None) -> tuple[str, ...]:
    """The channels an owner may choose: webhooks only where PLATEREG_OWNER_WEBHOOKS
    allows them, or for an owner who already has them (so saving keeps them)."""
    keep_webhook = allow_webhooks or "webhook" in (chosen or ())
    return tuple(c for c in CHANNELS if c != "webhook" or keep_webhook)


def expiry(view: dict[str, Any], today: dt.date, language: str) -> str:
    """The expiry in plain words: 'Expires on 30 November 2027 (in 12 days)'."""
    if not view.get("expires_on"):
        return ""
    expires = dt.date.fromisoformat(str(view["expires_on"]))
    when = date(expires, language)
    left = (expires - today).days
    t = translations(language)
    if left < 0:
        return t.gettext("Expired on %(date)s") % {"date": when}
    return t.ngettext("Expires on %(date)s (in %(num)d day)",
                      "Expires on %(date)s (in %(num)d days)", left) % {"date": when, "num": left}


def status(view: dict[str, Any], language: str) -> str:
    text = _coded(_STATUS, view["status"], language)
    reasons = view.get("suspension_reasons") or []
    if view["status"] == "suspended" and reasons:
        listed = "; ".join(_coded(_BLOCKERS, r, language) for r in reasons)
        text = gettext("%(status)s: %(reasons)s", language) % {"status": text,
                                                                "reasons": listed}
    return text


def blocked(view: dict[str, Any], language: str) -> str:
    """What blocks renewal, in plain words, or '' when nothing does."""
    reasons = [r for r in view.get("suspension_reasons") or [] if r in _BLOCKERS]
    if not reasons:
        return ""
    listed = "; ".join(_coded(_BLOCKERS, r, language) for r in reasons)
    return gettext("Renewal is blocked: %(reasons)s.", language) % {"reasons": listed}


def kind(value: str, language: str) -> str:
    return _coded(_KINDS, value, language)


def channel(value: str, language: str) -> str:
    return _coded(_CHANNELS, value, language)


def outcome(value: str, language: str) -> str:
    return _coded(_OUTCOMES, value, language)


def role(value: str, language: str) -> str:
    return _coded(_ROLES, value, language)


def purpose(value: str | None, language: str) -> str:
    if not value:
        return gettext("not given", language)
    return _coded(_PURPOSES, value, language)
