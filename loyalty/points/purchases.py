"""Purchases at the till: quote, validate coupons, record, the last through the ledger's
``post`` in one statement with the purchase, its coupons and any tier it reaches.

A terminal's write is idempotent by its ``Idempotency-Key``: the key is written in the same
statement as the points, with the response, so a retry after any failure either finds the
stored response or finds nothing done. A receipt is recorded once per store whatever the key.
Returns are in ``loyalty/points/returns.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.access.principals import TerminalPrincipal
from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InsufficientPoints, InvalidInput
from loyalty.core.idempotency import Idempotency
from loyalty.core.ids import uuid7
from loyalty.core.metrics import COUPON_REDEMPTIONS, PURCHASES
from loyalty.core.programme import Programme
from loyalty.core.sql import named
from loyalty.members.filter import may_message
from loyalty.points.earning import (
    PurchaseFacts,
    available_at,
    expires_at,
    purchase_earning,
    redeemable_points,
)
from loyalty.points.groups import PurchaseGroups
from loyalty.points.ledger import (
    ClaimRefused,
    LedgerRead,
    Outcome,
    Planned,
    check_can_transact,
    ledger_read,
    post,
    posting_statement,
    read_member_ledger,
    read_member_ledger_with,
)
from loyalty.points.posting import Links, MemberLedger, Posting
from loyalty.points.rules import RuleBook
from loyalty.points.tiers import current_window_start, measure_sql, rank, tier_for
from loyalty.promotions.coupon_checks import (
    Candidate,
    Checked,
    check_coupons,
    find_coupons,
    normalized_refs,
)
from loyalty.promotions.coupon_redemption import (
    COUPONS_CLAIMED,
    REDEEM_COUPONS,
    redemption_values,
)
from schemas.base import json_encoder
from schemas.coupons import CouponValidation, CouponValidationResult
from schemas.outbox import CouponRedeemedData, EventLine, PurchaseRecordedData
from schemas.points import (
    Balance,
    CouponRef,
    Purchase,
    PurchaseLine,
    PurchaseRecorded,
    Quote,
)
from schemas.rules import EarningRules, TierProgramme, Trace

_encode = json_encoder.encode
# A till's clock may run a little ahead; a purchase further in the future is a mistake.
CLOCK_SKEW = dt.timedelta(minutes=5)


def _check_purchase(purchase: Purchase, programme: Programme, now: dt.datetime) -> None:
    if purchase.currency != programme.currency:
        raise InvalidInput(f"this programme runs in {programme.currency}", field="currency",
                           code="currency_mismatch")
    if purchase.occurred_at.tzinfo is None:
        raise InvalidInput("occurred_at needs a time zone offset", field="occurred_at")
    if purchase.occurred_at > now + CLOCK_SKEW:
        raise InvalidInput("occurred_at is in the future", field="occurred_at")


def check_total(purchase: Purchase, coupon_discount: int, *, quote: bool) -> None:
    """``total`` is what the lines are worth less the till's ``discount`` and the coupons'
    discount; a quote may give it before the coupons' discount, which is what it asks for."""
    worth = sum(line.quantity * line.unit_price for line in purchase.lines)
    before_coupons = worth - purchase.discount
    if before_coupons < 0:
        raise InvalidInput(
            f"discount {purchase.discount} is more than the lines are worth ({worth}): send "
            "the lines as sold and the discount the till gave", field="discount",
            code="discount_exceeds_lines")
    charged = before_coupons - coupon_discount
    if purchase.total == charged or (quote and purchase.total == before_coupons):
        return
    working = f"{worth} for the lines"
    working += f" - {purchase.discount} the till's discount" if purchase.discount else ""
    working += f" - {coupon_discount} for coupons" if coupon_discount else ""
    raise InvalidInput(
        f"total {purchase.total} does not add up: {working} = {charged}; send the total "
        "charged, and the till's own markdowns in discount", field="total",
        code="total_mismatch")


# -- quote and record ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Evaluation:
    version: int
    rules: EarningRules
    points: int
    redeemable: int
    earned_trace: Trace
    birthday_year: int | None
    expires_at: dt.datetime | None
    available_at: dt.datetime


