"""Segments on the wire: a definition is a tree of typed conditions (tag ``type``) joined by
``all``, ``any`` and ``not``; the types bound every list and string, ``loyalty.promotions.segments``
bounds the tree and refuses contradictions."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, TypeAlias
from uuid import UUID

import msgspec
from msgspec import Meta

from schemas.base import (
    AttributeKey,
    Code,
    Input,
    Instant,
    Name,
    Output,
    SafeFloat,
    SafeInteger,
    text,
)
from schemas.members import ConsentPurpose, ContactChannel

SegmentableStatus = Literal["active", "dormant", "suspended"]
Days = Annotated[int, Meta(ge=1, le=3650)]
Money = Annotated[int, Meta(ge=0, le=10_000_000_000_000)]
Count = Annotated[int, Meta(ge=0, le=1_000_000_000)]
Score = Annotated[int, Meta(ge=1, le=5)]
Scores = Annotated[list[Score], Meta(min_length=1, max_length=5)]
Description = Annotated[str, text(1000, multiline=True)]
# Attribute values as members' attributes hold them (schemas.base.AttributeValue): numbers that
# survive being stored, finite (JSON has no infinity) and within ±2**53.
Number = SafeInteger | SafeFloat
Scalar = Annotated[str, text(500)] | Number | bool | None


# Definitions are stored and shown without the options left at their defaults.
class _Condition(Input, tag_field="type", omit_defaults=True):
    """A condition on a member; ``type`` says which."""


class StatusCondition(_Condition, tag="status"):
    """The member's status is one of ``statuses``."""

    statuses: Annotated[list[SegmentableStatus], Meta(min_length=1, max_length=3)]


class TierCondition(_Condition, tag="tier"):
    """The member's current tier is one of ``codes``, or (``no_tier``) they have none."""

    codes: Annotated[list[Code], Meta(max_length=100)] = msgspec.field(default_factory=list)
    no_tier: bool = False


class _WhenCondition(_Condition):
    """A moment of the member's, absolute (``after`` inclusive, ``before`` exclusive) or relative
    to the time of use (``within_days``: in the last N days; ``more_than_days_ago``: earlier than
    N days ago). The bounds given all apply."""

    after: Instant | None = None
    before: Instant | None = None
    within_days: Days | None = None
    more_than_days_ago: Days | None = None


class JoinedCondition(_WhenCondition, tag="joined"):
    """When the member joined."""


class LastActivityCondition(_WhenCondition, tag="last_activity"):
    """The member's last activity (purchase, engagement action)."""


class SpendCondition(_Condition, tag="spend"):
    """What the member spent in the last ``days`` days, less returns: at least and/or at most."""

    days: Days
    at_least: Money | None = None
    at_most: Money | None = None


class PurchaseCountCondition(_Condition, tag="purchase_count"):
    """How many purchases the member made in the last ``days`` days."""

    days: Days
    at_least: Count | None = None
    at_most: Count | None = None


class RfmCondition(_Condition, tag="rfm"):
    """The member's RFM scores (5 is best) are among those listed; an omitted score is any.
    Members never scored (no purchase yet) do not match."""

    recency: Scores | None = None
    frequency: Scores | None = None
    monetary: Scores | None = None


class AtRiskCondition(_Condition, tag="at_risk"):
    """The member is flagged at risk (``flagged``, the default) or not: an active member whose
    days since their last purchase exceed a multiple of their own typical interval between
    purchases, as the last run of the ``at_risk`` job found them (a member dormant since is not
    at risk any more)."""

    flagged: bool = True


class ChurnRiskCondition(_Condition, tag="churn_risk"):
    """The churn model gives the member a probability of still being a customer below
    ``p_alive_below``, as the last run of the weekly ``churn_model`` job scored them. Where the
    model does not apply (no purchase yet, a fit that did not converge, or no run yet) the
    at-risk flag decides, as the ``at_risk`` condition reads it."""

    p_alive_below: Annotated[float, Meta(gt=0, le=1)]


