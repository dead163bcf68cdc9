"""The cohort heatmap's shades, without a browser: levels by share, and every shade's text
readable on it (WCAG AA, 4.5:1) as console.css writes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from console.chart import HEAT_LEVELS, HEAT_SHADES, contrast_ratio, heat_level

CSS = Path(__file__).parents[2] / "console" / "static" / "console.css"
RULE = re.compile(r"\.heatmap \.heat-(\d) \{ background: (#[0-9a-f]{6}); color: (#[0-9a-f]{6}); \}")


def test_contrast_ratio_matches_wcag_reference_values() -> None:
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21)
    assert contrast_ratio("#ffffff", "#ffffff") == pytest.approx(1)
    # WCAG's own example: #767676 on white is just above 4.5.
    assert contrast_ratio("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)


@pytest.mark.parametrize(("share", "level"), [
    (None, None), (0.0, 0), (0.001, 1), (0.2, 1), (0.21, 2), (0.5, 3), (0.79, 4), (0.8, 4),
    (0.81, 5), (1.0, 5), (1.2, 5),
])
def test_a_share_gets_a_level_darker_the_more_is_retained(
    share: float | None, level: int | None,
) -> None:
    assert heat_level(share) == level


def test_every_shade_in_the_stylesheet_is_the_palette_and_reads_at_aa() -> None:
    rules = {int(n): (bg, fg) for n, bg, fg in RULE.findall(CSS.read_text())}
    assert rules == dict(enumerate(HEAT_SHADES))
    assert len(rules) == HEAT_LEVELS
    for background, text in HEAT_SHADES:
        assert contrast_ratio(text, background) >= 4.5, (text, background)
