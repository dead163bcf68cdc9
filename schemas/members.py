"""Members: registration, profile, consents, and the staff view."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from schemas.auth import Tokens
from schemas.base import (
    Attributes,
    BirthDate,
    Email,
    Input,
    Name,
    Output,
    Password,
    Phone,
    PostalCode,
    ShortText,
    text,
    whole,
)

MemberStatus = Literal["active", "dormant", "suspended", "erased", "merged"]
ConsentPurpose = Literal["marketing_email", "push", "data_analysis"]
ConsentChannel = Literal["app", "web", "store", "staff", "import"]
# The contacts a member proves they read (a verification code) and a reset is sent to.
ContactChannel = Literal["email", "phone"]
# What a member's own request may say: the token tells a member from staff, not the app from
# the web site. Staff's and the import's channels come from who writes, never from a body.
MemberConsentChannel = Literal["app", "web"]


class ConsentChoice(Input):
    """One purpose's choice; ``channel``: where the member made it, ``app`` or ``web``."""

    purpose: ConsentPurpose
    granted: bool
    text_version: ShortText
    channel: MemberConsentChannel = "app"


class MemberRegistration(Input):
    """One of ``email`` or ``phone`` is required; both may be given."""

    password: Password
    name: Name
    email: Email | None = None
    phone: Phone | None = None
    name_kana: ShortText | None = None
    birth_date: BirthDate | None = None
    postal_code: PostalCode | None = None
    attributes: Attributes = msgspec.field(default_factory=dict)
    consents: list[ConsentChoice] = msgspec.field(default_factory=list)


class MemberProfileUpdate(Input):
    """What a member may change about themselves. Omitted fields stay; null clears.
    ``attributes`` is merged key by key (a key with null is removed, keys not sent stay); a
    member may set only the keys the programme declares (``LOYALTY_MEMBER_ATTRIBUTES``)."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    name_kana: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    email: Email | msgspec.UnsetType | None = msgspec.UNSET
    phone: Phone | msgspec.UnsetType | None = msgspec.UNSET
    birth_date: BirthDate | msgspec.UnsetType | None = msgspec.UNSET
    postal_code: PostalCode | msgspec.UnsetType | None = msgspec.UNSET
    attributes: Attributes | msgspec.UnsetType = msgspec.UNSET


class StaffMemberUpdate(MemberProfileUpdate):
    """Staff may also suspend or reinstate. ``dormant`` and ``erased`` are set by the system."""

    status: Literal["active", "suspended"] | msgspec.UnsetType = msgspec.UNSET


class Member(Output, kw_only=True):
    """A member's record. ``email``, ``phone``, ``birth_date`` and ``postal_code`` are absent
    (not null) for staff whose role may not see contact details (docs/security.md); null means
    the member has none."""

    member_id: UUID
    member_number: str
    name: str
    name_kana: str
    email: str | msgspec.UnsetType | None = msgspec.UNSET
    phone: str | msgspec.UnsetType | None = msgspec.UNSET
    birth_date: dt.date | msgspec.UnsetType | None = msgspec.UNSET
    postal_code: str | msgspec.UnsetType | None = msgspec.UNSET
    attributes: dict[str, object]
    status: MemberStatus
    joined_at: dt.datetime
    last_activity_at: dt.datetime
    merged_into: UUID | None = None
    # Whether the member proved they read their current e-mail or phone (POST /v1/me/verify);
    # a changed contact is unproven again.
    email_verified: bool = False
    phone_verified: bool = False


class Registered(Output):
    member: Member
    tokens: Tokens


class Consent(Output):
    purpose: ConsentPurpose
    granted: bool
    text_version: str
    channel: str
    recorded_at: dt.datetime
    actor_kind: str


class ConsentUpdate(Input):
    consents: list[ConsentChoice] = msgspec.field(default_factory=list)


class Consents(Output):
    """Current choice per purpose and history. Absent: never asked, treated as not granted,
    except ``data_analysis``, treated as granted until withdrawn (docs/privacy.md)."""

    current: list[Consent]
    history: list[Consent]


class VerificationRequest(Input):
    """Send a code to the member's e-mail address or phone."""

    channel: ContactChannel


class VerificationSent(Output):
    """A code is on its way (event ``member.verification_requested``) to the contact of
    ``channel``; it works until ``expires_at``, for a few tries."""

    channel: ContactChannel
    expires_at: dt.datetime


class VerificationAnswer(Input):
    """The six-digit code the member received on ``channel``."""

    channel: ContactChannel
    code: Annotated[str, Meta(min_length=6, max_length=6, pattern=whole("[0-9]{6}"))]


class DuplicateGroup(Output):
    """Members that may be one person, and what they share."""

    reason: str
    members: list[Member]


class DuplicatePage(Output):
    items: list[DuplicateGroup]
    next_cursor: str | None = None


class MergeRequest(Input):
    from_member_id: UUID


# -- erasure ------------------------------------------------------------------------------------

ErasureState = Literal["none", "pending", "cancelled", "erased"]


class MyErasureRequest(Input):
    """A member's request to erase their own data: the password again, as for a sign-in."""

    password: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class StaffErasureRequest(Input):
    """Support erasing a member's data at their request (by letter, at the counter): why."""

    reason: Annotated[str, text(500, min_length=1, multiline=True)]


class Erasure(Output):
    """Where a member's erasure stands: ``pending`` until ``due_at`` (the grace period, during
    which the member may sign in and cancel), ``erased`` once done, ``cancelled``, or ``none``
    (never asked)."""

    member_id: UUID
    state: ErasureState
    requested_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None
    erased_at: dt.datetime | None = None
