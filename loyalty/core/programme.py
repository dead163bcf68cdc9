"""The programme as the domain sees it: its currency, its business time zone and the ceilings on
what one purchase or one action may earn, taken from the settings once per process."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from loyalty.core.settings import Settings


@dataclass(frozen=True)
class Programme:
    """What the domain needs to know of the programme's settings."""

    currency: str
    timezone: ZoneInfo
    # The ceilings of points per purchase and per action; the defaults are the settings'.
    max_points_per_purchase: int = 1_000_000
    max_points_per_action: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Programme:
        return cls(currency=settings.currency, timezone=ZoneInfo(settings.timezone),
                   max_points_per_purchase=settings.max_points_per_purchase,
                   max_points_per_action=settings.max_points_per_action)
