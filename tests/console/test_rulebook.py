"""The pure parts of the rules pages: the diff between two versions, conditions in words, and
a decoder's complaint turned into the field it names."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from console.rulebook import (
    DiffLine,
    decoded,
    describe_condition,
    pretty_json,
    problem_of,
    rules_diff,
)
from schemas.base import decode_edge
from schemas.rules import BaseRate, EarningRules, Multiplier, TimeWindow, WeekdayIs


def test_the_same_rules_have_no_diff() -> None:
    assert rules_diff(EarningRules(), EarningRules()) == []


def test_a_changed_number_is_one_line_removed_and_one_added_with_context() -> None:
    lines = rules_diff(EarningRules(), EarningRules(base=BaseRate(points=3)))

    changed = [line for line in lines if line.sign in "+-"]
    assert changed == [DiffLine("-", '    "points": 1', old=changed[0].old),
                       DiffLine("+", '    "points": 3', new=changed[0].old)]
    # Context around it, both sides numbered; the rest of the document left out as "…".
    context = [line for line in lines if line.sign == " "]
    assert 0 < len(context) <= 6
    assert all(line.old is not None and line.new is not None for line in context)
    assert lines[0].sign == "…"
    assert lines[-1].sign == "…"


def test_a_new_multiplier_is_only_added_lines_in_key_order() -> None:
    older = EarningRules()
    newer = EarningRules(multipliers=[Multiplier(name="週末", percent=200,
                                                 when=[WeekdayIs(days=["sat", "sun"])])])

    lines = rules_diff(older, newer)

    assert {line.sign for line in lines} >= {"+", "-"}  # "multipliers": [] becomes a list
    added = "\n".join(line.text for line in lines if line.sign == "+")
    assert '"name": "週末"' in added  # not escaped: staff read it as typed
    assert added.index('"name"') < added.index('"percent"') < added.index('"when"')


def test_the_editor_shows_the_fields_in_the_schemas_order() -> None:
    text = pretty_json(EarningRules())
    assert text.index('"base"') < text.index('"rounding"') < text.index('"tiers"')
    assert msgspec.json.decode(text.encode(), type=EarningRules) == EarningRules()


def test_conditions_are_described_in_words() -> None:
    window = describe_condition(TimeWindow(start=dt.time(22), end=dt.time(2)))
    assert (window.label, window.values) == ("Time of day", "22:00–02:00")
    assert describe_condition(WeekdayIs(days=["sat", "sun"])).values == "sat, sun"


@pytest.mark.parametrize(("text", "path", "message"), [
    ('{"base": {"per_amount": 0}}', "base.per_amount", "Expected `int` >= 1"),
    ('{"multipliers": [{"name": "x"}]}', "multipliers[0]",
     "Object missing required field `percent`"),
    ('{"pending_days": "3"}', "pending_days", "Expected `int`, got `str`"),
])
def test_a_decoding_error_names_its_field(text: str, path: str, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as error:
        decoded(text, EarningRules, decode_edge)
    problem = problem_of(error.value, text)
    assert problem.path == path
    assert problem.message == message


def test_malformed_json_is_placed_by_line_and_column() -> None:
    text = '{\n  "base": {"points": 1,}\n}'
    with pytest.raises(msgspec.DecodeError) as error:
        decoded(text, EarningRules, decode_edge)
    problem = problem_of(error.value, text)
    assert problem.path == ""
    assert problem.message.endswith("(line 2, column 24)")  # the "}" after the comma


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="'rounding' appears twice"):
        decoded('{"rounding": "floor", "rounding": "ceil"}', EarningRules, decode_edge)
