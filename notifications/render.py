"""Notice texts: Jinja2 templates (autoescaped HTML) with the i18n extension, dates and
lists with Babel.

``templates/kinds/<kind>.j2`` holds a kind's words as macros (``subject``, ``body``,
``short``), English source strings in ``{% trans %}`` blocks; ``templates/<channel>.j2``
lays them out for a channel (e-mail text and HTML, SMS, plate display, letter). The French
texts are in the project's catalog (:mod:`platereg.i18n`). Owner-supplied text (names,
agencies) is escaped in HTML by autoescaping, inside translated sentences too.
Templates are compiled once per process and language (no file check per render), and a
notice's texts are rendered on first use: a delivery renders only what its channel sends
(an SMS its SMS text; a webhook nothing).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any

from babel.dates import format_date
from babel.lists import format_list
from jinja2 import Environment, PackageLoader, StrictUndefined

from platereg import i18n
from platereg.i18n import LOCALES, N_

__all__ = ["LOCALES", "Texts", "language_of", "render", "variables"]

#: What blocks a renewal (suspension reasons) and other reasons, as owners read them.
REASONS: Mapping[str, str] = {
    "insurance_lapsed": N_("your insurance has lapsed"),
    "unpaid_fines": N_("there are unpaid fines"),
    "emissions_failed": N_("the vehicle failed its emissions test"),
    "court_order": N_("there is a court order"),
    "administrative": N_("there is an administrative hold"),
    "surrendered": N_("the plate was surrendered"),
    "destroyed": N_("the plate was destroyed"),
    "replaced": N_("the plate was replaced"),
}


@functools.cache
def _env(language: str, html: bool) -> Environment:
    """The templates in ``language``: HTML autoescaped; plain text (e-mail text part, SMS,
    display, letters) never is."""
    return i18n.install(Environment(
        loader=PackageLoader("notifications", "templates"), autoescape=html,  # noqa: S701
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, auto_reload=False,
        extensions=["jinja2.ext.i18n"]), language)


class Texts:
    """Every text of one notice, each rendered when first read."""

    def __init__(self, kind: str, plate_key: str, language: str, context: Mapping[str, Any],
                 recipient: Mapping[str, Any], link: str | None) -> None:
        self._args = (kind, plate_key, language, context, recipient, link)

    @cached_property
    def variables(self) -> dict[str, Any]:
        return variables(*self._args)

    def _text(self, name: str) -> str:
        return _env(self.variables["language"], False).get_template(name).render(self.variables)

    @cached_property
    def subject(self) -> str:
        return self._text("subject.j2").strip()

    @cached_property
    def text(self) -> str:
        return self._text("email.txt.j2")

    @cached_property
    def html(self) -> str:
        return _env(self.variables["language"], True).get_template("email.html.j2").render(
            self.variables)

    @cached_property
    def sms(self) -> str:
        return self._text("sms.j2").strip()

    @cached_property
    def display(self) -> str:
        return self._text("display.j2").strip()

    @cached_property
    def letter(self) -> str:
        return self._text("letter.j2")


def language_of(value: str | None) -> str:
    return "fr" if value == "fr" else "en"


def _date(value: str | None, language: str) -> str:
    if not value:
        return ""
    return format_date(dt.date.fromisoformat(value), format="long", locale=LOCALES[language])


def in_words(reason: str | None, language: str) -> str:
    """A reason code in plain words (an unknown code is shown as it is)."""
    if not reason:
        return ""
    if reason not in REASONS:
        return reason.replace("_", " ")
    return i18n.translations(language).gettext(REASONS[reason])


def blockers_in_words(reasons: Iterable[str], language: str) -> list[str]:
    return [in_words(r, language) for r in reasons]


def variables(kind: str, plate_key: str, language: str, context: Mapping[str, Any],
              recipient: Mapping[str, Any], link: str | None) -> dict[str, Any]:
    jurisdiction, _, plate = plate_key.partition("/")
    blocked = blockers_in_words(context.get("blocked_by") or (), language)
    return {
        "kind": kind, "language": language, "link": link,
        "plate": f"{plate} ({jurisdiction})",
        "name": recipient.get("name") or "",
        "expires": _date(context.get("expires_on"), language),
        "days_before": context.get("days_before") or 0,
        "reason_words": in_words(context.get("reason"), language),
        "blocked": blocked,
        "blocked_words": format_list(blocked, locale=LOCALES[language]) if blocked else "",
        "agency": context.get("agency") or "",
    }


def render(kind: str, plate_key: str, language: str | None, context: Mapping[str, Any],
           recipient: Mapping[str, Any], link: str | None = None) -> Texts:
    """The texts of one notice in the owner's language (rendered as they are read)."""
    return Texts(kind, plate_key, language_of(language), context, recipient, link)
