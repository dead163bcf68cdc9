"""The dashboard's trend chart, drawn on the server: values in, the SVG path's ``d`` out. Pure,
so a page needs no script to draw it (the console's policy allows none inline)."""

from __future__ import annotations

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