# -- the member's data export (GET /v1/me/export, POST /v1/members/{id}/export) ----------------

EXPORT_FORMAT = "loyalty.member_export"
EXPORT_FORMAT_VERSION = 1

# A section's rows as stored, one JSON object each: the columns docs/privacy.md lists, with
# times in UTC (RFC 3339), money and points as integers in minor units.
ExportRows = list[dict[str, Any]]
ExportRow = dict[str, Any] | None


def _said(description: str) -> Any:
    return msgspec.Meta(description=description)


class ExportConsents(Output):
    current: Annotated[ExportRows, _said("The latest choice per purpose.")]
    history: Annotated[ExportRows, _said(
        "Every choice ever recorded, oldest first: purpose, granted, text version shown, "
        "channel, who recorded it (member, staff id, or the system) and when.")]


class ExportPoints(Output):
    balance: Annotated[ExportRow, _said(
        "Available and pending points, lifetime totals, purchase count, current tier.")]
    entries: Annotated[ExportRows, _said(
        "Every ledger entry, oldest first, with its kind, amount, reason, source, the purchase, "
        "return, action, grant or staff member it came from, and the trace of how it was "
        "computed.")]
    lots: Annotated[ExportRows, _said(
        "Earned points as lots: points, remaining, when available, when they expire.")]
    allocations: Annotated[ExportRows, _said(
        "Which entry took or gave back how many points of which lot.")]
    expiry_reminders: Annotated[ExportRows, _said(
        "Reminders of points about to expire: the expiry day and when it was sent.")]


class ExportCoupons(Output):
    wallet: Annotated[ExportRows, _said(
        "Coupons issued to the member, with the template's name, validity and use.")]
    redemptions: Annotated[ExportRows, _said(
        "Every coupon or code used on a purchase, its discount, and reinstatement on a return.")]
    codes: Annotated[ExportRows, _said("Single-use codes the member redeemed.")]


class ExportEvents(Output):
    invitations: Annotated[ExportRows, _said("Store events the member was invited to.")]
    reservations: Annotated[ExportRows, _said("Seats reserved (and given back).")]
    checkins: Annotated[ExportRows, _said("Attendance checked in at a store.")]


class ExportScores(Output):
    rfm: Annotated[ExportRow, _said(
        "Recency, frequency and monetary measures and their 1-5 scores, as last computed.")]
    at_risk: Annotated[ExportRow, _said(
        "Set while the member's silence is long for them: since when, and the measures.")]
    churn: Annotated[ExportRow, _said(
        "The churn model's latest figures: probability still active, expected purchases in 90 "
        "days, predicted value over 12 months.")]


class MemberExport(Output):
    """Everything the programme holds about one member, as one JSON document (GDPR art. 15 and
    20, APPI art. 33). Sent as a stream, section by section in this order, all read from one
    snapshot of the database; a document cut short (a broken connection) does not parse, and
    asking again makes a new one. docs/privacy.md lists every table and where its rows are."""

    format: Literal["loyalty.member_export"]
    format_version: Annotated[int, _said("Raised when a section changes incompatibly.")]
    exported_at: dt.datetime
    member_id: UUID
    profile: Annotated[dict[str, Any], _said(
        "The member's record: number, name, kana, contact details, birth date, postal code, "
        "attributes, external id, status, dates; ``has_password`` instead of the hash.")]
    merged_records: Annotated[ExportRows, _said(
        "Records of the same person merged into this one, as they were kept: each one's "
        "profile, as ``profile``.")]
    consents: ExportConsents
    points: ExportPoints
    purchases: Annotated[ExportRows, _said(
        "Purchases, oldest first, with their lines, total, points earned and redeemed.")]
    returns: Annotated[ExportRows, _said(
        "Returns of those purchases, with their lines and the points reversed and restored.")]
    actions: Annotated[ExportRows, _said(
        "Engagement that earned points: site visits, shares, check-ins, reviews.")]
    coupons: ExportCoupons
    tier_history: Annotated[ExportRows, _said(
        "Every change of tier, with the measure that made it and the reason.")]
    events: ExportEvents
    segments: Annotated[ExportRows, _said(
        "The saved segments (audiences) the member is in at the time of the export.")]
    campaigns: Annotated[ExportRows, _said(
        "Campaigns the member was assigned to, and to which group: ``treated`` (reached) or "
        "``control`` (held out, to measure the campaign against).")]
    scores: ExportScores
    birthday_rewards: Annotated[ExportRows, _said("Birthday rewards, one per year.")]
    status_history: Annotated[ExportRows, _said(
        "Every change of status (active, dormant, suspended...), when and why.")]
    sessions: Annotated[ExportRows, _said(
        "Sign-in sessions: each refresh token's issue, expiry, use and revocation times "
        "(never the token or its hash).")]
    password_resets: Annotated[ExportRows, _said(
        "Password resets asked for: the channel the link went to, when, until when it worked, "
        "when it was used (never the token).")]
    verification_codes: Annotated[ExportRows, _said(
        "Contact verification codes outstanding: channel, tries, when sent, until when they "
        "work (never the code).")]
    erasure_requests: Annotated[ExportRows, _said(
        "Requests to erase the member's data: when, by whom (the member, staff or the "
        "retention of inactive members), when due, cancelled or done.")]
    integration_events: Annotated[ExportRows, _said(
        "Events about the member sent to the brand's other systems (webhooks): type, time, "
        "payload.")]
    staff_access: Annotated[ExportRows, _said(
        "Who read or changed the member's data: each staff account (id and role) or store "
        "terminal (id and store), the action, and when.")]
