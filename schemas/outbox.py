"""The events the programme tells other systems about (issue 15): one payload Struct per event
type, the envelope a receiver gets, and ``EVENT_TYPES``, the registry from a type's name to its
payload.

Payloads carry ids and the figures a receiver needs to act without calling back (a balance after
the change, the points and their expiry), and personal data only where the event is about it:
``member.registered`` and ``member.updated`` carry the profile, the reset and verification
events the contact their secret goes to; every other event names the member by id and number
only. A receiver that needs more asks the API, with its own rights.

Events are written into the outbox (``loyalty/core/outbox.py``) in the transaction of their
effect; set-based writers build the same shapes with ``jsonb_build_object``, which is why every
payload here decodes from JSON as stored (``tests/loyalty/test_events_emitted.py`` checks every
row the tests write against its Struct).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from uuid import UUID

import msgspec

from schemas.base import Output

MemberStatusName = Literal["active", "dormant", "suspended", "erased"]


class EventBalance(Output):
    """The member's points after the change: spendable now, and held until returns close."""

    available: int
    pending: int


class EventLine(Output):
    sku: str
    unit_price: int
    category: str
    quantity: int


# -- members -----------------------------------------------------------------------------------


class MemberRegisteredData(Output):
    """A member signed up (or was registered by staff): the profile as stored."""

    member_id: UUID
    member_number: str
    name: str
    name_kana: str
    email: str | None
    phone: str | None
    birth_date: dt.date | None
    postal_code: str | None
    attributes: dict[str, Any]
    joined_at: dt.datetime


class MemberUpdatedData(Output):
    """A member's profile changed: the fields named in ``changed``, and the profile as it now
    stands (a receiver replaces its copy)."""

    member_id: UUID
    member_number: str
    changed: list[str]
    name: str
    name_kana: str
    email: str | None
    phone: str | None
    birth_date: dt.date | None
    postal_code: str | None
    attributes: dict[str, Any]


class MemberStatusChangedData(Output):
    """A member became active, dormant, suspended or erased. ``reason``: ``inactivity`` (the
    dormancy job), ``activity`` (a dormant member bought, took part or checked in), ``staff``,
    ``imported purchase``, ... ``campaign_id``: for a reactivation, the campaign credited with it
    (the latest that treated the member while dormant), else null. An erased member's data is
    gone: a receiver deletes its copy."""

    member_id: UUID
    member_number: str
    from_status: str
    to_status: MemberStatusName
    reason: str
    changed_at: dt.datetime
    campaign_id: UUID | None = None


class MemberMergedData(Output):
    """Two records of one person became one: ``merged_member_id`` is gone (it answers with a
    pointer to ``member_id``), its points, coupons and consents moved to the survivor."""

    member_id: UUID
    member_number: str
    merged_member_id: UUID
    merged_member_number: str
    points_moved: int
    balance: EventBalance


class MemberPasswordResetRequestedData(Output):
    """A member asked to reset their password: the brand's mailer sends ``token`` to ``contact``
    (the member's e-mail address or phone, as ``channel`` says), typically as a link to the app's
    reset page, which sends it back with the new password to
    ``POST /v1/auth/member/password-reset/confirm``. Works once, until ``expires_at``. A secret:
    a receiver keeps it no longer than it takes to send it."""

    member_id: UUID
    member_number: str
    channel: Literal["email", "phone"]
    contact: str
    token: str
    expires_at: dt.datetime


class MemberVerificationRequestedData(Output):
    """A code to prove the member reads ``contact`` (their e-mail address or phone, as ``channel``
    says): the brand's mailer sends ``code``; the member types it into the app, which sends it to
    ``POST /v1/me/verify``. Works once, until ``expires_at``; a new request replaces it. Also
    sent at sign-up and when the member changes the contact. A secret, as the reset token is."""

    member_id: UUID
    member_number: str
    channel: Literal["email", "phone"]
    contact: str
    code: str
    expires_at: dt.datetime


