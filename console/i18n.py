"""Japanese and English: gettext catalogues (console/locale/<language>/LC_MESSAGES/console.po)
compiled in memory when the console is imported, so `make run` and `make test` need no
compile step, and one Jinja2 environment per language, autoescaped."""

from __future__ import annotations

import datetime as dt
import gettext
import io
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import phonenumbers
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from jinja2 import Environment, FileSystemLoader, select_autoescape

Language = Literal["ja", "en"]
LANGUAGES: tuple[Language, ...] = ("ja", "en")
HERE = Path(__file__).parent
LOCALE = HERE / "locale"
TEMPLATES = HERE / "templates"


def language_or(value: str | None, default: Language) -> Language:
    """``value`` when it names a language the console speaks, else ``default``."""
    for language in LANGUAGES:
        if value == language:
            return language
    return default


@cache
def translations(language: Language) -> gettext.GNUTranslations:
    """The language's catalogue, compiled from its .po file."""
    with (LOCALE / language / "LC_MESSAGES" / "console.po").open("rb") as po:
        catalogue = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalogue)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def _date_formatter(language: Language) -> Callable[[dt.datetime, str], str]:
    def format_date(moment: dt.datetime, timezone: str) -> str:
        """A moment as the business's clock shows it, in the staff member's language."""
        return format_datetime(moment, "medium", tzinfo=ZoneInfo(timezone), locale=language)

    return format_date


def _word_translator(language: Language) -> Callable[..., str]:
    def word(value: object, **values: object) -> str:
        """A word the code or the data chose (a status, a kind, a label kept in a table), in
        the staff member's language: plain text, escaped where it is written. (``_()`` marks
        what it returns as safe HTML, which is right only for the catalogue's own messages, so
        templates call ``_()`` with a literal only: tests/console/test_console_http.py.)"""
        translated = translations(language).gettext(str(value))
        return translated % values if values else translated

    return word


def phone(number: str | None) -> str:
    """A stored number (E.164) as staff write it: the national form for a Japanese number
    (090-1234-5678), the international one for any other (+1 202-555-0142)."""
    if not number:
        return ""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    style = (phonenumbers.PhoneNumberFormat.NATIONAL if parsed.country_code == 81
             else phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return phonenumbers.format_number(parsed, style)


@cache
def environment(language: Language) -> Environment:
    """Templates rendered in ``language``: one environment each, so no request swaps another's
    catalogue out from under it."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        auto_reload=False,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.filters["moment"] = _date_formatter(language)
    env.filters["phone"] = phone
    env.globals["language"] = language
    env.globals["word"] = _word_translator(language)
    return env
