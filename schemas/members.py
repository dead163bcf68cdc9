"""Members: registration, profile, consents, and the staff view."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
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
