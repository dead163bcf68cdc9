"""The campaign results chart's coordinates: bars on one scale, the uplift's axis centred on
zero, the interval's whisker only when there is an interval."""

from __future__ import annotations

from console.campaign_chart import uplift_chart


def test_bars_share_one_scale_and_the_larger_fills_the_width() -> None:
    chart = uplift_chart(0.6, 0.2, 0.4, 0.1, 0.7, width=500)
    assert (chart.treated, chart.control) == (500, 166.7)
    assert chart.zero == 250


def test_the_uplift_and_its_interval_sit_either_side_of_zero() -> None:
    chart = uplift_chart(0.6, 0.2, 0.4, -0.1, 0.8, width=400)
    # The widest end (0.8) reaches 95% of the half width: 200 + 190.
    assert chart.estimate == round(200 + 190 * 0.4 / 0.8, 1)
    assert chart.whisker.startswith("M176.2,84.0 L390.0,84.0")
    assert chart.whisker.count("M") == 3


def test_a_negative_uplift_is_left_of_zero() -> None:
    chart = uplift_chart(100.0, 300.0, -200.0, -350.0, -50.0, width=400)
    assert chart.estimate < chart.zero
    assert (chart.treated, chart.control) == (133.3, 400)


def test_no_interval_no_whisker_and_nothing_sold_draws_nothing() -> None:
    chart = uplift_chart(0.0, 0.0, 0.0, None, None, width=300)
    assert (chart.treated, chart.control, chart.whisker) == (0, 0, "")
    assert chart.estimate == chart.zero == 150