class MemberErasedData(Output):
    """A member's personal data was erased (their request, staff acting on one, or the retention
    of inactive members): a receiver erases its copy too (GDPR art. 17(2), 19). Only the
    pseudonymous id remains, with the ledger kept for accounting."""

    member_id: UUID
    erased_at: dt.datetime


# -- points ------------------------------------------------------------------------------------

PointsSource = Literal["purchase", "return", "action", "staff", "system", "merge", "campaign",
                       "grant", "birthday"]


class PointsEarnedData(Output):
    """Points earned: by a purchase, an action, an event check-in, a bulk grant, a birthday or a
    campaign's bonus. Pending points become spendable at ``available_at`` (the return window)."""

    member_id: UUID
    member_number: str
    entry_id: UUID
    points: int
    source: PointsSource
    reason: str
    available_at: dt.datetime
    expires_at: dt.datetime | None
    balance: EventBalance
    purchase_id: UUID | None = None
    action_id: UUID | None = None


class PointsRedeemedData(Output):
    """Points spent at the till (``purchase_id``)."""

    member_id: UUID
    member_number: str
    entry_id: UUID
    points: int
    reason: str
    purchase_id: UUID | None
    balance: EventBalance


class PointsReversedData(Output):
    """A return moved points back: ``points`` negative for earned points taken back, positive
    for redeemed points given back (with the expiry they had)."""

    member_id: UUID
    member_number: str
    entry_id: UUID
    points: int
    reason: str
    purchase_id: UUID | None
    return_id: UUID | None
    balance: EventBalance


class PointsAdjustedData(Output):
    """Staff added (``points`` > 0) or took away (< 0) points, with their reason."""

    member_id: UUID
    member_number: str
    entry_id: UUID
    points: int
    reason: str
    staff_id: UUID | None
    expires_at: dt.datetime | None
    balance: EventBalance


class PointsExpiredData(Output):
    """Points passed their expiry (``points`` positive: how many were lost)."""

    member_id: UUID
    member_number: str
    entry_id: UUID
    points: int
    balance: EventBalance


class MayMessage(Output):
    """Whether the member may be sent a marketing message on each channel: their latest choice
    for that consent purpose when the event was written, never asked being no (as a campaign's
    ``messaged`` reads it). Events a brand's mailer turns into messages carry it: the event goes
    out either way (the points or the coupon are the member's), the mailer sends on a channel
    only where it is true (docs/privacy.md, "Consent")."""

    marketing_email: bool
    push: bool


class PointsExpiringSoonData(Output):
    """Points that expire on ``expires_on`` (the business day) unless spent: sent once per member
    and expiry day, ``days_ahead`` days before (``LOYALTY_EXPIRING_SOON_DAYS``). A reminder to
    send, on the channels ``may_message`` allows."""

    member_id: UUID
    member_number: str
    points: int
    expires_on: dt.date
    expires_at: dt.datetime
    available: int
    may_message: MayMessage


class TierChangedData(Output):
    """A member moved up (at a purchase) or down (at the tier evaluation) a tier; ``coupon_id``
    is the coupon the new tier granted, if any (also sent as ``coupon.issued``)."""

    member_id: UUID
    member_number: str
    change_id: UUID
    from_tier: str | None
    to_tier: str | None
    reason: str
    measure: int
    coupon_id: UUID | None = None


# -- coupons ------------------------------------------------------------------------------------

CouponSource = Literal["staff", "campaign", "tier", "birthday"]


class CouponIssuedData(Output):
    """A coupon put into a member's wallet; telling the member of it is a message, on the
    channels ``may_message`` allows (a campaign's coupon: ``may_message`` for its channel is
    what the campaign's ``messaged`` says)."""

    member_id: UUID
    member_number: str
    coupon_id: UUID
    template_id: UUID
    issue_id: UUID
    source: CouponSource
    campaign_id: UUID | None
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    may_message: MayMessage


class CouponRedeemedData(Output):
    """A coupon used on a purchase: a wallet coupon (``coupon_id``) or a code (``code``)."""

    member_id: UUID
    member_number: str
    redemption_id: UUID
    template_id: UUID
    coupon_id: UUID | None
    code: str | None
    purchase_id: UUID
    discount: int
    campaign_id: UUID | None