async def _evaluate(
    conn: Connection, ledger: MemberLedger, purchase: Purchase, store_code: str,
    rulebook: RuleBook, programme: Programme, now: dt.datetime,
    coupons: Sequence[Checked] = (), campaign_boosts: Sequence[tuple[str, int]] = (),
) -> tuple[_Evaluation, Posting]:
    version, rules = await rulebook.at(conn, ledger.rules_version)
    posting = Posting(ledger, now)
    redeemable = redeemable_points(rules, purchase.total, posting.available)
    if purchase.redeem_points * rules.point_value > purchase.total:
        raise InvalidInput("cannot redeem more points than the bill is worth",
                           field="redeem_points", code="redeem_exceeds_total")
    if purchase.redeem_points > posting.available:
        raise InsufficientPoints(
            f"{purchase.redeem_points} points asked for, {posting.available} available",
            field="redeem_points")
    facts = PurchaseFacts(
        occurred_at=purchase.occurred_at, store_code=store_code, total=purchase.total,
        lines=purchase.lines, redeem_points=purchase.redeem_points,
        first_purchase=ledger.purchase_count == 0, birth_date=ledger.birth_date,
        birthday_bonus_year=ledger.birthday_bonus_year,
        tier=next((t for t in rules.tiers.levels if t.code == ledger.tier), None),
        boosts=tuple(("campaign", name, percent) for name, percent in campaign_boosts)
        + tuple(("coupon", c.check.name or "coupon", c.check.points_percent)
                for c in coupons if c.valid and c.check.points_percent),
    )
    earned = purchase_earning(rules, version, facts, programme.timezone,
                              ceiling=programme.max_points_per_purchase, recorded_at=now)
    expiry = expires_at(rules.expiry, purchase.occurred_at, programme.timezone)
    evaluation = _Evaluation(
        version, rules, earned.points, redeemable, earned.trace, earned.birthday_bonus_year,
        expiry, available_at(rules, purchase.occurred_at),
    )
    return evaluation, posting


async def quote_purchase(
    conn: Connection, *, member: UUID | str, purchase: Purchase, terminal: TerminalPrincipal,
    rulebook: RuleBook, programme: Programme, now: dt.datetime,
) -> Quote:
    """What ``purchase`` would earn and may redeem, and whether each coupon applies (and
    why not); nothing is written."""
    _check_purchase(purchase, programme, now)
    ledger = await read_member_ledger(conn, member)
    check_can_transact(ledger)
    checked = await check_basket_coupons(
        conn, purchase.coupons, lines=purchase.lines, member_id=ledger.member_id,
        store_code=terminal.store_code, at=purchase.occurred_at)
    boosts = msgspec.convert(await conn.fetchval(
        _BOOSTS.text, *_BOOSTS.args({"member": ledger.member_id, "at": purchase.occurred_at})),
        list[tuple[str, int]])
    check_total(purchase, sum(c.check.discount for c in checked if c.valid), quote=True)
    evaluation, posting = await _evaluate(conn, ledger, purchase, terminal.store_code,
                                          rulebook, programme, now, checked, boosts)
    return Quote(
        member_id=ledger.member_id, points_earned=evaluation.points,
        points_redeemable=evaluation.redeemable, redeem_points=purchase.redeem_points,
        balance=Balance(available=posting.available, pending=posting.pending),
        rule_version=evaluation.version, trace=evaluation.earned_trace,
        coupons=[c.check for c in checked],
        discount=sum(c.check.discount for c in checked),
    )


async def check_basket_coupons(
    conn: Connection, coupons: Sequence[CouponRef], *, lines: list[PurchaseLine],
    member_id: UUID | None, store_code: str, at: dt.datetime,
) -> list[Checked]:
    """Coupons against a basket, for a quote or a validation: the member's use of each
    template read now (a recorded purchase reads it with its ledger instead). Without a
    member, per-member limits are not checked and wallet coupons are not found."""
    refs = normalized_refs(coupons)
    if not refs:
        return []
    candidates = await find_coupons(conn, refs)
    usage = None
    if member_id is not None:
        usage = msgspec.convert(await conn.fetchval(
            _USAGE.text, *_USAGE.args({"member": member_id,
                                       "template_ids": _template_ids(candidates)})),
            dict[UUID, int])
    return check_coupons(refs, candidates, lines=lines, store_code=store_code, now=at,
                         member_id=member_id, usage=usage)