class _AttributeTest(Input, tag_field="op", omit_defaults=True):
    """What an attribute's value must be; comparisons are exact in type (the string "34" is not
    the number 34)."""


class AttributeEquals(_AttributeTest, tag="eq"):
    value: Scalar


class AttributeDiffers(_AttributeTest, tag="ne"):
    """Absent, or present with another value: exactly the members ``eq`` leaves out."""

    value: Scalar


class AttributeIn(_AttributeTest, tag="in"):
    values: Annotated[list[Scalar], Meta(min_length=1, max_length=100)]


class AttributeExists(_AttributeTest, tag="exists"):
    pass


class AttributeMissing(_AttributeTest, tag="not_exists"):
    pass


class _NumberTest(_AttributeTest):
    """The attribute is a number and compares so; any other type never matches."""

    value: Number


class AttributeGreater(_NumberTest, tag="gt"):
    pass


class AttributeAtLeast(_NumberTest, tag="gte"):
    pass


class AttributeLess(_NumberTest, tag="lt"):
    pass


class AttributeAtMost(_NumberTest, tag="lte"):
    pass


AttributeTest: TypeAlias = (
    AttributeEquals | AttributeDiffers | AttributeIn | AttributeExists | AttributeMissing
    | AttributeGreater | AttributeAtLeast | AttributeLess | AttributeAtMost
)


class AttributeCondition(_Condition, tag="attribute"):
    """The member attribute ``key`` passes ``test``."""

    key: AttributeKey
    test: AttributeTest


class ConsentCondition(_Condition, tag="consent"):
    """The member's current choice for ``purpose``: never asked counts as not granted, except for
    ``data_analysis``, which counts as granted until withdrawn (docs/privacy.md)."""

    purpose: ConsentPurpose
    granted: bool = True


class VerifiedCondition(_Condition, tag="verified"):
    """The member proved they read their current e-mail address (``channel`` email) or phone
    (``verified``, the default), or did not (members with none included)."""

    channel: ContactChannel
    verified: bool = True


class StoresCondition(_Condition, tag="stores"):
    """The member purchased at any of these stores (in the last ``within_days`` days, if
    given)."""

    codes: Annotated[list[Code], Meta(min_length=1, max_length=100)]
    within_days: Days | None = None


class AllOf(_Condition, tag="all"):
    """Every condition holds."""

    conditions: Annotated[list[Condition], Meta(min_length=1, max_length=50)]


class AnyOf(_Condition, tag="any"):
    """At least one condition holds."""

    conditions: Annotated[list[Condition], Meta(min_length=1, max_length=50)]


class Not(_Condition, tag="not"):
    """The condition does not hold."""

    condition: Condition


Condition: TypeAlias = (
    StatusCondition | TierCondition | JoinedCondition | LastActivityCondition | SpendCondition
    | PurchaseCountCondition | RfmCondition | AtRiskCondition | ChurnRiskCondition
    | AttributeCondition
    | ConsentCondition | VerifiedCondition | StoresCondition | AllOf | AnyOf | Not
)


# -- requests and responses ------------------------------------------------------------------


class SegmentCreate(Input):
    name: Name
    definition: Condition
    description: Description = ""


class SegmentUpdate(Input):
    """Omitted fields stay as they are."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    definition: Condition | msgspec.UnsetType = msgspec.UNSET


class Segment(Output):
    segment_id: UUID
    name: str
    description: str
    definition: Condition
    created_by: UUID | None
    created_at: dt.datetime
    updated_by: UUID | None
    updated_at: dt.datetime


class SegmentPreviewRequest(Input):
    """A definition to try before saving: how many members it matches, and a few of them."""

    definition: Condition
    sample_size: Annotated[int, Meta(ge=0, le=50)] = 10


class SampleMember(Output):
    member_id: UUID
    member_number: str


class SegmentPreview(Output):
    """``sample``: the first members by id; absent for analysts, who see counts only."""

    count: int
    sample: list[SampleMember] | msgspec.UnsetType = msgspec.UNSET


class SegmentMember(Output):
    member_id: UUID
    member_number: str
    name: str
    status: str
