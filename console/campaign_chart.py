"""A campaign's results chart, drawn on the server: for one measure, a bar for the treated
group and one for the control group, and under them the uplift (treated minus control) as a
mark on an axis centred on zero with its 95% interval as a whisker. Pure: figures in, the
SVG's coordinates out, so the page needs no script (the console's policy allows none inline)."""

from __future__ import annotations

from dataclasses import dataclass

BAR_HEIGHT = 22
# Rows of the drawing: the treated bar, the control bar, then the uplift's axis.
TREATED_Y, CONTROL_Y, UPLIFT_Y = 4, 34, 84


@dataclass(frozen=True, slots=True)
class UpliftChart:
    """Coordinates in a ``width`` × ``height`` box: bar widths from the left edge; ``zero`` is
    the uplift axis's zero, ``estimate`` the uplift's mark, ``whisker`` the SVG path of its
    interval (empty when the interval is unknown)."""

    width: float
    height: float
    treated: float
    control: float
    zero: float
    estimate: float
    whisker: str


def uplift_chart(treated: float, control: float, estimate: float, low: float | None,
                 high: float | None, *, width: float, height: float = 110) -> UpliftChart:
    """The drawing of one measure. Bars share one scale (the larger group's value fills the
    width; negative values draw nothing, both zero draw nothing); the uplift axis spans the
    largest of the estimate and the interval's ends either side of zero, so zero is always in
    the middle and an interval crossing it is plain to see."""
    top = max(treated, control, 0.0) or 1.0
    bars = (width * max(treated, 0.0) / top, width * max(control, 0.0) / top)
    half = width / 2
    span = max(abs(estimate), abs(low or 0.0), abs(high or 0.0)) or 1.0

    def x(value: float) -> float:
        return half + (half * 0.95) * value / span

    whisker = ""
    if low is not None and high is not None:
        y = UPLIFT_Y
        whisker = (f"M{x(low):.1f},{y:.1f} L{x(high):.1f},{y:.1f} "
                   f"M{x(low):.1f},{y - 6:.1f} L{x(low):.1f},{y + 6:.1f} "
                   f"M{x(high):.1f},{y - 6:.1f} L{x(high):.1f},{y + 6:.1f}")
    return UpliftChart(width=width, height=height, treated=round(bars[0], 1),
                       control=round(bars[1], 1), zero=round(half, 1),
                       estimate=round(x(estimate), 1), whisker=whisker)
