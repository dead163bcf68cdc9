"""The earning rules as staff read them: a rule set as pretty JSON (for the editor and for the
diff between two versions), each multiplier's conditions in words, and the decoder's complaint
turned into the field it is about. Pure: no I/O, no rule of the programme's own."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from schemas.base import encode_edge
from schemas.rules import (
    BirthdayMonth,
    CategoryIs,
    Condition,
    EarningRules,
    SkuIs,
    StoreIs,
    TimeWindow,
    WeekdayIs,
)

# Lines of context around each change in a diff, as `diff -u` shows.
CONTEXT_LINES = 3
_PATH = re.compile(r" - at `\$([^`]*)`$")
_BYTE = re.compile(r"\(byte (\d+)\)")


def pretty_json(rules: EarningRules, *, sort_keys: bool = False) -> str:
    """``rules`` as indented JSON, fields in the order the schema declares them (or sorted, for
    a diff that does not depend on the order a version was stored in)."""
    return json.dumps(msgspec.to_builtins(rules, enc_hook=encode_edge), indent=2,
                      ensure_ascii=False, sort_keys=sort_keys)


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a diff: ``sign`` is "+" (only in the newer), "-" (only in the older), " "
    (in both) or "…" (unchanged lines left out); numbers are 1-based, None where absent."""

    sign: Literal["+", "-", " ", "…"]
    text: str
    old: int | None = None
    new: int | None = None


def rules_diff(older: EarningRules, newer: EarningRules,
               context: int = CONTEXT_LINES) -> list[DiffLine]:
    """The lines that differ between two rule sets' canonical JSON (keys sorted), with
    ``context`` unchanged lines around each change; empty when they are the same."""
    before = pretty_json(older, sort_keys=True).splitlines()
    after = pretty_json(newer, sort_keys=True).splitlines()
    lines: list[DiffLine] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    shown_to = 0
    for group in matcher.get_grouped_opcodes(context):
        if group[0][1] > shown_to:
            lines.append(DiffLine("…", ""))
        shown_to = group[-1][2]
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines.extend(DiffLine(" ", before[i], i + 1, j + 1)
                             for i, j in zip(range(i1, i2), range(j1, j2), strict=True))
                continue
            lines.extend(DiffLine("-", before[i], old=i + 1) for i in range(i1, i2))
            lines.extend(DiffLine("+", after[j], new=j + 1) for j in range(j1, j2))
    if lines and shown_to < len(before):
        lines.append(DiffLine("…", ""))
    return lines


@dataclass(frozen=True, slots=True)
class Described:
    """A condition in words: ``label`` is a catalogue message, ``values`` what it names;
    ``days`` the weekdays it names, for the template to translate."""

    label: str
    values: str
    days: tuple[str, ...] = ()


def _(message: str) -> str:
    """Marks a label for the catalogue; the template translates it."""
    return message


def describe_condition(condition: Condition) -> Described:
    match condition:
        case CategoryIs(categories=categories):
            return Described(_("Category is one of"), ", ".join(categories))
        case SkuIs(skus=skus):
            shown = ", ".join(skus[:10]) + (f" … (+{len(skus) - 10})" if len(skus) > 10 else "")
            return Described(_("SKU is one of"), shown)
        case StoreIs(stores=stores):
            return Described(_("Store is one of"), ", ".join(stores))
        case WeekdayIs(days=days):
            return Described(_("Day of the week is"), ", ".join(days), tuple(days))
        case TimeWindow(start=start, end=end):
            return Described(_("Time of day"),
                             f"{start.isoformat('minutes')}–{end.isoformat('minutes')}")
        case BirthdayMonth():
            return Described(_("In the member's birthday month"), "")
    raise AssertionError(f"unknown condition {condition!r}")


@dataclass(frozen=True, slots=True)
class Problem:
    """What the decoder or the rules refused: the field's path (``base.per_amount``, empty for
    the whole document) and the message, as the API would answer it."""

    path: str
    message: str


def problem_of(error: msgspec.MsgspecError, text: str | None = None) -> Problem:
    """The field a msgspec error names (its ``$.…`` path), the message without it; for
    malformed JSON, the line and column of the byte it names in ``text``."""
    message = str(error)
    found = _PATH.search(message)
    if found:
        return Problem(found.group(1).lstrip("."), message[:found.start()])
    byte = _BYTE.search(message)
    if text is not None and byte:
        offset = int(byte.group(1))
        before = text.encode()[:offset].decode(errors="ignore")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        return Problem("", f"{message} (line {line}, column {column})")
    return Problem("", message)


def decoded(text: str, kind: type[Any], dec_hook: Any) -> Any:
    """``text`` as JSON of ``kind``, strictly as the API decodes a body (each key once)."""
    value = msgspec.json.decode(text.encode(), type=kind, dec_hook=dec_hook)
    pairs_seen: list[str] = []

    def refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                pairs_seen.append(key)
        return dict(pairs)

    json.loads(text, object_pairs_hook=refuse_duplicates)
    if pairs_seen:
        raise msgspec.ValidationError(
            f"the key {pairs_seen[0][:64]!r} appears twice in one object: give each key once")
    return value