class CouponReinstatedData(Output):
    """A coupon given back by the full return of the purchase it was used on."""

    member_id: UUID
    member_number: str
    redemption_id: UUID
    template_id: UUID
    coupon_id: UUID | None
    code: str | None
    purchase_id: UUID
    return_id: UUID


# -- purchases ----------------------------------------------------------------------------------


class PurchaseRecordedData(Output):
    """A purchase recorded at a till, with the points it earned and spent."""

    member_id: UUID
    member_number: str
    purchase_id: UUID
    store_code: str
    receipt_id: str
    occurred_at: dt.datetime
    currency: str
    total: int
    discount: int
    lines: list[EventLine]
    points_earned: int
    points_redeemed: int
    coupons: int


class PurchaseReturnedData(Output):
    """Part or all of a purchase returned: the amount refunded and the points that moved."""

    member_id: UUID
    member_number: str
    purchase_id: UUID
    return_id: UUID
    amount: int
    points_reversed: int
    points_restored: int
    coupons_reinstated: int


# -- campaigns and events ------------------------------------------------------------------------


class CampaignLaunchedData(Output):
    """A campaign launched: its action reached the members of its treated arm."""

    campaign_id: UUID
    name: str
    action: str
    channel: str | None
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    treated: int
    holdout: int
    launched_at: dt.datetime


class EventRsvpData(Output):
    """A member reserved a seat at an event."""

    member_id: UUID
    member_number: str
    event_id: UUID
    reserved_at: dt.datetime
    seats_left: int


class EventCheckedInData(Output):
    """A member checked in at an event at the till, with the attendance points it earned."""

    member_id: UUID
    member_number: str
    event_id: UUID
    checked_in_at: dt.datetime
    store_code: str
    points_earned: int


# -- the registry -------------------------------------------------------------------------------

EVENT_TYPES: dict[str, type[Output]] = {
    "member.registered": MemberRegisteredData,
    "member.updated": MemberUpdatedData,
    "member.status_changed": MemberStatusChangedData,
    "member.merged": MemberMergedData,
    "member.password_reset_requested": MemberPasswordResetRequestedData,
    "member.verification_requested": MemberVerificationRequestedData,
    "member.erased": MemberErasedData,
    "points.earned": PointsEarnedData,
    "points.redeemed": PointsRedeemedData,
    "points.reversed": PointsReversedData,
    "points.adjusted": PointsAdjustedData,
    "points.expired": PointsExpiredData,
    "points.expiring_soon": PointsExpiringSoonData,
    "tier.changed": TierChangedData,
    "coupon.issued": CouponIssuedData,
    "coupon.redeemed": CouponRedeemedData,
    "coupon.reinstated": CouponReinstatedData,
    "purchase.recorded": PurchaseRecordedData,
    "purchase.returned": PurchaseReturnedData,
    "campaign.launched": CampaignLaunchedData,
    "event.rsvp": EventRsvpData,
    "event.checked_in": EventCheckedInData,
}


class Envelope(Output):
    """What a receiver is sent for every event: ``id`` is time-ordered (UUID v7) and the
    receiver's idempotency key; ``data`` is the payload of ``type`` (``EVENT_TYPES``)."""

    id: UUID
    type: str
    occurred_at: dt.datetime
    api_version: str
    data: dict[str, Any]


def envelope_type(type_: str) -> type[msgspec.Struct]:
    """The envelope of one event type, ``data`` typed as its payload: what the OpenAPI document
    lists under ``webhooks`` and what a receiver may decode into."""
    payload = EVENT_TYPES[type_]
    name = "".join(part.title() for part in type_.replace("_", ".").split(".")) + "Event"
    return msgspec.defstruct(
        name,
        [("id", UUID), ("type", Literal[type_]), ("occurred_at", dt.datetime),
         ("api_version", str), ("data", payload)],
        bases=(Output,), kw_only=True, module=__name__)