async def validate_coupons(
    conn: Connection, validation: CouponValidation, *, member: UUID | str | None,
    terminal: TerminalPrincipal, now: dt.datetime,
) -> CouponValidationResult:
    """Would these coupons apply to this basket at this store? Each one valid with its
    discount, or the reason it is not; nothing is written."""
    member_id = None
    if member is not None:
        ledger = await read_member_ledger(conn, member)
        member_id = ledger.member_id
    at = validation.occurred_at or now
    if at.tzinfo is None:
        raise InvalidInput("occurred_at needs a time zone offset", field="occurred_at")
    checked = await check_basket_coupons(
        conn, validation.coupons, lines=validation.lines, member_id=member_id,
        store_code=terminal.store_code, at=at)
    return CouponValidationResult(coupons=[c.check for c in checked],
                                  discount=sum(c.check.discount for c in checked))


def _template_ids(candidates: Sequence[Candidate | None]) -> list[UUID]:
    return sorted({c.template.template_id for c in candidates if c is not None})


def _campaign_boosts(member: str) -> str:
    """The points multipliers of launched campaigns treating ``member`` (an SQL expression) at
    the purchase's moment ``:at``, as [name, percent] pairs."""
    return f"""
(select coalesce(jsonb_agg(jsonb_build_array(c.name, (c.action->>'percent')::int)
                           order by c.campaign_id), '[]')
   from campaign_members cm join campaigns c on c.campaign_id = cm.campaign_id
  where cm.member_id = {member} and cm.arm = 'treated' and c.status = 'launched'
    and c.action->>'type' = 'points_multiplier'
    and c.starts_at <= :at::timestamptz and c.ends_at > :at::timestamptz)"""  # noqa: S608 - the member expression is one of two constants named at import


def _coupon_usage(member: str) -> str:
    """How often ``member`` (an SQL expression), and members merged into them, has used each
    coupon template in ``:template_ids``: read with the ledger when recording, so the balance's
    version makes per-member limits exact."""
    return f"""
case when cardinality(:template_ids::uuid[]) = 0 then '{{}}'::jsonb else (
    select coalesce(jsonb_object_agg(u.template_id, u.n), '{{}}') from (
        select used.template_id, sum(used.n)::bigint as n
          from (select {member}::uuid union all
                select mm.member_id from members mm where mm.merged_into = {member})
               as family (member_id),
               -- Member by member of the family: each one's rows by their own member_id.
               lateral (select r.template_id, count(*) as n from coupon_redemptions r
                         where r.member_id = family.member_id
                           and r.template_id = any(:template_ids::uuid[])
                           and r.reinstated_at is null
                         group by r.template_id) used
         group by used.template_id) u) end"""  # noqa: S608 - the member expression is one of two constants named at import


_BOOSTS = named("select " + _campaign_boosts(":member::uuid"))
_USAGE = named("select " + _coupon_usage(":member"))


class PurchaseRead(msgspec.Struct, frozen=True):
    """What recording a purchase reads beside the ledger, in the same statement."""

    # The receipt was recorded before (under another key): refused before anything else.
    receipt_taken: bool
    # The tier measure so far, in the window that started at ``tier_window``.
    tier_measure: int
    tier_window: dt.datetime
    coupon_usage: dict[UUID, int]
    campaign_boosts: list[tuple[str, int]]


_purchase_reads: dict[tuple[str, bool], LedgerRead[PurchaseRead]] = {}


def _purchase_read(tiers: TierProgramme) -> LedgerRead[PurchaseRead]:
    """The purchase's ledger read for the shape of ``tiers``'s measure, built once each."""
    key = (tiers.measure, bool(tiers.levels))
    if key not in _purchase_reads:
        measure = measure_sql(tiers, "m.member_id", ":tier_window", ":now") \
            if tiers.levels else "0"
        _purchase_reads[key] = ledger_read(f""",
       exists (select 1 from purchases where store_id = :store_id and receipt_id = :receipt_id)
           as receipt_taken,
       coalesce(({measure})::bigint, 0) as tier_measure,
       :tier_window::timestamptz as tier_window,
       ({_coupon_usage("m.member_id")}) as coupon_usage,
       {_campaign_boosts("m.member_id")} as campaign_boosts""", PurchaseRead)  # noqa: S608 - constant SQL snippets chosen at import by the tier programme's shape
    return _purchase_reads[key]


