"""Purchases and returns at the till: quote, record, return, each through the ledger's ``post``.

A terminal's write is idempotent by its ``Idempotency-Key``: the key is written in the same
statement as the points, with the response, so a retry after any failure either finds the
stored response or finds nothing done. A receipt is recorded once per store whatever the key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from loyalty.access.principals import TerminalPrincipal
from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InsufficientPoints, InvalidInput, NotFound
from loyalty.core.idempotency import Idempotency
from loyalty.core.ids import uuid7
from loyalty.core.metrics import COUPON_REDEMPTIONS, PURCHASES
from loyalty.core.settings import Settings
from loyalty.points.earning import (
    PurchaseFacts,
    available_at,
    expired_on_arrival,
    expires_at,
    purchase_points,
    redeemable_points,
)
from loyalty.points.ledger import (
    EVENT_PARAMETERS_START,
    ClaimRefused,
    Links,
    MemberLedger,
    Outcome,
    Planned,
    Posting,
    event_statement,
    ledger_query,
    post,
    read_ledger,
)
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
    REINSTATABLE_SQL,
    REINSTATE_SQL,
    redemption_args,
    redemption_sql,
)
from schemas.base import json_encoder
from schemas.coupons import CouponValidation, CouponValidationResult
from schemas.points import (
    Balance,
    CouponRef,
    Purchase,
    PurchaseLine,
    PurchaseRecorded,
    Quote,
    ReinstatedCoupon,
    ReturnRecorded,
    ReturnRequest,
)
from schemas.rules import EarningRules, TierProgram

_encode = json_encoder.encode
# A till's clock may run a little ahead; a purchase further in the future is a mistake.
CLOCK_SKEW = dt.timedelta(minutes=5)
MERGE_HOPS = 5


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


async def read_member_ledger(
    conn: Connection, member: UUID | str, *, idempotency: Idempotency | None = None,
    query: str | None = None, extra_args: tuple[Any, ...] = (),
) -> MemberLedger:
    """The ledger of ``member`` (id or number), following merges to the surviving member."""
    principal_id = idempotency.principal_id if idempotency else None
    key = idempotency.key if idempotency else None
    if isinstance(member, str):
        ledger = await read_ledger(conn, member, principal_id=principal_id, idempotency_key=key)
        if query is not None:
            ledger = await read_ledger(conn, ledger.member_id, principal_id=principal_id,
                                       idempotency_key=key, query=query, extra_args=extra_args)
    else:
        ledger = await read_ledger(conn, member, principal_id=principal_id, idempotency_key=key,
                                   query=query, extra_args=extra_args)
    for _ in range(MERGE_HOPS):
        if ledger.status != "merged" or ledger.merged_into is None:
            break
        ledger = await read_ledger(conn, ledger.merged_into, principal_id=principal_id,
                                   idempotency_key=key, query=query, extra_args=extra_args)
    if ledger.status in ("erased", "merged"):
        raise NotFound("no such member", field="member", code="member_not_found")
    return ledger


def _check_can_transact(ledger: MemberLedger) -> None:
    if ledger.status == "suspended":
        raise Conflict("this member is suspended and cannot earn or spend points",
                       field="member", code="member_suspended")


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
    earned_trace: Any
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
    earned = purchase_points(rules, version, facts, programme.timezone,
                             ceiling=programme.max_points_per_purchase)
    expiry = expires_at(rules.expiry, purchase.occurred_at, programme.timezone)
    if expiry is not None and expiry <= now:
        earned = expired_on_arrival(earned, expiry, programme.timezone)
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
    _check_can_transact(ledger)
    checked = await check_basket_coupons(
        conn, purchase.coupons, lines=purchase.lines, member_id=ledger.member_id,
        store_code=terminal.store_code, at=purchase.occurred_at)
    boosts = _boosts(await conn.fetchval(
        "select " + _CAMPAIGN_BOOSTS.format(member="$1::uuid", at="$2::timestamptz"),
        ledger.member_id, purchase.occurred_at))
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
        usage = _usage(await conn.fetchval(
            "select " + _COUPON_USAGE.format(member="$1", templates="$2"),
            member_id, _template_ids(candidates)))
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


def _usage(raw: Any) -> dict[UUID, int]:
    return {UUID(key): int(value) for key, value in (raw or {}).items()}


def _boosts(raw: Any) -> list[tuple[str, int]]:
    return [(str(name), int(percent)) for name, percent in raw or ()]


# The points multipliers of launched campaigns treating the member at the purchase's moment,
# as [name, percent] pairs.
_CAMPAIGN_BOOSTS = """
(select coalesce(jsonb_agg(jsonb_build_array(c.name, (c.action->>'percent')::int)
                           order by c.campaign_id), '[]')
   from campaign_members cm join campaigns c on c.campaign_id = cm.campaign_id
  where cm.member_id = {member} and cm.arm = 'treated' and c.status = 'launched'
    and c.action->>'type' = 'points_multiplier'
    and c.starts_at <= {at} and c.ends_at > {at})"""


# How often the member (and members merged into them) has used each coupon template in $8:
# read with the ledger, so the balance's version makes per-member limits exact.
_COUPON_USAGE = """
case when cardinality({templates}::uuid[]) = 0 then '{{}}'::jsonb else (
    select coalesce(jsonb_object_agg(u.template_id, u.n), '{{}}') from (
        select r.template_id, count(*) as n from coupon_redemptions r
         where r.member_id = any(array(
                   select {member}::uuid union all
                   select mm.member_id from members mm where mm.merged_into = {member}))
           and r.template_id = any({templates}::uuid[]) and r.reinstated_at is null
         group by r.template_id) u) end"""

# A receipt recorded before (under another key) is refused before anything is evaluated; the
# tier measure so far ($6: window start, $7: now) is read with the balance it goes with.
_purchase_ledgers: dict[tuple[str, bool], str] = {}


def _purchase_ledger(program: TierProgram) -> str:
    key = (program.measure, bool(program.levels))
    if key not in _purchase_ledgers:
        measure = measure_sql(program, "m.member_id", "$6", "$7") if program.levels \
            else "case when $6::timestamptz < $7::timestamptz then 0 else 0 end"
        _purchase_ledgers[key] = ledger_query("id", extra=f""",
       exists (select 1 from purchases where store_id = $4 and receipt_id = $5)
           as receipt_taken,
       ({measure})::bigint as tier_measure,
       ({_COUPON_USAGE.format(member="m.member_id", templates="$8")}) as coupon_usage,
       {_CAMPAIGN_BOOSTS.format(member="m.member_id", at="$9::timestamptz")}
           as campaign_boosts""")
    return _purchase_ledgers[key]

_PURCHASE_PARAMETERS = 18
_PURCHASE_EVENT = event_statement("""
, purchase as (
    insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id,
                           occurred_at, currency, total, lines, points_earned, points_redeemed,
                           rule_version, recorded_at)
    select $1, {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, $2
     where exists (select 1 from bal)
), activity as (
    update members set last_activity_at = greatest(last_activity_at, {4})
     where member_id = $1 and exists (select 1 from bal)
), tier_coupon as (
    insert into member_coupons (member_id, coupon_id, template_id, issue_id, source, issued_at,
                                valid_from, valid_until)
    select $1, {16}, t.template_id, {11}, 'tier', $2,
           case when t.valid_days is null then t.valid_from else $2 end,
           case when t.valid_days is null then t.valid_until
                else coupon_valid_until($2, t.valid_days, {17}) end
      from coupon_templates t
     where t.template_id = {15}::uuid and t.active and {13}::text is not null
       and exists (select 1 from bal)
    returning coupon_id
), tier_change as (
    insert into member_tiers (member_id, change_id, from_tier, to_tier, reason, measure,
                              purchase_id, changed_at, coupon_id)
    select $1, {11}, {12}, {13}, 'purchase reached the threshold', {14}, {0}, $2,
           (select coupon_id from tier_coupon)
     where {13}::text is not null and exists (select 1 from bal)
)""", _PURCHASE_PARAMETERS)
# With coupons: the redemptions join the same statement, and its check undoes the purchase if
# any coupon was taken in the meantime.
_COUPON_CTES, _COUPON_CHECK = redemption_sql(
    first=_PURCHASE_PARAMETERS, purchase=f"${EVENT_PARAMETERS_START}",
    store=f"${EVENT_PARAMETERS_START + 1}")
_PURCHASE_WITH_COUPONS_EVENT = _PURCHASE_EVENT + _COUPON_CTES


async def record_purchase(
    conn: Connection, *, member: UUID | str, purchase: Purchase, terminal: TerminalPrincipal,
    idempotency: Idempotency, rulebook: RuleBook, programme: Programme, now: dt.datetime,
) -> Outcome:
    """Earn and redeem for ``purchase``, its coupons included, in one statement, exactly once
    per idempotency key. A coupon that does not apply refuses the whole purchase (409, the
    reason in the problem's type): the till drops it, or fixes the basket, and sends again."""
    _check_purchase(purchase, programme, now)
    refs = normalized_refs(purchase.coupons)
    # Which coupons the till names is read once; whether they are still unused is decided by
    # the write itself.
    candidates = await find_coupons(conn, refs) if refs else []
    template_ids = _template_ids(candidates)

    async def read(conn: Connection) -> MemberLedger:
        # The measure's window depends on the rules, which come with the read: assume the
        # newest this process knows, and read again in the rare case they differ.
        assumed_version, assumed = await rulebook.newest(conn)
        for _ in range(3):
            program = assumed.tiers
            window = current_window_start(program, now, programme.timezone)
            ledger = await read_member_ledger(
                conn, member, idempotency=idempotency, query=_purchase_ledger(program),
                extra_args=(terminal.store_id, purchase.receipt_id, window, now,
                            template_ids, purchase.occurred_at))
            version, rules = await rulebook.at(conn, ledger.rules_version)
            if version == assumed_version or (
                    rules.tiers.measure, rules.tiers.period, bool(rules.tiers.levels)) == (
                    program.measure, program.period, bool(program.levels)):
                ledger.extra["tier_window"] = window
                return ledger
            assumed_version, assumed = version, rules
        raise AssertionError("earning rules changed three times during one read")

    async def build(ledger: MemberLedger) -> Planned:
        if ledger.extra["receipt_taken"]:
            raise _receipt_taken(purchase)
        _check_can_transact(ledger)
        checked = check_coupons(
            refs, candidates, lines=purchase.lines, store_code=terminal.store_code,
            now=purchase.occurred_at, member_id=ledger.member_id,
            usage=_usage(ledger.extra["coupon_usage"]))
        for index, coupon in enumerate(checked):
            if not coupon.valid:
                raise coupon_refused(coupon.check.reason or "unknown", coupon.check.detail,
                                     index)
        check_total(purchase, sum(c.check.discount for c in checked), quote=False)
        evaluation, posting = await _evaluate(conn, ledger, purchase, terminal.store_code,
                                              rulebook, programme, now, checked,
                                              _boosts(ledger.extra["campaign_boosts"]))
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
        program = evaluation.rules.tiers
        tier_coupon: UUID | None = None
        measure = int(ledger.extra["tier_measure"] or 0)
        if program.levels:
            if program.measure == "points":
                measure += evaluation.points
            elif purchase.occurred_at >= ledger.extra["tier_window"]:
                measure += purchase.total
            reached = tier_for(program, measure)
            if reached is not None and rank(program, reached.code) > rank(program, ledger.tier):
                posting.new_tier = reached.code
                tier_coupon = reached.coupon_template_id
        recorded = PurchaseRecorded(
            purchase_id=purchase_id, member_id=ledger.member_id, receipt_id=purchase.receipt_id,
            points_earned=evaluation.points, points_redeemed=purchase.redeem_points,
            balance=Balance(available=posting.available, pending=posting.pending),
            rule_version=evaluation.version, trace=evaluation.earned_trace,
            tier=posting.new_tier or ledger.tier, tier_reached=posting.new_tier,
            coupons=[c.check for c in checked],
            discount=sum(c.check.discount for c in checked),
        )
        args = (purchase_id, terminal.store_id, terminal.terminal_id, purchase.receipt_id,
                purchase.occurred_at, purchase.currency, purchase.total, purchase.lines,
                evaluation.points, purchase.redeem_points, evaluation.version,
                uuid7(), ledger.tier, posting.new_tier, measure,
                tier_coupon, uuid7(), programme.timezone.key)
        if not checked:
            return Planned(posting, 201, _encode(recorded), _PURCHASE_EVENT, args)
        return Planned(posting, 201, _encode(recorded), _PURCHASE_WITH_COUPONS_EVENT,
                       args + redemption_args(checked), _COUPON_CHECK)

    try:
        outcome = await post(conn, read=read, build=build, idempotency=idempotency)
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


# -- returns ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bought:
    """The parts of a purchase that never change after it is recorded."""

    member_id: UUID
    purchase_id: UUID
    store_id: UUID
    receipt_id: str
    total: int
    lines: list[PurchaseLine]
    points_earned: int
    points_redeemed: int
    earn_lot_id: UUID | None
    redeemed_from: list[tuple[UUID, int, dt.datetime | None]]


async def _find_purchase(conn: Connection, purchase_id: UUID, store_id: UUID) -> _Bought:
    row = await conn.fetchrow(
        """
        select p.member_id, p.purchase_id, p.store_id, p.receipt_id, p.total, p.lines,
               p.points_earned, p.points_redeemed,
               (select l.lot_id from point_entries e
                  join point_lots l on l.member_id = e.member_id and l.entry_id = e.entry_id
                 where e.member_id = p.member_id and e.purchase_id = p.purchase_id
                   and e.kind = 'earn' limit 1) as earn_lot_id,
               (select array_agg((a.lot_id, -a.points, l.expires_at)
                                 order by l.expires_at nulls last, l.earned_at, l.lot_id)
                  from point_entries e
                  join point_allocations a on a.member_id = e.member_id
                                          and a.entry_id = e.entry_id
                  join point_lots l on l.member_id = a.member_id and l.lot_id = a.lot_id
                 where e.member_id = p.member_id and e.purchase_id = p.purchase_id
                   and e.kind = 'redeem') as redeemed_from
          from purchases p
         where p.purchase_id = $1 and p.store_id = $2
        """,
        purchase_id, store_id,
    )
    if row is None:
        # Another store's purchase is not this terminal's to see, so it is not found either.
        raise NotFound("no such purchase at this store", field="purchase_id",
                       code="purchase_not_found")
    return _Bought(
        row["member_id"], row["purchase_id"], row["store_id"], row["receipt_id"], row["total"],
        msgspec.convert(row["lines"], list[PurchaseLine]), row["points_earned"],
        row["points_redeemed"], row["earn_lot_id"],
        [tuple(r) for r in row["redeemed_from"] or ()],
    )


# What has been returned so far, read in the same statement as the ledger it changes.
_RETURN_LEDGER = ledger_query("id", extra=""",
       (select returned_amount from purchases where member_id = $4 and purchase_id = $5)
           as returned_amount,
       (select coalesce(sum(points_reversed + points_shortfall), 0) from purchase_returns
         where member_id = $4 and purchase_id = $5) as reversed_so_far,
       (select coalesce(sum(points_restored + points_not_restored), 0) from purchase_returns
         where member_id = $4 and purchase_id = $5) as restored_so_far,
       (select coalesce(jsonb_agg(lines), '[]') from purchase_returns
         where member_id = $4 and purchase_id = $5) as returned_lines,
       (select array_agg(lot_id) from point_lots
         where member_id = m.member_id and (lot_id = $6 or origin_lot_id = $6)) as earn_lots,
       """ + REINSTATABLE_SQL.strip())

_RETURN_EVENT = event_statement("""
, returned as (
    insert into purchase_returns (member_id, return_id, purchase_id, terminal_id, amount, lines,
                                  points_reversed, points_restored, points_shortfall,
                                  points_not_restored, recorded_at)
    select {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, $2
     where exists (select 1 from bal)
), purchase as (
    update purchases set returned_amount = returned_amount + {4}
     where member_id = {0} and purchase_id = {2} and exists (select 1 from bal)
)""" + REINSTATE_SQL.format(member="{0}", ids="{10}"), 11)


def _returned_quantities(bought: _Bought, returned_lines: list[Any]) -> list[int]:
    quantities = [0] * len(bought.lines)
    for lines in returned_lines:
        for line in lines or ():
            quantities[line["line"]] += line["quantity"]
    return quantities


def _amount_of_lines(bought: _Bought, request: ReturnRequest, already: list[int]) -> int:
    """The share of the total paid for the returned units, exact to the last unit: the
    amount for the first q units of a line is share × q // quantity, cumulatively."""
    from loyalty.points.earning import _allocate

    shares = _allocate(bought.total, [li.quantity * li.unit_price for li in bought.lines])
    wanted = [0] * len(bought.lines)
    for returned in request.lines or ():
        if returned.line >= len(bought.lines):
            raise InvalidInput(f"the purchase has no line {returned.line}", field="lines",
                               code="no_such_line")
        wanted[returned.line] += returned.quantity
    amount = 0
    for index, line in enumerate(bought.lines):
        if not wanted[index]:
            continue
        if already[index] + wanted[index] > line.quantity:
            raise InvalidInput(
                f"line {index} ({line.sku}): {line.quantity} bought, {already[index]} already "
                f"returned, {wanted[index]} more asked", field="lines",
                code="return_exceeds_purchase")
        before = shares[index] * already[index] // line.quantity
        after = shares[index] * (already[index] + wanted[index]) // line.quantity
        amount += after - before
    return amount


def _fill(amount: int, capacities: list[int]) -> list[int]:
    """``amount`` poured into ``capacities`` in order."""
    out = []
    for capacity in capacities:
        take = min(amount, capacity)
        out.append(take)
        amount -= take
    return out


async def record_return(
    conn: Connection, *, purchase_id: UUID, request: ReturnRequest, terminal: TerminalPrincipal,
    idempotency: Idempotency, now: dt.datetime,
) -> Outcome:
    """Reverse earned points and give back redeemed ones in proportion to what is returned.

    Earned points come back first from the purchase's own lot, then from the member's other
    spendable points; what is already spent beyond that is a shortfall, written off and
    reported. Redeemed points are given back with the expiry they had; points whose expiry
    has passed are not given back, and the response says so.
    """
    bought: _Bought | None = None

    async def read(conn: Connection) -> MemberLedger:
        nonlocal bought
        bought = await _find_purchase(conn, purchase_id, terminal.store_id)
        return await read_member_ledger(
            conn, bought.member_id, idempotency=idempotency, query=_RETURN_LEDGER,
            extra_args=(bought.member_id, bought.purchase_id, bought.earn_lot_id))

    async def build(ledger: MemberLedger) -> Planned:
        assert bought is not None
        extra = ledger.extra
        already = _returned_quantities(bought, extra["returned_lines"])
        if request.lines is not None:
            amount = _amount_of_lines(bought, request, already)
        else:
            amount = request.amount or 0
        returned_before = int(extra["returned_amount"])
        if amount <= 0 or returned_before + amount > bought.total:
            raise InvalidInput(
                f"{bought.total} was paid and {returned_before} already returned: "
                f"{amount} more is more than was bought", field="amount",
                code="return_exceeds_purchase")
        cumulative = returned_before + amount
        reverse = bought.points_earned * cumulative // bought.total - int(
            extra["reversed_so_far"]) if bought.total else 0
        restore_target = bought.points_redeemed * cumulative // bought.total if bought.total \
            else 0
        restore = restore_target - int(extra["restored_so_far"])

        return_id = uuid7()
        links = Links(purchase_id=bought.purchase_id, return_id=return_id)
        posting = Posting(ledger, now)
        what = f"Return at {terminal.store_code}, receipt {bought.receipt_id}"
        reversed_points, shortfall = posting.take_back(
            points=reverse, first_from=list(extra["earn_lots"] or ()), reason=what,
            source="return", links=links)
        restored = not_restored = 0
        previous = _fill(int(extra["restored_so_far"]), [p for _, p, _ in bought.redeemed_from])
        now_filled = _fill(restore_target, [p for _, p, _ in bought.redeemed_from])
        restore_entry = uuid7()
        for (_, _, lot_expiry), before, after in zip(
                bought.redeemed_from, previous, now_filled, strict=True):
            points = after - before
            if points <= 0:
                continue
            if lot_expiry is not None and lot_expiry <= now:
                not_restored += points
                continue
            posting.earn(kind="reverse", points=points, reason=f"Points given back: {what}",
                         source="return", links=links, earned_at=now, available_at=now,
                         expires_at=lot_expiry, entry_id=restore_entry)
            restored += points
        posting.redeemed -= restored
        assert restored + not_restored == restore
        notes = []
        if shortfall:
            notes.append(f"{shortfall} of the points to reverse were already spent: written off")
        if not_restored:
            notes.append(f"{not_restored} points used on this purchase had expired and were "
                         "not given back")
        # A purchase returned in full gives back the coupons used on it, where their
        # templates say so (a coupon past its validity comes back expired, and stays so).
        reinstated = list(extra["reinstatable"]) if cumulative == bought.total else []
        body = ReturnRecorded(
            return_id=return_id, purchase_id=bought.purchase_id, member_id=ledger.member_id,
            amount=amount, points_reversed=reversed_points, points_restored=restored,
            points_shortfall=shortfall, points_not_restored=not_restored,
            balance=Balance(available=posting.available, pending=posting.pending), notes=notes,
            coupons_reinstated=[ReinstatedCoupon(
                template_id=UUID(c["template_id"]), code=c["code"],
                coupon_id=UUID(c["coupon_id"]) if c["coupon_id"] else None)
                for c in reinstated],
        )
        returned = [{"line": li.line, "quantity": li.quantity} for li in request.lines or ()]
        return Planned(
            posting, 201, _encode(body), _RETURN_EVENT,
            (bought.member_id, return_id, bought.purchase_id, terminal.terminal_id, amount,
             returned, reversed_points, restored, shortfall, not_restored,
             [UUID(c["redemption_id"]) for c in reinstated]),
        )

    return await post(conn, read=read, build=build, idempotency=idempotency)
