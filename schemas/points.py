"""Points on the wire: purchases and returns at the till, the member's balance and history,
engagement actions, staff adjustments."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from schemas.base import BirthDate, Input, Instant, OneOf, Output, ShortText, whole
from schemas.rules import ActionName, AwardCount, Category, EarningRules, Sku, Trace

Money = Annotated[int, Meta(ge=0, le=10_000_000_000)]
Quantity = Annotated[int, Meta(ge=1, le=100_000)]
PointAmount = Annotated[int, Meta(ge=0, le=100_000_000)]
ReceiptId = Annotated[str, Meta(min_length=1, max_length=64, pattern=whole(r"[\x21-\x7e]+"))]
Currency = Annotated[str, Meta(pattern=whole(r"[A-Z]{3}"))]
CardToken = Annotated[str, Meta(min_length=16, max_length=1024)]
MemberNumber = Annotated[str, Meta(min_length=1, max_length=20, pattern=whole(r"[0-9]+"))]
Target = Annotated[str, Meta(min_length=1, max_length=500, pattern=whole(r"[^\x00-\x1f\x7f]+"))]
Reason = Annotated[str, Meta(min_length=3, max_length=500,
                             pattern=whole(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+"))]
EntryKind = Literal["earn", "redeem", "expire", "adjust", "reverse", "transfer"]


class MemberRef(OneOf):
    """Exactly one of ``id``, ``card`` (the token the app shows) or ``number``."""

    id: UUID | None = None
    card: CardToken | None = None
    number: MemberNumber | None = None
    one_of = ("id", "card", "number")


# What a person types or a scanner reads; normalised (NFKC, upper case, no spaces or hyphens)
# before it is looked up.
CouponCode = Annotated[str, Meta(min_length=1, max_length=64,
                                 pattern=whole(r"[^\x00-\x1f\x7f]+"))]

CouponReason = Literal[
    "unknown", "inactive", "not_yet_valid", "expired", "already_used", "wrong_store",
    "limit_reached", "below_minimum", "not_applicable", "not_stackable",
]
MAX_COUPONS = 20


class CouponRef(OneOf):
    """A coupon at the till: a typed or scanned ``code`` (single-use or shared), or a wallet
    coupon by ``coupon_id``. Exactly one."""

    code: CouponCode | None = None
    coupon_id: UUID | None = None
    one_of = ("code", "coupon_id")


class CouponCheck(Output):
    """One coupon against one basket: valid with its discount, or the reason it is not."""

    valid: bool
    reason: CouponReason | None
    detail: str
    code: str | None = None
    coupon_id: UUID | None = None
    template_id: UUID | None = None
    name: str | None = None
    discount: int = 0
    points_percent: int | None = None


class PurchaseLine(Input):
    sku: Sku
    unit_price: Money
    category: Category = "uncategorised"
    quantity: Quantity = 1


class Purchase(Input):
    """A purchase as the till records it. ``total`` is what was charged: what the lines are
    worth (quantity × unit price, as sold), less ``discount`` (the till's own markdowns and
    discounts), less what this programme's coupons take off (``/v1/pos/quotes`` says how much;
    a quote may also be asked with the total before them). Points redeemed are a way of paying
    it and do not lower it."""

    member: MemberRef
    receipt_id: ReceiptId
    occurred_at: Instant
    total: Money
    currency: Currency
    lines: Annotated[list[PurchaseLine], Meta(min_length=1, max_length=500)]
    redeem_points: PointAmount = 0
    coupons: Annotated[list[CouponRef], Meta(max_length=MAX_COUPONS)] = msgspec.field(
        default_factory=list)
    discount: Money = 0


class Balance(Output):
    available: int
    pending: int


class PurchaseRecorded(Output):
    purchase_id: UUID
    member_id: UUID
    receipt_id: str
    points_earned: int
    points_redeemed: int
    balance: Balance
    rule_version: int
    trace: Trace
    tier: str | None = None
    tier_reached: str | None = None
    coupons: list[CouponCheck] = msgspec.field(default_factory=list)
    discount: int = 0


class Quote(Output):
    """What a purchase would do; nothing is written. ``coupons`` says of each coupon whether
    it applies and why not; ``discount`` is what the valid ones take off."""

    member_id: UUID
    points_earned: int
    points_redeemable: int
    redeem_points: int
    balance: Balance
    rule_version: int
    trace: Trace
    coupons: list[CouponCheck] = msgspec.field(default_factory=list)
    discount: int = 0


class ReturnLine(Input):
    """``line`` is the index of the purchase line (from 0)."""

    line: Annotated[int, Meta(ge=0, le=499)]
    quantity: Quantity


class ReturnRequest(OneOf):
    """Either ``lines`` or ``amount`` (in the currency's minor units)."""

    lines: Annotated[list[ReturnLine], Meta(min_length=1, max_length=500)] | None = None
    amount: Annotated[int, Meta(ge=1, le=10_000_000_000)] | None = None
    one_of = ("lines", "amount")


class ReinstatedCoupon(Output):
    """A coupon used on a purchase that was returned in full, usable again."""

    template_id: UUID
    code: str | None = None
    coupon_id: UUID | None = None


class ReturnRecorded(Output):
    return_id: UUID
    purchase_id: UUID
    member_id: UUID
    amount: int
    points_reversed: int
    points_restored: int
    points_shortfall: int
    points_not_restored: int
    balance: Balance
    notes: list[str]
    coupons_reinstated: list[ReinstatedCoupon] = msgspec.field(default_factory=list)


class Expiring(Output):
    points: int
    expires_at: dt.datetime


class PendingPoints(Output):
    points: int
    available_at: dt.datetime


class PointsSummary(Output):
    member_id: UUID
    available: int
    pending: int
    pending_release: list[PendingPoints]
    expiring: list[Expiring]
    lifetime_earned: int
    lifetime_redeemed: int
    lifetime_expired: int
    point_value: int
    currency: str


class Entry(Output):
    entry_id: UUID
    member_id: UUID
    kind: EntryKind
    amount: int
    reason: str
    source: str
    created_at: dt.datetime
    purchase_id: UUID | None = None
    return_id: UUID | None = None
    action_id: UUID | None = None
    grant_id: UUID | None = None


class LotMovement(Output):
    lot_id: UUID
    points: int
    expires_at: dt.datetime | None


class EntryDetail(Entry):
    """An entry with its rule trace and the lots it created or drew on."""

    rule_version: int | None = None
    trace: Trace | None = None
    lots: list[LotMovement] = msgspec.field(default_factory=list)


class ActionRequest(Input):
    type: ActionName
    target: Target | None = None


class ActionResult(Output):
    type: str
    points: int
    reason: str
    balance: Balance
    action_id: UUID | None = None


class Adjustment(Input):
    """Points to add (positive) or take away (negative), and why."""

    points: Annotated[int, Meta(ge=-100_000_000, le=100_000_000)]
    reason: Reason


class AdjustmentRecorded(Output):
    entry_id: UUID
    points: int
    balance: Balance


class MemberCard(Output):
    token: str
    expires_at: dt.datetime


class TillMember(Output):
    """What the cashier sees: enough to greet and serve, never the profile."""

    member_id: UUID
    display_name: str
    tier: str | None
    available_points: int


class SimulatedPurchase(Input):
    kind: Literal["purchase"] = "purchase"
    store_code: ShortText = ""
    occurred_at: Instant | None = None
    total: Money = 0
    lines: Annotated[list[PurchaseLine], Meta(min_length=1, max_length=500)] = msgspec.field(
        default_factory=lambda: [PurchaseLine(sku="sample", unit_price=0)])
    redeem_points: PointAmount = 0
    first_purchase: bool = False
    birth_date: BirthDate | None = None
    birthday_bonus_given_this_year: bool = False
    tier: ShortText | None = None


class SimulatedAction(Input):
    kind: Literal["action"] = "action"
    type: ActionName = "site_visit"
    target: Target | None = None
    today: AwardCount = 0
    this_month: AwardCount = 0
    for_target: AwardCount = 0


class Simulation(Input):
    """A purchase or an action, evaluated under ``rules`` (default: the current rules)."""

    purchase: SimulatedPurchase | None = None
    action: SimulatedAction | None = None
    rules: EarningRules | None = None


class SimulationResult(Output):
    points: int
    trace: Trace
    reason: str = ""


# -- offline tills: a queue of writes uploaded at once (docs/offline-tills.md) ---------------

MAX_BATCH_ITEMS = 1000
# The same as the Idempotency-Key header of a single write (api/idempotency.py).
ItemKey = Annotated[str, Meta(min_length=1, max_length=255, pattern=whole(r"[\x21-\x7e]+"))]


class BatchPurchase(Input, tag="purchase", tag_field="kind"):
    """A purchase as ``POST /v1/pos/purchases`` takes it, with that request's
    ``Idempotency-Key``: the same key and purchase sent alone or in a batch are one write."""

    idempotency_key: ItemKey
    purchase: Purchase


class BatchReturn(OneOf, tag="return", tag_field="kind"):
    """A return as ``POST /v1/pos/purchases/{purchase_id}/returns`` takes it, naming the
    purchase by ``purchase_id``, or by its ``receipt_id`` at this store (a purchase the till
    recorded offline itself, whose id it never learnt). Exactly one of the two."""

    idempotency_key: ItemKey
    returned: ReturnRequest
    purchase_id: UUID | None = None
    receipt_id: ReceiptId | None = None
    one_of = ("purchase_id", "receipt_id")


BatchItem = BatchPurchase | BatchReturn


class TillBatch(Input):
    """A till's queue in the order it rang the sales up: written in that order, each item once
    by its own ``idempotency_key`` (distinct within the batch)."""

    items: Annotated[list[BatchItem], Meta(min_length=1, max_length=MAX_BATCH_ITEMS)]


class ItemProblem(Output):
    """Why an item was refused: the problem+json its single request would have been answered
    with."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None


class BatchItemResult(Output):
    """One item's answer, at the item's ``index`` in the batch. ``created``: written now
    (``status`` 201); ``replayed``: written before under this key, the first answer again;
    ``refused``: nothing written, ``problem`` says why (``status`` is its HTTP status)."""

    index: int
    idempotency_key: str
    outcome: Literal["created", "replayed", "refused"]
    status: int
    purchase: PurchaseRecorded | None = None
    returned: ReturnRecorded | None = None
    problem: ItemProblem | None = None


class TillBatchResult(Output):
    created: int
    replayed: int
    refused: int
    items: list[BatchItemResult]
