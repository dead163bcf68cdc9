"""Campaigns on the wire: who (a segment or a list), what (a coupon, bonus points, a points
multiplier for a while, an event invitation), when, how much, and the honest answer to "did
it work": treated against a random control group."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from uuid import UUID

from msgspec import Meta

from schemas.base import Input, Instant, Name, OneOf, Output, text
from schemas.grants import GrantPoints
from schemas.points import Reason

MAX_CAMPAIGN_MEMBERS = 100_000


class IssueCoupon(Input, tag="issue_coupon"):
    """One coupon of ``template_id`` into each treated member's wallet."""

    template_id: UUID


class BonusPoints(Input, tag="bonus_points"):
    """``points`` credited to each treated member once, with ``reason`` on the entry."""

    points: GrantPoints
    reason: Reason = "Campaign bonus"


class PointsMultiplier(Input, tag="points_multiplier"):
    """Treated members' purchases between the campaign's start and end earn ``percent`` of
    their base points (200 = double points)."""

    percent: Annotated[int, Meta(ge=101, le=10_000)]


class EventInvitation(Input, tag="event_invitation"):
    """Treated members are invited to ``event_id`` and may reserve a seat in the app."""

    event_id: UUID


Action = IssueCoupon | BonusPoints | PointsMultiplier | EventInvitation
Channel = Literal["marketing_email", "push"]
CampaignStatus = Literal["draft", "scheduled", "launching", "launched"]


class CampaignCreate(OneOf):
    """A campaign, not yet launched. Exactly one of ``segment_id`` or ``members``.

    ``starts_at`` unset: it starts when launched; set in the future: launching schedules it
    and the segment is evaluated when it starts. ``holdout_percent`` of the audience, drawn at
    random at launch, is the control group and gets nothing. ``max_members`` caps the treated
    group (the budget): a random sample of the audience is taken first, so control and
    treated stay comparable. ``channel`` names the consent a member must have given to be
    messaged about it; members without it are treated all the same, just not messaged."""

    name: Name
    action: Action
    description: Annotated[str, text(500, multiline=True)] = ""
    segment_id: UUID | None = None
    members: Annotated[list[UUID], Meta(min_length=1, max_length=MAX_CAMPAIGN_MEMBERS)] | None \
        = None
    starts_at: Instant | None = None
    ends_at: Instant | None = None
    holdout_percent: Annotated[int, Meta(ge=0, le=90)] = 0
    max_members: Annotated[int, Meta(ge=1, le=100_000_000)] | None = None
    channel: Channel | None = None
    one_of = ("segment_id", "members")

    def __post_init__(self) -> None:
        super().__post_init__()
        for moment in (self.starts_at, self.ends_at):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("campaign times need a time zone offset")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if isinstance(self.action, PointsMultiplier) and self.ends_at is None:
            raise ValueError("a points multiplier campaign needs ends_at")


class Campaign(Output):
    campaign_id: UUID
    name: str
    description: str
    action: Action
    segment_id: UUID | None
    members_listed: int | None
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    holdout_percent: int
    max_members: int | None
    channel: Channel | None
    status: CampaignStatus
    launched_at: dt.datetime | None
    eligible: int | None
    treated: int | None
    control: int | None
    messaged: int | None
    actioned: int | None
    # The reactivation job's waves name the template campaign they were copied from.
    template_id: UUID | None
    created_at: dt.datetime


class Difference(Output):
    """Treated minus control, with its 95% confidence interval (normal approximation; null
    while either group is too small to say)."""

    estimate: float
    low: float | None
    high: float | None


class Arm(Output):
    members: int
    messaged: int
    coupons_redeemed: int
    points_granted: int
    purchasers: int
    purchase_rate: float
    revenue: int
    revenue_per_member: float
    dormant_at_launch: int
    reactivated: int


class CampaignResults(Output):
    """Reach and outcome of each group over the campaign's window (its start to its end, or to
    now while it runs): members who purchased, revenue (less returns) per member, dormant
    members who came back, and the difference the campaign made."""

    campaign_id: UUID
    window_start: dt.datetime
    window_end: dt.datetime
    treated: Arm
    control: Arm
    purchase_rate_uplift: Difference | None
    revenue_per_member_uplift: Difference | None
