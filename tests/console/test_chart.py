"""The trend chart's path, without a browser."""

from __future__ import annotations

from console.chart import trend_path


def test_a_line_from_left_to_right_with_the_largest_value_at_the_top() -> None:
    assert trend_path([0, 50, 100], width=200, height=100) == "M0.0,100.0 L100.0,50.0 L200.0,0.0"


def test_all_zeros_run_along_the_bottom() -> None:
    assert trend_path([0, 0, 0], width=100, height=50) == "M0.0,50.0 L50.0,50.0 L100.0,50.0"


def test_one_value_is_a_level_line_and_none_an_empty_path() -> None:
    assert trend_path([7], width=100, height=50) == "M0.0,0.0 L100.0,0.0"
    assert trend_path([], width=100, height=50) == ""


def test_negative_days_are_drawn_at_zero() -> None:
    # A day with more returns than sales: the chart shows sales, never below its axis.
    assert trend_path([-5, 10], width=10, height=10) == "M0.0,10.0 L10.0,0.0"