# The events a purchase adds to its posting: the purchase row, the member's last activity, and
# the tier it reaches with the coupon that tier grants.
PURCHASE_EVENT = """
, purchase as (
    insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                           occurred_at, currency, total, lines, points_earned, points_redeemed,
                           rule_version, recorded_at)
    select :member, :purchase_id, :store_id, :terminal_id, :receipt_id, :occurred_at,
           :currency, :total, :lines, :points_earned, :points_redeemed, :rule_version, :now
     where exists (select 1 from bal)
), activity as (
    update members set last_activity_at = greatest(last_activity_at, :occurred_at)
     where member_id = :member and exists (select 1 from bal)
), tier_coupon as (
    insert into member_coupons (member_id, coupon_id, template_id, issue_id, source, issued_at,
                                valid_from, valid_until)
    select :member, :tier_coupon_id, t.template_id, :tier_change_id, 'tier', :now,
           case when t.valid_days is null then t.valid_from else :now end,
           case when t.valid_days is null then t.valid_until
                else coupon_valid_until(:now, t.valid_days, :timezone) end
      from coupon_templates t
     where t.template_id = :tier_coupon_template_id::uuid and t.active
       and :to_tier::text is not null and exists (select 1 from bal)
    returning coupon_id, template_id, valid_from, valid_until
), tier_change as (
    insert into member_tiers (member_id, change_id, from_tier, to_tier, reason, measure,
                              purchase_id, changed_at, coupon_id)
    select :member, :tier_change_id, :from_tier, :to_tier, 'purchase reached the threshold',
           :tier_measure, :purchase_id, :now, (select coupon_id from tier_coupon)
     where :to_tier::text is not null and exists (select 1 from bal)
)"""

# Whether the tier's coupon was issued is known in the statement only (its template may have
# been withdrawn): tier.changed and coupon.issued come from its CTEs, after the posting's
# events (``posting_statement``'s ``events``).
TIER_EVENTS = f"""
     union all
    select 1000001, 'tier.changed', jsonb_build_object(
           'member_id', :member, 'member_number', :member_number::text,
           'change_id', :tier_change_id, 'from_tier', :from_tier::text, 'to_tier', :to_tier::text,
           'reason', 'purchase reached the threshold', 'measure', :tier_measure::bigint,
           'coupon_id', (select coupon_id from tier_coupon))
     where :to_tier::text is not null
     union all
    select 1000002, 'coupon.issued', jsonb_build_object(
           'member_id', :member, 'member_number', :member_number::text,
           'coupon_id', c.coupon_id, 'template_id', c.template_id, 'issue_id', :tier_change_id,
           'source', 'tier', 'campaign_id', null, 'valid_from', c.valid_from,
           'valid_until', c.valid_until, 'may_message', {may_message(":member::uuid")})
      from tier_coupon c"""  # noqa: S608 - a constant consent reading of the member

PURCHASE_POSTING = posting_statement(PURCHASE_EVENT, events=TIER_EVENTS)
# With coupons: the redemptions join the same statement, and their check undoes the purchase
# if any coupon was taken in the meantime.
PURCHASE_WITH_COUPONS_POSTING = posting_statement(PURCHASE_EVENT + REDEEM_COUPONS,
                                                   check=COUPONS_CLAIMED, events=TIER_EVENTS)


