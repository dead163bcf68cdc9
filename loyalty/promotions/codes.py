"""Coupon codes people can read aloud and type: pure functions, no I/O.

A generated code is 11 random characters and one check character from a 32-letter alphabet
without the look-alikes 0/O and 1/I, shown in groups of four (``7KQM-X4TD-RW9E``). The check
character makes every code a word of a code over GF(32): character ``i`` (from the left,
counting a prefix) is weighted by ``α^(n-i)`` and the weighted sum is zero. Changing any one
character changes the sum by a nonzero multiple of a nonzero weight, so a single typo is
always caught; swapping two neighbours changes it by ``α^k (1 + α)(a + b)``, never zero, so
every adjacent transposition is caught too (weights repeat only after 31 characters).
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Iterator

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_VALUE = {char: index for index, char in enumerate(ALPHABET)}
RANDOM_LENGTH = 11
GROUP = 4
MAX_LENGTH = 30  # weights repeat after 31 characters; longer codes lose the guarantee

# GF(32) as polynomials over GF(2) modulo x^5 + x^2 + 1 (primitive: α = x generates all 31
# nonzero elements). Multiplication through log tables.
_MODULUS = 0b100101
_EXP = [0] * 62
_LOG = [0] * 32
_element = 1
for _power in range(31):
    _EXP[_power] = _EXP[_power + 31] = _element
    _LOG[_element] = _power
    _element <<= 1
    if _element & 0b100000:
        _element ^= _MODULUS


def _times_alpha_power(value: int, power: int) -> int:
    """``value · α^power`` in GF(32)."""
    if value == 0:
        return 0
    return _EXP[_LOG[value] + power % 31]


def _syndrome(values: list[int]) -> int:
    """The weighted sum: the last character weighs α^0, the one before it α^1, and so on."""
    total = 0
    for position, value in enumerate(reversed(values)):
        total ^= _times_alpha_power(value, position)
    return total


def check_character(body: str) -> str:
    """The character that makes ``body`` + it a valid code."""
    values = [_VALUE[char] for char in body]
    # With the check at weight α^0, the sum is α·(sum of the body's weighted values) + check.
    return ALPHABET[_times_alpha_power(_syndrome(values), 1)]


def normalize_code(text: str) -> str:
    """As a person may type it: full-width or lower-case letters, spaces, hyphens."""
    folded = unicodedata.normalize("NFKC", text).upper()
    return "".join(char for char in folded if char not in " -\u30fc\u2010\u2212_")


def is_well_formed(code: str) -> bool:
    """True for a normalised code from the alphabet whose check character holds."""
    if not 2 <= len(code) <= MAX_LENGTH or any(char not in _VALUE for char in code):
        return False
    return _syndrome([_VALUE[char] for char in code]) == 0


def display(code: str, prefix: str = "") -> str:
    """``PREFIX-XXXX-XXXX-XXXX``: the random part in groups of four after the prefix."""
    body = code[len(prefix):]
    groups = [body[i:i + GROUP] for i in range(0, len(body), GROUP)]
    return "-".join(([prefix] if prefix else []) + groups)


def generate_codes(count: int, prefix: str = "") -> Iterator[str]:
    """``count`` fresh normalised codes (prefix, 11 random characters, check character).
    Uniqueness is the database's to enforce; 55 random bits make a clash rare."""
    prefix = normalize_code(prefix)
    if any(char not in _VALUE for char in prefix):
        raise ValueError(f"a prefix may only use {ALPHABET}")
    if len(prefix) + RANDOM_LENGTH + 1 > MAX_LENGTH:
        raise ValueError("prefix too long")
    prefix_values = [_VALUE[char] for char in prefix]
    # The prefix's share of the sum is the same for every code: shift it once.
    prefix_sum = _times_alpha_power(_syndrome(prefix_values), RANDOM_LENGTH + 1)
    for _ in range(count):
        bits = secrets.randbits(5 * RANDOM_LENGTH)
        values = [(bits >> (5 * i)) & 31 for i in range(RANDOM_LENGTH)]
        total = prefix_sum ^ _times_alpha_power(_syndrome(values), 1)
        yield prefix + "".join(ALPHABET[v] for v in values) + ALPHABET[total]
