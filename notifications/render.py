"""Notice texts: Jinja2 templates (autoescaped HTML), EN/FR, dates with Babel.

``templates/<language>/<kind>.j2`` holds a kind's words in one language as
macros (``subject``, ``body``, ``short``); ``templates/<channel>.j2`` lays
them out for a channel (e-mail text and HTML, SMS, plate display, letter).
Owner-supplied text (names, agencies) is escaped in HTML by autoescaping.
Templates are compiled once per process (no file check per render), and a
notice's texts are rendered on first use: a delivery renders only what its
channel sends (an SMS its SMS text; a webhook nothing).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from babel.dates import format_date
from jinja2 import Environment, PackageLoader, StrictUndefined

from notifications.rules import blockers_in_words, in_words

LOCALES = {"en": "en_CA", "fr": "fr_CA"}
WORDS = {
    "en": {"sign_in": "Sign in to your owner page",
           "link_valid": "This personal link works once and for 14 days.",
           "signature": "Plate Registry"},
    "fr": {"sign_in": "Connectez-vous à votre page de propriétaire",
           "link_valid": "Ce lien personnel fonctionne une seule fois, pendant 14 jours.",
           "signature": "Registre des plaques"},
}

_html = Environment(loader=PackageLoader("notifications", "templates"), autoescape=True,
                    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                    auto_reload=False)
# Plain text (e-mail text part, SMS, display, letters) is never HTML: no escaping.
_text = Environment(loader=PackageLoader("notifications", "templates"),
                    autoescape=False, undefined=StrictUndefined, trim_blocks=True,  # noqa: S701
                    lstrip_blocks=True, auto_reload=False)


class Texts:
    """Every text of one notice, each rendered when first read."""

    def __init__(self, kind: str, plate_key: str, language: str, context: Mapping[str, Any],
                 recipient: Mapping[str, Any], link: str | None) -> None:
        self._args = (kind, plate_key, language, context, recipient, link)

    @cached_property
    def variables(self) -> dict[str, Any]:
        return variables(*self._args)

    def _text(self, name: str) -> str:
        return _text.get_template(name).render(self.variables)

    @cached_property
    def subject(self) -> str:
        return self._text("subject.j2").strip()

    @cached_property
    def text(self) -> str:
        return self._text("email.txt.j2")

    @cached_property
    def html(self) -> str:
        return _html.get_template("email.html.j2").render(self.variables)

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


def variables(kind: str, plate_key: str, language: str, context: Mapping[str, Any],
              recipient: Mapping[str, Any], link: str | None) -> dict[str, Any]:
    jurisdiction, _, plate = plate_key.partition("/")
    return {
        "kind": kind, "language": language, "link": link, "words": WORDS[language],
        "plate": f"{plate} ({jurisdiction})",
        "name": recipient.get("name") or "",
        "expires": _date(context.get("expires_on"), language),
        "days_before": context.get("days_before"),
        "reason_words": in_words(context.get("reason"), language),
        "blocked": blockers_in_words(context.get("blocked_by") or (), language),
        "agency": context.get("agency") or "",
    }


def render(kind: str, plate_key: str, language: str | None, context: Mapping[str, Any],
           recipient: Mapping[str, Any], link: str | None = None) -> Texts:
    """The texts of one notice in the owner's language (rendered as they are read)."""
    return Texts(kind, plate_key, language_of(language), context, recipient, link)
