"""The dashboard's charts, drawn on the server: values in, the SVG path's ``d`` or a heatmap
cell's shade out. Pure, so a page needs no script to draw it (the console's policy allows none
inline), and no inline style either: a shade is a class of console.css (``heat-N``), whose
colours are HEAT_SHADES below (tests/console/test_chart.py holds the stylesheet to them and
every pair to WCAG AA contrast)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def trend_path(values: Sequence[float], *, width: float, height: float) -> str:
    """A line through ``values``, left to right across ``width``, the largest at the top of
    ``height`` and zero at the bottom (all zeros: a line along the bottom). One value is a
    level line, so the chart never draws a lone dot; no values, an empty path."""
    if not values:
        return ""
    points = list(values) if len(values) > 1 else [values[0], values[0]]
    top = max(max(points), 0) or 1
    step = width / (len(points) - 1)
    return " ".join(
        f"{'M' if i == 0 else 'L'}{i * step:.1f},{height - height * max(v, 0) / top:.1f}"
        for i, v in enumerate(points))


# (background, text) of each heatmap level, lightest (no one retained) to darkest (all), as
# console.css's ``.heatmap .heat-N`` rules write them; dark text on light shades, white on dark.
HEAT_SHADES: tuple[tuple[str, str], ...] = (
    ("#f4f6f9", "#1f2933"),
    ("#dceaf7", "#1f2933"),
    ("#b4d1ee", "#1f2933"),
    ("#76a8dc", "#0b1520"),
    ("#2f6fb3", "#ffffff"),
    ("#163e6e", "#ffffff"),
)
HEAT_LEVELS = len(HEAT_SHADES)


def heat_level(share: float | None) -> int | None:
    """The shade of a retention ``share`` (0 to 1): 0 for none retained, then equal steps up
    to the darkest for all; None when there is no share (a cohort of no one)."""
    if share is None:
        return None
    if share <= 0:
        return 0
    return min(HEAT_LEVELS - 1, max(1, math.ceil(share * (HEAT_LEVELS - 1))))


def _luminance(colour: str) -> float:
    """WCAG 2 relative luminance of ``#rrggbb``."""
    def channel(hex_pair: str) -> float:
        c = int(hex_pair, 16) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(colour[i:i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two ``#rrggbb`` colours, 1 to 21 (AA body text: 4.5)."""
    light, dark = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)
