"""What people type becomes one canonical form, so one person is one record."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

from loyalty.core.errors import InvalidInput
from loyalty.core.normalize import (
    looks_like_phone,
    normalize_email,
    normalize_kana,
    normalize_name,
    normalize_phone,
    normalize_profile_text,
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


@pytest.mark.parametrize(
    "typed",
    ["090-1234-5678", "０９０−１２３４−５６７８", "090‐1234‐5678", "090–1234–5678",
     "090ー1234ー5678", "090.1234.5678", "+81 (90) 1234/5678"],
)
def test_a_search_typed_with_any_dash_is_read_as_the_phone_it_normalises_to(typed: str) -> None:
    """Staff search tries a text as a phone only if it looks like one: every way of writing
    the number that normalize_phone reads must look like one (U+2212, the dashes and the
    katakana prolonged sound mark did not)."""
    assert looks_like_phone(typed), typed
    assert normalize_phone(typed) == "+819012345678"


@pytest.mark.parametrize("typed", ["山田 090", "12345678", "090-1234-5678x", "tanaka"])
def test_what_is_not_a_phone_is_not_searched_as_one(typed: str) -> None:
    assert not looks_like_phone(typed)


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


# -- invisible and text-direction characters, lengths once normalised ------------------------

# What makes one "taro@demo.example" look like another, or a name read backwards.
_HIDDEN = ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u00ad", "\u2060", "\u2064",
           "\ufeff", "\u202a", "\u202e", "\u2066", "\u2069", "\u061c", "\u180e", "\u3164",
           "\U000e0041"]


@pytest.mark.parametrize("hidden", _HIDDEN)
@pytest.mark.parametrize(
    ("normalise", "typed", "field"),
    [
        (normalize_email, "taro{}@demo.example", "email"),
        (normalize_phone, "090-1234{}-5678", "phone"),
        (normalize_name, "Taro{} Yamada", "name"),
        (normalize_kana, "やま{}だ", "name_kana"),
        (lambda text: normalize_profile_text(text, field="postal_code", max_length=16),
         "100{}-0001", "postal_code"),
    ],
)
def test_invisible_and_bidi_characters_are_refused_naming_the_field(
    normalise: Callable[[str], str], typed: str, field: str, hidden: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalise(typed.format(hidden))
    assert refused.value.field == field
    assert refused.value.code == "invisible_character"
    assert f"U+{ord(hidden):04X}" in refused.value.detail


def test_a_variation_selector_after_a_kanji_is_part_of_the_name() -> None:
    # 葛 with the selector of its Ideographic Variation Sequence: how a family name is spelt.
    assert normalize_name("葛\U000e0100西 太郎") == "葛\U000e0100西 太郎"


@pytest.mark.parametrize("typed", ["\ufe0f", "Taro \ufe0f", "葛\U000e0100\U000e0100西"])
def test_a_variation_selector_after_nothing_visible_is_refused(typed: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_name(typed)
    assert refused.value.code == "invisible_character"


@pytest.mark.parametrize("typed",
                         ["\u200b" * 5, "\u200b \u200d", "\u3164", "\u2800 ", " . ", "---"])
def test_a_name_without_a_visible_letter_is_refused(typed: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_name(typed)
    assert refused.value.field == "name"


def test_name_length_counts_the_normalised_text() -> None:
    # U+FDFA is one character typed and 18 stored.
    assert len(normalize_text("\ufdfa")) == 18
    assert normalize_name("\ufdfa" * 5) == normalize_text("\ufdfa" * 5)
    with pytest.raises(InvalidInput) as refused:
        normalize_name("\ufdfa" * 100)
    assert (refused.value.field, refused.value.code) == ("name", "too_long")
    assert normalize_name("あ" * 100) == "あ" * 100


def test_kana_length_counts_the_normalised_text() -> None:
    assert normalize_kana("\u3300") == "アパート"  # ㌀, one character typed
    with pytest.raises(InvalidInput) as refused:
        normalize_kana("\u3300" * 30)
    assert (refused.value.field, refused.value.code) == ("name_kana", "too_long")


@pytest.mark.parametrize("typed", ["・", "・ ・"])
def test_kana_without_a_kana_is_refused(typed: str) -> None:
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


@given(_TEXT)
def test_a_name_accepted_is_stored_within_its_limit_and_shows_a_letter(typed: str) -> None:
    name = accepted(normalize_name, typed)
    assert 0 < len(name) <= 100
    assert any(ch.isalpha() for ch in name)
    assert normalize_name(name) == name