async def record_purchase(
    conn: Connection, *, member: UUID | str, purchase: Purchase, terminal: TerminalPrincipal,
    idempotency: Idempotency, rulebook: RuleBook, programme: Programme, now: dt.datetime,
    group: PurchaseGroups | None = None,
) -> Outcome:
    """Earn and redeem for ``purchase``, its coupons included, in one statement, exactly once
    per idempotency key. A coupon that does not apply refuses the whole purchase (409, the
    reason in the problem's type): the till drops it, or fixes the basket, and sends again.
    With ``group``, a purchase with no coupons that reaches no tier may be written together
    with other requests' (``loyalty/points/groups.py``)."""
    _check_purchase(purchase, programme, now)
    refs = normalized_refs(purchase.coupons)
    # Which coupons the till names is read once; whether they are still unused is decided by
    # the write itself.
    candidates = await find_coupons(conn, refs) if refs else []
    template_ids = _template_ids(candidates)

    async def read(conn: Connection) -> tuple[MemberLedger, PurchaseRead]:
        # The measure's window depends on the rules, which come with the read: assume the
        # newest this process knows, and read again in the rare case they differ.
        assumed_version, assumed = await rulebook.newest(conn)
        for _ in range(3):
            tiers = assumed.tiers
            ledger, extra = await read_member_ledger_with(
                conn, member, _purchase_read(tiers), {
                    "store_id": terminal.store_id, "receipt_id": purchase.receipt_id,
                    "tier_window": current_window_start(tiers, now, programme.timezone),
                    "now": now, "template_ids": template_ids, "at": purchase.occurred_at},
                idempotency=idempotency)
            version, rules = await rulebook.at(conn, ledger.rules_version)
            if version == assumed_version or (
                    rules.tiers.measure, rules.tiers.period, bool(rules.tiers.levels)) == (
                    tiers.measure, tiers.period, bool(tiers.levels)):
                return ledger, extra
            assumed_version, assumed = version, rules
        raise AssertionError("earning rules changed three times during one read")

    async def build(ledger: MemberLedger, extra: PurchaseRead) -> Planned:
        if extra.receipt_taken:
            raise _receipt_taken(purchase)
        check_can_transact(ledger)
        checked = check_coupons(
            refs, candidates, lines=purchase.lines, store_code=terminal.store_code,
            now=purchase.occurred_at, member_id=ledger.member_id, usage=extra.coupon_usage)
        for index, coupon in enumerate(checked):
            if not coupon.valid:
                raise coupon_refused(coupon.check.reason or "unknown", coupon.check.detail,
                                     index)
        check_total(purchase, sum(c.check.discount for c in checked), quote=False)
        evaluation, posting = await _evaluate(conn, ledger, purchase, terminal.store_code,
                                              rulebook, programme, now, checked,
                                              extra.campaign_boosts)
        purchase_id = uuid7()
        links = Links(purchase_id=purchase_id)
        where = f"{terminal.store_code}, receipt {purchase.receipt_id}"
        if purchase.redeem_points:
            posting.draw(kind="redeem", points=purchase.redeem_points,
                         reason=f"Points used at {where}", source="purchase", links=links)
        if evaluation.points:
            posting.earn(kind="earn", points=evaluation.points,
                         reason=f"Purchase at {where}", source="purchase", links=links,
                         earned_at=purchase.occurred_at, available_at=evaluation.available_at,
                         expires_at=evaluation.expires_at, rule_version=evaluation.version,
                         trace=evaluation.earned_trace)
        posting.purchases = 1
        posting.birthday_bonus_year = evaluation.birthday_year
        reached = _tier_reached(evaluation.rules.tiers, ledger, extra, evaluation, purchase)
        posting.new_tier = reached.tier
        recorded = PurchaseRecorded(
            purchase_id=purchase_id, member_id=ledger.member_id, receipt_id=purchase.receipt_id,
            points_earned=evaluation.points, points_redeemed=purchase.redeem_points,
            balance=Balance(available=posting.available, pending=posting.pending),
            rule_version=evaluation.version, trace=evaluation.earned_trace,
            tier=posting.new_tier or ledger.tier, tier_reached=posting.new_tier,
            coupons=[c.check for c in checked],
            discount=sum(c.check.discount for c in checked),
        )
        coupons = redemption_values(checked) if checked else {}
        _emit_purchase_events(posting, ledger, purchase, purchase_id, terminal.store_code,
                              evaluation.points, checked, coupons)
        values = {
            "member_number": ledger.member_number,
            "purchase_id": purchase_id, "store_id": terminal.store_id,
            "terminal_id": terminal.terminal_id, "receipt_id": purchase.receipt_id,
            "occurred_at": purchase.occurred_at, "currency": purchase.currency,
            "total": purchase.total, "lines": purchase.lines,
            "points_earned": evaluation.points, "points_redeemed": purchase.redeem_points,
            "rule_version": evaluation.version, "tier_change_id": uuid7(),
            "from_tier": ledger.tier, "to_tier": posting.new_tier,
            "tier_measure": reached.measure, "tier_coupon_template_id": reached.coupon,
            "tier_coupon_id": uuid7(), "timezone": programme.timezone.key,
        }
        if not checked:
            return Planned(posting, 201, _encode(recorded), PURCHASE_POSTING, values,
                           groupable=posting.new_tier is None)
        return Planned(posting, 201, _encode(recorded), PURCHASE_WITH_COUPONS_POSTING,
                       values | coupons)

    try:
        outcome = await post(conn, read=read, build=build, idempotency=idempotency,
                             group=group.write if group is not None else None)
    except ClaimRefused as refused:
        # Between the read and the write another purchase took the coupon, or its budget.
        raise coupon_refused(refused.reason, _CLAIM_DETAIL.get(refused.reason, ""),
                             None) from None
    except asyncpg.UniqueViolationError as exc:
        # Two different keys for one receipt at the same moment: the index decides.
        if exc.constraint_name == "purchases_receipt":
            raise _receipt_taken(purchase) from None
        raise
    if not outcome.replayed:
        PURCHASES.inc()
        COUPON_REDEMPTIONS.inc(len(refs))
    return outcome


