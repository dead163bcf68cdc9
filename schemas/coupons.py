"""Coupons on the wire: templates staff define, codes, issues, the member's wallet, and what
the till asks before and while it applies a coupon."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from schemas.base import Code, Input, Instant, Name, Output, text, whole
from schemas.points import MAX_COUPONS, CouponCheck, CouponRef, MemberRef, Money, PurchaseLine
from schemas.rules import Category, Sku

Description = Annotated[str, text(500, multiline=True)]
# A shared code marketing chooses ("WELCOME2026"): letters, digits, hyphens.
PublicCode = Annotated[str, Meta(min_length=4, max_length=32,
                                 pattern=whole(r"[A-Za-z0-9][A-Za-z0-9-]*"))]
# A prefix for generated codes: only the characters the codes themselves use.
CodePrefix = Annotated[str, Meta(max_length=8, pattern=whole(r"[2-9A-HJ-NP-Za-hj-np-z]*"))]
Limit = Annotated[int, Meta(ge=1, le=1_000)]
Budget = Annotated[int, Meta(ge=0, le=1_000_000_000)]



# -- discounts -------------------------------------------------------------------------------


class FixedAmount(Input, tag="fixed_amount"):
    """``amount`` off the lines the coupon applies to (never more than they cost)."""

    amount: Annotated[int, Meta(ge=1, le=10_000_000_000)]


class PercentOff(Input, tag="percent"):
    """``percent`` off the lines the coupon applies to, rounded down, at most ``cap``."""

    percent: Annotated[int, Meta(ge=1, le=100)]
    cap: Annotated[int, Meta(ge=1, le=10_000_000_000)] | None = None


class FreeItem(Input, tag="free_item"):
    """One unit of ``sku`` free (its unit price off), if the basket holds it."""

    sku: Sku


class PointsMultiplierDiscount(Input, tag="points_multiplier"):
    """The purchase earns ``percent`` of its base points (200 = double points)."""

    percent: Annotated[int, Meta(ge=101, le=10_000)]


Discount = FixedAmount | PercentOff | FreeItem | PointsMultiplierDiscount


# -- validity --------------------------------------------------------------------------------


class FixedWindow(Input, tag="window"):
    """Usable from ``valid_from`` (inclusive) until ``valid_until`` (exclusive); an open end
    is unbounded."""

    valid_from: Instant | None = None
    valid_until: Instant | None = None

    def __post_init__(self) -> None:
        if self.valid_from and self.valid_until and self.valid_from >= self.valid_until:
            raise ValueError("valid_from must be before valid_until")


class DaysAfterIssue(Input, tag="days_after_issue"):
    """Usable from the moment of issue to the end of the business day ``days - 1`` days
    later (1 = the day of issue only)."""

    days: Annotated[int, Meta(ge=1, le=3_650)]


Validity = FixedWindow | DaysAfterIssue


# -- templates -------------------------------------------------------------------------------


class CouponTemplateCreate(Input):
    """A kind of coupon. ``stores`` and ``categories`` empty mean every store and every line;
    ``min_spend`` counts the lines the coupon applies to; ``total_limit`` caps redemptions
    across all members (the budget); ``on_return`` says whether a fully returned purchase
    gives the coupon back."""

    name: Name
    discount: Discount
    description: Description = ""
    validity: Validity = msgspec.field(default_factory=FixedWindow)
    min_spend: Money = 0
    stores: Annotated[list[Code], Meta(max_length=1_000)] = msgspec.field(default_factory=list)
    categories: Annotated[list[Category], Meta(max_length=500)] = msgspec.field(
        default_factory=list)
    per_member_limit: Limit | None = None
    total_limit: Budget | None = None
    stackable: bool = False
    on_return: Literal["reinstate", "keep_used"] = "reinstate"
    public_code: PublicCode | None = None


class CouponTemplateUpdate(Input):
    """What may change once coupons are out. The discount, validity and public code define
    what members were given: for other terms, make a new template. ``active: false`` stops
    new issues and redemptions and keeps the history."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET
    min_spend: Money | msgspec.UnsetType = msgspec.UNSET
    stores: Annotated[list[Code], Meta(max_length=1_000)] | msgspec.UnsetType = msgspec.UNSET
    categories: Annotated[list[Category], Meta(max_length=500)] | msgspec.UnsetType = (
        msgspec.UNSET)
    per_member_limit: Limit | msgspec.UnsetType | None = msgspec.UNSET
    total_limit: Budget | msgspec.UnsetType | None = msgspec.UNSET
    stackable: bool | msgspec.UnsetType = msgspec.UNSET
    on_return: Literal["reinstate", "keep_used"] | msgspec.UnsetType = msgspec.UNSET


class CouponTemplate(Output):
    template_id: UUID
    name: str
    description: str
    discount: Discount
    validity: Validity
    min_spend: int
    stores: list[str]
    categories: list[str]
    per_member_limit: int | None
    total_limit: int | None
    stackable: bool
    on_return: Literal["reinstate", "keep_used"]
    public_code: str | None
    active: bool
    issued: int
    redeemed: int
    created_at: dt.datetime
    updated_at: dt.datetime


# -- codes and issues ------------------------------------------------------------------------


class CodeBatchRequest(Input):
    """``count`` single-use codes like ``ABCD-EFGH-JKLM``: 11 random characters and a check
    character, from an alphabet without 0/O or 1/I."""

    count: Annotated[int, Meta(ge=1, le=100_000)]
    prefix: CodePrefix = ""


class CodeBatch(Output):
    batch_id: UUID
    template_id: UUID
    count: int
    codes: list[str]
    created_at: dt.datetime


class CodeBatchSummary(Output):
    """A batch without its codes: what a template's page lists."""

    batch_id: UUID
    template_id: UUID
    count: int
    prefix: str
    created_at: dt.datetime


class IssueRequest(Input):
    """Exactly one of ``members`` or ``segment_id``."""

    members: Annotated[list[UUID], Meta(min_length=1, max_length=100_000)] | None = None
    segment_id: UUID | None = None


class IssueResult(Output):
    """``skipped``: members not reachable (unknown, suspended, erased) or already holding as
    many of these coupons as they may use."""

    issue_id: UUID
    template_id: UUID
    issued: int
    skipped: int
    created_at: dt.datetime


# -- the wallet ------------------------------------------------------------------------------

WalletStatus = Literal["usable", "upcoming", "used", "expired"]


class WalletCoupon(Output):
    coupon_id: UUID
    template_id: UUID
    name: str
    description: str
    discount: Discount
    status: WalletStatus
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    min_spend: int
    stores: list[str]
    categories: list[str]
    stackable: bool
    issued_at: dt.datetime
    redeemed_at: dt.datetime | None = None


# -- at the till -----------------------------------------------------------------------------


class CouponValidation(Input):
    """Would these coupons apply to this basket? ``member`` is needed for wallet coupons and
    per-member limits."""

    coupons: Annotated[list[CouponRef], Meta(min_length=1, max_length=MAX_COUPONS)]
    lines: Annotated[list[PurchaseLine], Meta(min_length=1, max_length=500)]
    member: MemberRef | None = None
    occurred_at: Instant | None = None


class CouponValidationResult(Output):
    coupons: list[CouponCheck]
    discount: int
