"""One i18n scheme: every word of the owner page and the notices comes from the project's
catalog, and the French catalog is complete.

The words are extracted here as ``make messages`` extracts them (``pybabel extract`` with
the mapping in pyproject.toml), so a string added to a template or the code without its
French fails the first test, and a French page or notice that still shows English fails
the others.
"""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po

from notifications.render import render
from platereg import i18n
from platereg.http import ProblemError
from registry.owner import html, page, sign_in, words
from registry.owner.guidance import Department
from registry.owner.zones import Zones

ROOT = Path(__file__).resolve().parents[2]
OTHER_LANGUAGES = [lang for lang in i18n.LANGUAGES if lang != i18n.SOURCE_LANGUAGE]
KINDS = sorted(p.stem for p in (ROOT / "notifications/templates/kinds").glob("*.j2"))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory):
    """The catalog template extracted from the code and the templates now."""
    pot = tmp_path_factory.mktemp("i18n") / "platereg.pot"
    CommandLineInterface().run(["pybabel", "-q", "extract", "-F", str(ROOT / "pyproject.toml"),
                                "-o", str(pot), str(ROOT)])
    with pot.open("rb") as f:
        return read_po(f)


def _catalog(language: str):
    with (ROOT / "platereg" / i18n.catalog_path(language)).open("rb") as f:
        return read_po(f, locale=i18n.LOCALES[language])


def test_the_owner_page_and_every_notice_kind_are_in_the_template(template) -> None:
    ids = {m.id if isinstance(m.id, str) else m.id[0] for m in template if m.id}
    assert len(ids) > 100
    for sample in ("Your owner page", "Who looked up your plates", "Hello %(name)s,",
                   "Plate %(plate)s has expired", "Sign in to your owner page",
                   "there is a court order", "Expires on %(date)s (in %(num)d day)"):
        assert sample in ids
    assert len(KINDS) == 10


@pytest.mark.parametrize("language", OTHER_LANGUAGES)
def test_every_message_has_a_checked_translation(template, language: str) -> None:
    catalog = _catalog(language)
    missing, fuzzy, stale = [], [], []
    for m in template:
        if not m.id:
            continue
        t = catalog.get(m.id)
        strings = t.string if t is not None and isinstance(t.string, tuple) else (
            (t.string,) if t is not None else ())
        if t is None or not strings or not all(s.strip() for s in strings):
            missing.append(m.id)
        elif t.fuzzy:
            fuzzy.append(m.id)
    known = {m.id if isinstance(m.id, str) else m.id[0] for m in template if m.id}
    stale = [m.id for m in catalog if m.id and
             (m.id if isinstance(m.id, str) else m.id[0]) not in known]
    assert (missing, fuzzy, stale) == ([], [], []), (
        "run `make messages` and translate: missing, fuzzy, no longer used")
    # placeholders and plural forms as in the source (babel's own checks)
    assert [(m.id, [str(e) for e in errors]) for m, errors in catalog.check()] == []


def _english_fragments(template) -> set[str]:
    """Literal pieces of the English source strings long enough to mean something."""
    out: set[str] = set()
    for m in template:
        for text in (m.id,) if isinstance(m.id, str) else m.id:
            if not text:
                continue
            for piece in re.split(r"%\(\w+\)[sd]", text):
                piece = piece.strip(" .,:;")
                if len(piece) >= 8:
                    out.add(piece)
    return out


#: English pieces that are French as well (loanwords, names).
SAME_IN_FRENCH = {"Webhook", "collision"}
#: Known English words a French text must never show, source strings or not.
ENGLISH = ("Hello", "Plate Registry", "Sign in", "Renewal", "registration", "March",
           "has been", "your insurance", "Your plates", "Expires on", "Delivery attempts")


