"""What people type becomes one canonical form, so one person is one record."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

from loyalty.errors import InvalidInput
from loyalty.normalize import (
    normalize_email,
    normalize_kana,
    normalize_phone,
    normalize_text,
    search_key,
)


def full_width(text: str) -> str:
    """``text`` as typed with a Japanese IME in full-width mode (ASCII → U+FF01..U+FF5E)."""
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


# -- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Ｔａｒｏ　Ｙａｍａｄａ", "Taro Yamada"),
        ("ﾔﾏﾀﾞ ﾀﾛｳ", "ヤマダ タロウ"),
        ("  Taro \t\n　Yamada  ", "Taro Yamada"),
        ("山田\u3000\u3000太郎", "山田 太郎"),
        (" \t\u3000\n", ""),
    ],
)
def test_text_is_nfkc_trimmed_and_inner_space_collapsed(typed: str, stored: str) -> None:
    assert normalize_text(typed) == stored


# -- e-mail -----------------------------------------------------------------------------------


def test_full_width_mixed_case_email_becomes_lower_case_ascii() -> None:
    assert normalize_email("Ｔａｒｏ＠Example.COM") == "taro@example.com"


def test_email_is_trimmed() -> None:
    assert normalize_email(" \u3000taro@example.com\n") == "taro@example.com"


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "taro",
        "taro@",
        "@example.com",
        "taro@example",
        "taro@example.c",
        "ta ro@example.com",
        "taro@exa mple.com",
        "taro@@example.com",
        "taro@sub@example.com",
        "x" * 65 + "@example.com",
    ],
)
def test_what_is_not_an_email_address_is_refused(typed: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_email(typed)
    assert refused.value.field == "email"


# -- phone ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    ["090-1234-5678", "09012345678", "+81 90 1234 5678", "０９０－１２３４－５６７８",
     "(090) 1234-5678"],
)
def test_every_way_of_writing_a_mobile_number_gives_one_e164(typed: str) -> None:
    assert normalize_phone(typed) == "+819012345678"


def test_landline_becomes_e164() -> None:
    assert normalize_phone("03-1234-5678") == "+81312345678"


def test_national_number_is_read_in_the_region_given() -> None:
    assert normalize_phone("(202) 456-1111", region="US") == "+12024561111"


@pytest.mark.parametrize(
    "typed",
    ["", "phone", "12345", "090-1234-567", "090-1234-56789", "+81 0000", "taro@example.com"],
)
def test_invalid_phone_number_is_refused_naming_the_phone_field(typed: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_phone(typed)
    assert refused.value.field == "phone"


# -- kana -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hiragana", "half_width", "full_width_katakana"),
    [
        ("かたかな", "ｶﾀｶﾅ", "カタカナ"),
        ("がっこう", "ｶﾞｯｺｳ", "ガッコウ"),
        ("ぱん", "ﾊﾟﾝ", "パン"),
        ("ゔぃーなす", "ｳﾞｨｰﾅｽ", "ヴィーナス"),
    ],
)
def test_hiragana_half_and_full_width_katakana_are_one_reading(
    hiragana: str, half_width: str, full_width_katakana: str
) -> None:
    readings = {normalize_kana(typed) for typed in (hiragana, half_width, full_width_katakana)}
    assert readings == {full_width_katakana}


def test_kana_keeps_one_space_between_family_and_given_name() -> None:
    assert normalize_kana("  やまだ　　たろう ") == "ヤマダ タロウ"


def test_empty_kana_stays_empty() -> None:
    assert normalize_kana(" \u3000") == ""


@pytest.mark.parametrize("typed", ["Yamada", "ｙａｍａｄａ", "山田", "やまだ太郎", "ヤマダ1", "ｱﾞ"])
def test_latin_kanji_or_digits_in_kana_are_refused(typed: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_kana(typed)
    assert refused.value.field == "name_kana"


# -- search key -------------------------------------------------------------------------------


def test_search_key_drops_spaces() -> None:
    assert search_key(" 山田　太郎 ") == "山田太郎"


@pytest.mark.parametrize("typed", ["やまだ たろう", "ﾔﾏﾀﾞ ﾀﾛｳ", "ヤマダ　タロウ", "ヤマダタロウ"])
def test_search_key_unifies_kana(typed: str) -> None:
    assert search_key(typed) == "ヤマダタロウ"


def test_search_key_ignores_case_and_width() -> None:
    assert search_key("Ｔａｒｏ YAMADA") == search_key("taro yamada") == "taroyamada"


def test_spacing_dakuten_searches_like_the_voiced_kana() -> None:
    # "か゛" is NFKC "か ゙": once the space is dropped the mark must join its kana.
    assert search_key("か゛") == search_key("が") == "ガ"


# -- properties -------------------------------------------------------------------------------

# Characters where normalisation is most likely to go wrong: widths, kana and their voicing
# marks (combining and spacing), combining accents, odd white space, case-folding specials.
_TRICKY = st.sampled_from(
    [*"aAｚＺ0０@＠.．-ー・かカｶﾞﾟﾞ゛゜\u3099\u309a´¨\u0301ǰİßẞΣς가각ﬁ①",
     " ", "\u3000", "\t", "\n", "\u00a0", "\u2003", "\x1c"]
)
_TEXT = st.text() | st.text(alphabet=_TRICKY)

_KANA_PIECES = st.sampled_from(
    [chr(code) for code in range(ord("ぁ"), ord("ゖ") + 1)]
    + [chr(code) for code in range(ord("ァ"), ord("ヺ") + 1)]
    + [chr(code) for code in range(ord("ｦ"), ord("ﾝ") + 1)]
    + ["ｶﾞ", "ﾊﾟ", "ｳﾞ", "ゝ", "ゞ", "ヽ", "ヾ", "ー", "・", " ", "\u3000"]
)
_KANA = st.lists(_KANA_PIECES, max_size=20).map("".join) | _TEXT


def _email_as_typed(address: str, upper: bool, wide: bool, padding: str) -> str:
    typed = address.upper() if upper else address
    typed = full_width(typed) if wide else typed
    return padding + typed + padding


_EMAILS = st.builds(
    _email_as_typed, st.emails(), st.booleans(), st.booleans(),
    st.sampled_from(["", " ", "\u3000\t"]),
) | st.builds("{}@{}.{}".format, st.text(min_size=1), st.text(min_size=1), st.text(min_size=2))


def _mobile_as_typed(prefix: str, number: str, style: int, wide: bool) -> str:
    head, tail = number[:4], number[4:]
    typed = [
        f"0{prefix}-{head}-{tail}",
        f"0{prefix}{number}",
        f"+81 {prefix} {head} {tail}",
        f"(0{prefix}) {head}-{tail}",
        f" +81-{prefix}-{number} ",
    ][style]
    return full_width(typed) if wide else typed


_MOBILE_NUMBERS = st.builds(
    _mobile_as_typed,
    st.sampled_from(["70", "80", "90"]),
    st.from_regex(r"\A[1-9][0-9]{7}\Z"),
    st.integers(min_value=0, max_value=4),
    st.booleans(),
)


def accepted(normalise: Callable[[str], str], typed: str) -> str:
    """``normalise(typed)``; input it refuses is outside these properties, so not counted."""
    try:
        return normalise(typed)
    except InvalidInput:
        reject()


@given(_TEXT)
def test_normalize_text_is_idempotent(typed: str) -> None:
    once = normalize_text(typed)
    assert normalize_text(once) == once


@given(_TEXT)
def test_normalize_text_never_leaves_outer_white_space_or_double_spaces(typed: str) -> None:
    text = normalize_text(typed)
    assert text == text.strip()
    assert "  " not in text


@given(_EMAILS)
def test_normalize_email_is_idempotent(typed: str) -> None:
    once = accepted(normalize_email, typed)
    assert normalize_email(once) == once


@given(_EMAILS)
def test_normalize_email_never_returns_upper_case_or_outer_white_space(typed: str) -> None:
    email = accepted(normalize_email, typed)
    assert not any(ch.isupper() for ch in email)
    assert email == email.lower()
    assert email == email.strip()


@given(_MOBILE_NUMBERS)
def test_normalize_phone_is_idempotent(typed: str) -> None:
    once = normalize_phone(typed)
    assert once.startswith("+81")
    assert normalize_phone(once) == once


@given(_KANA)
def test_normalize_kana_is_idempotent(typed: str) -> None:
    once = accepted(normalize_kana, typed)
    assert normalize_kana(once) == once


@given(_TEXT)
def test_search_key_is_idempotent(typed: str) -> None:
    once = search_key(typed)
    assert search_key(once) == once
