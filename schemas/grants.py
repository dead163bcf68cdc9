"""Bulk points grants on the wire: the request staff send, the grant as it stands."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from uuid import UUID

from msgspec import Meta

from schemas.base import OneOf, Output
from schemas.points import Reason

MAX_GRANT_MEMBERS = 100_000
GrantPoints = Annotated[int, Meta(ge=1, le=1_000_000)]
GrantStatus = Literal["running", "done"]
GrantSource = Literal["staff", "campaign"]


class GrantRequest(OneOf):
    """The same points for every member of a list or of a segment: exactly one of ``members``
    and ``segment_id``. Ids in the list that no member has are skipped and counted."""

    points: GrantPoints
    reason: Reason
    members: Annotated[list[UUID], Meta(min_length=1, max_length=MAX_GRANT_MEMBERS)] | None = None
    segment_id: UUID | None = None
    one_of = ("members", "segment_id")


class ListGrantTarget(Output, tag="members", tag_field="kind"):
    """Members named one by one; ``listed`` counts distinct ids."""

    listed: int


class SegmentGrantTarget(Output, tag="segment", tag_field="kind"):
    """The members of a segment, evaluated as of the grant's creation."""

    segment_id: UUID


class CampaignGrantTarget(Output, tag="campaign", tag_field="kind"):
    """A campaign's treated group."""

    campaign_id: UUID


GrantTarget = ListGrantTarget | SegmentGrantTarget | CampaignGrantTarget


class PointsGrant(Output):
    """A grant and how far it got. ``unknown_members``: ids in the list no member has;
    ``members_skipped``: listed members who got nothing because they are suspended, erased
    or merged (known once the grant is done)."""

    grant_id: UUID
    status: GrantStatus
    points: int
    reason: str
    source: GrantSource
    target: GrantTarget
    members_granted: int
    points_granted: int
    unknown_members: int
    members_skipped: int | None
    expires_at: dt.datetime | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    staff_id: UUID | None
