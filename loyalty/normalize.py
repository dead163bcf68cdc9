"""Normalisation of what people type, so one person is one record.

Everything goes through NFKC (全角 → 半角 for ASCII, 半角カナ → 全角カナ) and is trimmed;
e-mail is lower-cased, phone numbers become E.164, kana becomes full-width katakana.
Pure functions: no I/O, tested without a database.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from loyalty.errors import InvalidInput

_SPACES = re.compile(r"\s+")
# Local part and domain kept deliberately permissive: delivery is the real check.
_EMAIL = re.compile(r"^[^\s@]{1,64}@[^\s@]+\.[^\s@]{2,}$")
_HIRAGANA_TO_KATAKANA = {code: code + 0x60 for code in range(ord("ぁ"), ord("ゖ") + 1)}
_HIRAGANA_TO_KATAKANA.update({ord("ゝ"): ord("ヽ"), ord("ゞ"): ord("ヾ")})
_KANA = re.compile(r"^[\u30a0-\u30ff\u31f0-\u31ff ・ー]+$")


def normalize_text(value: str) -> str:
    """NFKC, trimmed, inner runs of white space collapsed to one space."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", value)).strip()


def normalize_email(value: str) -> str:
    """NFKC, trimmed, lower-cased; ``Ｔａｒｏ＠Example.COM`` becomes ``taro@example.com``."""
    email = unicodedata.normalize("NFKC", value).strip().lower()
    if not _EMAIL.match(email):
        raise InvalidInput("not an e-mail address", field="email")
    return email


def normalize_phone(value: str, region: str = "JP") -> str:
    """E.164: ``090-1234-5678`` and ``+81 90 1234 5678`` both become ``+819012345678``."""
    text = unicodedata.normalize("NFKC", value).strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidInput("not a phone number", field="phone") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput("not a valid phone number", field="phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_kana(value: str) -> str:
    """Full-width katakana: ｶﾅ, かな and カナ are the same reading."""
    kana = normalize_text(value).translate(_HIRAGANA_TO_KATAKANA).replace("　", " ")
    if kana and not _KANA.match(kana):
        raise InvalidInput("kana must be written in hiragana or katakana", field="name_kana")
    return kana


def search_key(value: str) -> str:
    """The form a name is searched by: normalised, kana unified, no spaces, case-folded."""
    key = normalize_text(value).translate(_HIRAGANA_TO_KATAKANA).replace(" ", "").casefold()
    # Again after dropping spaces and folding: "か゛" (NFKC "か ゙") must key like "が".
    return unicodedata.normalize("NFKC", key)


def looks_like_phone(value: str) -> bool:
    text = unicodedata.normalize("NFKC", value).strip()
    digits = sum(ch.isdigit() for ch in text)
    return digits >= 9 and all(ch.isdigit() or ch in "+-() " for ch in text)