class _Words(HTMLParser):
    """What a reader meets in an HTML page: its text and its labels (not class names)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parts += [v or "" for k, v in attrs if k in ("aria-label", "title", "alt")]

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _readable(text: str) -> str:
    if not text.lstrip().lower().startswith("<!doctype html>"):
        return text
    parser = _Words()
    parser.feed(text)
    parser.close()
    return "\n".join(parser.parts)


def _assert_french(text: str, fragments: set[str], where: str) -> None:
    text = _readable(text)
    found = [f for f in fragments | set(ENGLISH) if f in text and f not in SAME_IN_FRENCH]
    assert found == [], (where, found)


CONTEXTS = [
    {"expires_on": "2027-03-31", "days_before": 30, "reason": "insurance_lapsed",
     "blocked_by": ["unpaid_fines", "court_order", "emissions_failed"], "agency": "OPP"},
    {"expires_on": "2027-03-31", "days_before": 1, "reason": "surrendered"},
    {"expires_on": "2027-03-31", "days_before": 7, "blocked_by": ["administrative"]},
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_french_notice_is_all_french(template, kind: str) -> None:
    fragments = _english_fragments(template)
    for ctx in CONTEXTS:
        for link in (None, "https://o/owner/?token=t"):
            t = render(kind, "CA-ON/ABC123", "fr", ctx, {"name": "Zoé"}, link)
            for part in ("subject", "text", "html", "sms", "display", "letter"):
                _assert_french(getattr(t, part), fragments, f"{kind} {part} {ctx}")


def test_french_plural_forms_and_lists() -> None:
    one = render("renewal_reminder", "CA-ON/A1", "fr", CONTEXTS[1], {"name": "A"})
    assert "dans 1 jour." in one.text
    many = render("renewal_reminder", "CA-ON/A1", "fr", CONTEXTS[0], {"name": "A"})
    assert "dans 30 jours." in many.text
    assert ("des amendes sont impayées, il y a une ordonnance du tribunal et le véhicule "
            "a échoué au test d'émissions") in many.text
    assert "in 1 day." in render("renewal_reminder", "CA-ON/A1", "en", CONTEXTS[1],
                                 {"name": "A"}).text
    today = dt.date(2027, 3, 1)
    assert words.expiry({"expires_on": "2027-03-03"}, today, "fr") == \
        "Expire le 3 mars 2027 (dans 2 jours)"
    assert words.expiry({"expires_on": "2027-03-02"}, today, "en") == \
        "Expires on March 2, 2027 (in 1 day)"


def _owner_page(lang: str) -> str:
    """The whole page with every status, blocker, kind, channel, outcome, role and purpose,
    each status's guidance, and every sign-in page (button, switch, refusals, waits)."""
    tz, today = ZoneInfo("America/Toronto"), dt.date(2027, 3, 1)
    zones = Zones({}, tz)
    department = Department("ServiceOntario", "1-800-267-8097", "https://example.org/c",
                            "https://example.org/r")
    now = dt.datetime(2027, 3, 1, 15, 4, 5, tzinfo=dt.UTC)
    plates = [{"jurisdiction": "CA-ON", "plate": f"P{i}", "status": s, "expires_on": e,
               "flags": [s, "expired"], "suspension_reasons": list(words._BLOCKERS)}
              for i, (s, e) in enumerate(zip(words._STATUS, ("2027-03-31", "2027-01-02",
                                                             "2027-03-02", "2027-03-01", None),
                                             strict=True))]
    plates.append({"jurisdiction": "CA-BC", "plate": "FAR", "status": "valid",
                   "expires_on": "2028-01-01", "flags": []})
    notices = [{"kind": k, "jurisdiction": "CA-ON", "plate": "P1", "created_at": now,
                "deliveries": [{"channel": c, "attempt": 1, "outcome": o, "at": now,
                                "error": None}
                               for c, o in zip(words.CHANNELS, [*words._OUTCOMES] * 2,
                                               strict=False)]}
               for k in words._KINDS] + [{"kind": "renewed", "jurisdiction": "CA-ON",
                                          "plate": "P1", "created_at": now, "deliveries": []}]
    access = [{"plate": None, "jurisdiction": None, "kind": kind, "at": now, "key_name": "K",
               "role": role, "purpose": purpose}
              for kind in ("owner_session", "record") for role in words._ROLES
              for purpose in (*words._PURPOSES, None)]
    out = html.render(
        "page.html.j2", lang, department, message="m", error="e",
        session_words=words.session_length(15, lang),
        plates=[page._plate_item(p, today, lang, department, 60) for p in plates],
        notices=[page._notice_item(n, lang, zones) for n in notices],
        access=[page._access_item(a, lang, zones, tz) for a in access],
        prefs={"channels": None, "language": None},
        channels=[{"value": c, "label": words.channel(c, lang), "checked": False}
                  for c in words.CHANNELS], notice_language=lang, csrf="c").body.decode()
    for heading in ("Sign in", "This link cannot be used"):
        out += html.message(lang, department, words.gettext(heading, lang),
                            html.sign_in_help(lang)).body.decode()
    for reason in sign_in._REFUSED:
        out += sign_in._refused_page(lang, department, reason).body.decode()
    for why in (sign_in._TOO_MANY_LINKS, sign_in._TOO_MANY_SIGN_INS):
        wait = ProblemError(429, "Too Many Requests", "x", headers={"Retry-After": "90"})
        out += sign_in._wait_page(lang, department, wait, why).body.decode()
    for switching in (False, True):
        out += html.render("sign_in.html.j2", lang, department, heading="h", link="l",
                           csrf="c", switching=switching).body.decode()
    return out


def test_the_french_owner_page_is_all_french(template) -> None:
    french = _owner_page("fr")
    _assert_french(french, _english_fragments(template), "owner page")
    for text in ("Votre page de propriétaire", "Qui a consulté vos plaques", "Déclarée volée",
                 "Le renouvellement est bloqué : ", "Expire le 31 mars 2027 (dans 30 jours)",
                 "Personnel du registre", "interception routière", "Accéder à ma page",
                 "Vous restez connecté pendant 15 minutes.", "Réessayez dans 2 minutes.",
                 "appelez ServiceOntario au 1-800-267-8097", "Site Web de ServiceOntario",
                 "1 mars 2027, 10 h 04 min 05 s HNE"):
        assert text in french
    english = _owner_page("en")
    assert "Your owner page" in english and "Registre" not in english
