"""Normalisation of what people type, so one person is one record.

Everything goes through NFKC (全角 → 半角 for ASCII, 半角カナ → 全角カナ) and is trimmed;
e-mail is lower-cased, phone numbers become E.164, kana becomes full-width katakana. Names,
contacts and other profile text holding invisible or text-direction characters are refused:
``taro@demo.example`` with a zero-width space in it is a second account that looks like the
first. Lengths are checked on the normalised text, the text that is stored.
Pure functions: no I/O, tested without a database.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path

import phonenumbers

from loyalty.core.errors import InvalidInput

_SPACES = re.compile(r"\s+")
# Local part and domain kept deliberately permissive: delivery is the real check.
_EMAIL = re.compile(r"^[^\s@]{1,64}@[^\s@]+\.[^\s@]{2,}$")
_HIRAGANA_TO_KATAKANA = {code: code + 0x60 for code in range(ord("ぁ"), ord("ゖ") + 1)}
_HIRAGANA_TO_KATAKANA.update({ord("ゝ"): ord("ヽ"), ord("ゞ"): ord("ヾ")})
_KANA = re.compile(r"^[\u30a0-\u30ff\u31f0-\u31ff ・ー]+$")
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters drawn as
# nothing. It holds every bidi control (U+061C, U+200E/F, U+202A-202E, U+2066-2069) too.
_DEFAULT_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")
# Variation selectors pick a glyph of the character before them: a kanji's variant in a
# family name (葛󠄀, the Ideographic Variation Database), an emoji's colour form. Kept in names
# when they follow a visible character; alone they would be a name drawn as nothing.
_VARIATION_SELECTOR = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_LABELS = {"name": "name", "name_kana": "kana reading", "email": "e-mail address",
           "phone": "phone number", "postal_code": "postal code"}


def normalize_text(value: str) -> str:
    """NFKC, trimmed, inner runs of white space collapsed to one space."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", value)).strip()


def refuse_invisible(value: str, *, field: str, variation_selectors: bool = False) -> None:
    """Refuse text holding a character drawn as nothing or one that turns the direction of the
    text around it (default-ignorable and format characters): such text looks like other text.
    ``variation_selectors`` lets a variation selector through right after a visible character.
    """
    previous_visible = False
    for ch in value:
        hidden = _DEFAULT_IGNORABLE.match(ch) is not None or unicodedata.category(ch) == "Cf"
        if hidden and variation_selectors and previous_visible \
                and _VARIATION_SELECTOR.match(ch) is not None:
            previous_visible = False  # one selector per character
            continue
        if hidden:
            label = _LABELS.get(field, field.replace("_", " "))
            raise InvalidInput(
                f"the {label} holds an invisible or text-direction character"
                f" (U+{ord(ch):04X}); type it again without it",
                field=field, code="invisible_character")
        previous_visible = not ch.isspace()


def normalize_profile_text(value: str, *, field: str, max_length: int) -> str:
    """Profile text as stored: no invisible characters, NFKC, trimmed, inner white space
    collapsed, and at most ``max_length`` characters once normalised (NFKC can make one
    character many: ``ﷺ`` is 18)."""
    refuse_invisible(value, field=field, variation_selectors=True)
    text = normalize_text(value)
    if len(text) > max_length:
        label = _LABELS.get(field, field.replace("_", " "))
        raise InvalidInput(
            f"the {label} is {len(text)} characters long once written out in standard form"
            f" (NFKC); at most {max_length} are kept, so shorten it",
            field=field, code="too_long")
    return text


def normalize_name(value: str, *, field: str = "name", max_length: int = 100) -> str:
    """A person's name as stored (see ``normalize_profile_text``); it must hold a letter, so a
    name of only spaces, dots or symbols is refused."""
    name = normalize_profile_text(value, field=field, max_length=max_length)
    if not any(unicodedata.category(ch).startswith("L") for ch in name):
        raise InvalidInput(f"the {_LABELS.get(field, field)} must hold at least one letter",
                           field=field, code="blank")
    return name


