"""Notice texts: Jinja2 templates (autoescaped HTML), EN/FR, dates with Babel.

``templates/<language>/<kind>.j2`` holds a kind's words in one language as
macros (``subject``, ``body``, ``short``); ``templates/<channel>.j2`` lays
them out for a channel (e-mail text and HTML, SMS, plate display, letter).
Owner-supplied text (names, agencies) is escaped in HTML by autoescaping.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
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
                    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
# Plain text (e-mail text part, SMS, display, letters) is never HTML: no escaping.
_text = Environment(loader=PackageLoader("notifications", "templates"),
                    autoescape=False, undefined=StrictUndefined, trim_blocks=True,  # noqa: S701
                    lstrip_blocks=True)


@dataclass(frozen=True)
class Texts:
    subject: str
    text: str
    html: str
    sms: str
    display: str
    letter: str


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
    """Every text of one notice in the owner's language."""
    lang = language_of(language)
    v = variables(kind, plate_key, lang, context, recipient, link)
    return Texts(
        subject=_text.get_template("subject.j2").render(v).strip(),
        text=_text.get_template("email.txt.j2").render(v),
        html=_html.get_template("email.html.j2").render(v),
        sms=_text.get_template("sms.j2").render(v).strip(),
        display=_text.get_template("display.j2").render(v).strip(),
        letter=_text.get_template("letter.j2").render(v),
    )