def _emit_purchase_events(
    posting: Posting, ledger: MemberLedger, purchase: Purchase, purchase_id: UUID,
    store_code: str, points: int, checked: Sequence[Checked], coupons: dict[str, Any],
) -> None:
    """purchase.recorded and a coupon.redeemed per coupon, written by the posting's statement
    (points.* follow from its entries; tier.changed and its coupon from ``tier_events``)."""
    member_id, number = ledger.member_id, ledger.member_number
    posting.emit("purchase.recorded", PurchaseRecordedData(
        member_id=member_id, member_number=number, purchase_id=purchase_id,
        store_code=store_code, receipt_id=purchase.receipt_id,
        occurred_at=purchase.occurred_at, currency=purchase.currency, total=purchase.total,
        discount=purchase.discount,
        lines=[EventLine(sku=line.sku, unit_price=line.unit_price, category=line.category,
                         quantity=line.quantity) for line in purchase.lines],
        points_earned=points, points_redeemed=purchase.redeem_points, coupons=len(checked)))
    if not coupons:
        return
    for redemption in zip(coupons["redemption_ids"], coupons["redemption_templates"],
                          coupons["redemption_coupons"], coupons["redemption_codes"],
                          coupons["redemption_discounts"], coupons["redemption_campaigns"],
                          strict=True):
        redemption_id, template_id, coupon_id, code, discount, campaign_id = redemption
        posting.emit("coupon.redeemed", CouponRedeemedData(
            member_id=member_id, member_number=number, redemption_id=redemption_id,
            template_id=template_id, coupon_id=coupon_id, code=code, purchase_id=purchase_id,
            discount=discount, campaign_id=campaign_id))


@dataclass(frozen=True)
class _TierReached:
    measure: int
    tier: str | None = None
    coupon: UUID | None = None


def _tier_reached(tiers: TierProgramme, ledger: MemberLedger, extra: PurchaseRead,
                  evaluation: _Evaluation, purchase: Purchase) -> _TierReached:
    """The measure with this purchase counted, and the level it moves the member up to, if any
    (with the coupon that level grants); downgrades are batch work (loyalty/points/tiers.py)."""
    measure = extra.tier_measure
    if not tiers.levels:
        return _TierReached(measure)
    if tiers.measure == "points":
        measure += evaluation.points
    elif purchase.occurred_at >= extra.tier_window:
        measure += purchase.total
    reached = tier_for(tiers, measure)
    if reached is not None and rank(tiers, reached.code) > rank(tiers, ledger.tier):
        return _TierReached(measure, reached.code, reached.coupon_template_id)
    return _TierReached(measure)


_CLAIM_DETAIL = {
    "already_used": "a coupon was used by another purchase a moment ago",
    "limit_reached": "a coupon's budget ran out a moment ago",
    "inactive": "a coupon was withdrawn a moment ago",
}


def coupon_refused(reason: str, detail: str, index: int | None) -> Conflict:
    """The whole purchase is refused for one coupon: its reason is in the problem's type."""
    field = f"coupons[{index}]" if index is not None else "coupons"
    return Conflict(f"coupon not applied: {detail}" if detail else "coupon not applied",
                    field=field, code=f"coupon_{reason}")


def _receipt_taken(purchase: Purchase) -> Conflict:
    return Conflict(f"receipt {purchase.receipt_id} is already recorded at this store",
                    field="receipt_id", code="receipt_already_recorded")