def normalize_email(value: str) -> str:
    """NFKC, trimmed, lower-cased; ``Ｔａｒｏ＠Example.COM`` becomes ``taro@example.com``."""
    refuse_invisible(value, field="email")
    email = unicodedata.normalize("NFKC", value).strip().lower()
    if not _EMAIL.match(email):
        raise InvalidInput("not an e-mail address", field="email")
    return email


def normalize_phone(value: str, region: str = "JP") -> str:
    """E.164: ``090-1234-5678`` and ``+81 90 1234 5678`` both become ``+819012345678``."""
    refuse_invisible(value, field="phone")
    text = unicodedata.normalize("NFKC", value).strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidInput("not a phone number", field="phone") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput("not a valid phone number", field="phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_kana(value: str, *, max_length: int = 100) -> str:
    """Full-width katakana: ｶﾅ, かな and カナ are the same reading. Empty stays empty."""
    refuse_invisible(value, field="name_kana")
    kana = normalize_profile_text(value, field="name_kana", max_length=max_length)
    kana = kana.translate(_HIRAGANA_TO_KATAKANA).replace("　", " ")
    if kana and not _KANA.match(kana):
        raise InvalidInput("kana must be written in hiragana or katakana", field="name_kana")
    if kana and not any(unicodedata.category(ch).startswith("L") for ch in kana):
        raise InvalidInput("the kana reading must hold at least one kana", field="name_kana",
                           code="blank")
    return kana


def search_key(value: str) -> str:
    """The form a name is searched by: normalised, kana unified, no spaces, case-folded."""
    key = normalize_text(value).translate(_HIRAGANA_TO_KATAKANA).replace(" ", "").casefold()
    # Again after dropping spaces and folding: "か゛" (NFKC "か ゙") must key like "が".
    return unicodedata.normalize("NFKC", key)


# What people put between a phone number's digits, as typed in Japan too: hyphens and dashes
# of every width (NFKC leaves U+2212 MINUS SIGN and the dashes alone), the katakana prolonged
# sound mark typed for a hyphen, dots, slashes, brackets, spaces. normalize_phone reads all of
# them, so a search must not refuse them first.
_PHONE_PUNCTUATION = frozenset("+-().,/ \u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc")


def looks_like_phone(value: str) -> bool:
    """Whether a search text is meant as a phone number: nine digits or more, and nothing else
    but the punctuation people type between them."""
    text = unicodedata.normalize("NFKC", value).strip()
    digits = sum(ch.isdigit() for ch in text)
    return digits >= 9 and all(ch.isdigit() or ch in _PHONE_PUNCTUATION for ch in text)


# Unicode's confusables (UTS #39, data/confusables.txt with its licence beside it): for each
# character that looks like another, the prototype it is drawn like.
_CONFUSABLES = Path(__file__).parents[1] / "data" / "confusables.txt"


@functools.cache
def _prototypes() -> dict[int, str]:
    table: dict[int, str] = {}
    with _CONFUSABLES.open(encoding="utf-8-sig") as lines:
        for line in lines:
            fields = line.split("#", 1)[0].split(";")
            if len(fields) < 2:
                continue
            table[int(fields[0], 16)] = "".join(chr(int(c, 16)) for c in fields[1].split())
    return table


def skeleton(value: str) -> str:
    """The UTS #39 skeleton: strings that look alike (``taro`` with a Cyrillic ``а``, ``rn`` and
    ``m``, katakana ``ロ`` and kanji ``口``) have the same one. NFD, default-ignorable
    characters dropped, each character replaced by its prototype, NFD again."""
    text = _DEFAULT_IGNORABLE.sub("", unicodedata.normalize("NFD", value))
    return unicodedata.normalize("NFD", text.translate(_prototypes()))
