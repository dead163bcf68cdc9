"""Named parameters, numbered once: what asyncpg is sent, and the values in that order."""

from __future__ import annotations

import pytest

from loyalty.core.sql import named


def test_each_name_is_numbered_in_order_of_first_use() -> None:
    statement = named("select :b, :a where x = :b")
    assert statement.text == "select $1, $2 where x = $1"
    assert statement.names == ("b", "a")


def test_casts_are_left_as_they_are() -> None:
    statement = named("select :ids::uuid[], '{}'::jsonb, x::text from t where y = :y")
    assert statement.text == "select $1::uuid[], '{}'::jsonb, x::text from t where y = $2"
    assert statement.names == ("ids", "y")


def test_values_are_given_by_name_in_the_statements_order() -> None:
    statement = named("insert into t (a, b) values (:a, :b)")
    assert statement.args({"b": 2, "a": 1, "unused": 3}) == [1, 2]


def test_a_name_without_a_value_says_which() -> None:
    with pytest.raises(KeyError, match=":b"):
        named("select :a, :b").args({"a": 1})
