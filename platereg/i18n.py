"""The project's words in English and French: one gettext domain, Babel message catalogs.

Source strings are English, in the templates (Jinja2's ``i18n`` extension: ``{% trans %}``,
``_()``) and in the code (``gettext``/``ngettext`` on :func:`translations`, ``N_`` to mark
a string translated where it is used). ``platereg/locale/<language>/LC_MESSAGES/platereg.po``
holds each other language's texts; English needs no catalog (gettext returns the source).
A catalog is compiled in memory from its ``.po`` when a process first needs the language,
with Babel's public reader and writer, exactly as ``pybabel compile`` would (fuzzy entries
left out): the ``.po`` is the only file to keep, in an editable install as in the image.
``make messages`` extracts the strings and updates the catalogs (docs/development.md).
"""

from __future__ import annotations

import functools
import io
from importlib.resources import files

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from jinja2 import Environment

DOMAIN = "platereg"
LANGUAGES = ("en", "fr")
SOURCE_LANGUAGE = "en"
#: The Babel locale of each language (dates, numbers, lists, plural rules).
LOCALES = {"en": "en_CA", "fr": "fr_CA"}
#: Each language's name in that language (the language switch).
NAMES = {"en": "English", "fr": "Français"}


def N_(message: str) -> str:  # noqa: N802 (gettext's marker name)
    """Marks ``message`` for extraction; it is translated where it is shown."""
    return message


def catalog_path(language: str) -> str:
    return f"locale/{language}/LC_MESSAGES/{DOMAIN}.po"


@functools.cache
def translations(language: str) -> NullTranslations:
    """The compiled catalog of ``language`` (English: the source strings)."""
    if language == SOURCE_LANGUAGE:
        return NullTranslations()
    source = files("platereg").joinpath(catalog_path(language))
    with source.open("rb") as po:
        catalog = read_po(po, locale=LOCALES[language], domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def install(env: Environment, language: str) -> Environment:
    """Installs ``language``'s gettext in an environment made with ``jinja2.ext.i18n``."""
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env
