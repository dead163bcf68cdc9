"""At the till: which coupons the till named, and whether each applies to the basket.

``find_coupons`` reads what each reference names in one statement; ``check_coupons`` then
decides with pure rules, no I/O, in order: is it found and the member's, is it usable now and
here, does it apply to the basket, does it stack with the others, and is any limit reached.
Redeeming is part of recording the purchase: ``loyalty.promotions.coupon_redemption``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import msgspec

from loyalty.core.db import Connection
from loyalty.promotions.codes import is_well_formed, normalize_code
from schemas.coupons import Discount, FixedAmount, FreeItem, PercentOff, PointsMultiplierDiscount
from schemas.points import CouponCheck, CouponReason, CouponRef, PurchaseLine


@dataclass(frozen=True)
class Template:
    """What deciding about a coupon needs to know of its template."""

    template_id: UUID
    name: str
    discount: Discount
    min_spend: int
    stores: tuple[str, ...]
    categories: tuple[str, ...]
    per_member_limit: int | None
    total_limit: int | None
    redeemed_count: int
    stackable: bool
    active: bool
    on_return: str


def _template_facts(row: Any, prefix: str = "") -> Template:
    return Template(
        template_id=row[prefix + "template_id"], name=row[prefix + "name"],
        discount=msgspec.convert(row[prefix + "discount"], Discount),
        min_spend=row[prefix + "min_spend"], stores=tuple(row[prefix + "stores"]),
        categories=tuple(row[prefix + "categories"]),
        per_member_limit=row[prefix + "per_member_limit"],
        total_limit=row[prefix + "total_limit"],
        redeemed_count=row[prefix + "redeemed_count"], stackable=row[prefix + "stackable"],
        active=row[prefix + "active"], on_return=row[prefix + "on_return"],
    )


@dataclass(frozen=True)
class Candidate:
    """A coupon the till named, as found: a shared public code, a single-use code, or a
    wallet coupon, with its template."""

    kind: Literal["public", "code", "wallet"]
    code: str | None
    coupon_id: UUID | None
    template: Template
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    redeemed: bool
    owner: UUID | None
    campaign_id: UUID | None


_FIND = """
with wanted as (
    select * from unnest($1::int[], $2::text[], $3::uuid[]) as w(position, code, coupon_id)
), found as (
    select w.position,
           case when pub.template_id is not null then 'public'
                when c.code is not null then 'code'
                when mc.coupon_id is not null then 'wallet' end as kind,
           coalesce(pub.template_id, c.template_id, mc.template_id) as template_id,
           case when pub.template_id is not null then pub.valid_from
                when c.code is not null then c.valid_from else mc.valid_from end as valid_from,
           case when pub.template_id is not null then pub.valid_until
                when c.code is not null then c.valid_until else mc.valid_until end
               as valid_until,
           coalesce(c.redeemed_at, mc.redeemed_at) is not null as redeemed,
           mc.member_id as owner, mc.campaign_id
      from wanted w
      left join coupon_templates pub on pub.public_code = w.code
      left join coupon_codes c on c.code = w.code and pub.template_id is null
                               and ($4::bool[])[w.position + 1]
      left join member_coupons mc on mc.coupon_id = w.coupon_id
)
select f.*, t.template_id as t_template_id, t.name as t_name, t.discount as t_discount,
       t.min_spend as t_min_spend, t.stores as t_stores, t.categories as t_categories,
       t.per_member_limit as t_per_member_limit, t.total_limit as t_total_limit,
       t.redeemed_count as t_redeemed_count, t.stackable as t_stackable, t.active as t_active,
       t.on_return as t_on_return
  from found f join coupon_templates t on t.template_id = f.template_id
"""


def normalized_refs(refs: Sequence[CouponRef]) -> list[CouponRef]:
    """The refs as looked up: codes normalised (``CouponRef`` holds a code or a coupon id)."""
    out = []
    for ref in refs:
        out.append(CouponRef(code=normalize_code(ref.code)) if ref.code is not None else ref)
    return out


async def find_coupons(conn: Connection, refs: Sequence[CouponRef]) -> list[Candidate | None]:
    """What each (normalised) ref names, in one statement; None where nothing is found. A
    code whose check character fails is not looked up as a generated code: it was mistyped
    (it may still be a shared public code)."""
    if not refs:
        return []
    rows = await conn.fetch(
        _FIND, list(range(len(refs))), [r.code for r in refs], [r.coupon_id for r in refs],
        [r.code is not None and is_well_formed(r.code) for r in refs])
    found: list[Candidate | None] = [None] * len(refs)
    for row in rows:
        ref = refs[row["position"]]
        found[row["position"]] = Candidate(
            kind=row["kind"], code=ref.code, coupon_id=ref.coupon_id,
            template=_template_facts(row, "t_"), valid_from=row["valid_from"],
            valid_until=row["valid_until"], redeemed=row["redeemed"], owner=row["owner"],
            campaign_id=row["campaign_id"])
    return found


@dataclass(frozen=True)
class Checked:
    """A coupon's check against the basket, and what redeeming it would write."""

    check: CouponCheck
    candidate: Candidate | None

    @property
    def valid(self) -> bool:
        return self.check.valid


# A reason a coupon is refused, with the detail the till shows.
Refusal = tuple[CouponReason, str]


def _amount(line: PurchaseLine) -> int:
    return line.quantity * line.unit_price


def _eligible_lines(template: Template, lines: list[PurchaseLine]) -> list[PurchaseLine]:
    """The lines the template applies to: all of them when it names no categories."""
    return [line for line in lines
            if not template.categories or line.category in template.categories]


def _money_off(template: Template, lines: list[PurchaseLine]) -> tuple[int | None, str]:
    """(discount, why) on the lines the template applies to; None with the reason when it
    cannot apply at all."""
    eligible = _eligible_lines(template, lines)
    base = sum(_amount(line) for line in eligible)
    match template.discount:
        case FreeItem(sku=sku):
            item = next((line for line in eligible if line.sku == sku), None)
            if item is None:
                return None, f"the basket holds no {sku}"
            return item.unit_price, f"one {sku} free"
        case PointsMultiplierDiscount(percent=percent):
            if not eligible:
                return None, "no line of the basket is in the coupon's categories"
            return 0, f"the purchase earns {percent}% of its base points"
        case FixedAmount(amount=amount):
            if base == 0:
                return None, "no line of the basket is in the coupon's categories"
            return min(amount, base), f"{amount} off"
        case PercentOff(percent=percent, cap=cap):
            if base == 0:
                return None, "no line of the basket is in the coupon's categories"
            off = base * percent // 100
            return (min(off, cap) if cap is not None else off), f"{percent}% off"
    raise AssertionError(f"unknown discount {template.discount!r}")


def _not_found(ref: CouponRef) -> Refusal:
    """Nothing has this ref: a mistyped generated code is told apart from an unknown one."""
    if ref.coupon_id is not None or (ref.code and is_well_formed(ref.code)):
        return "unknown", "no such coupon"
    return "unknown", "no such code: check it for a typo"


def _not_theirs(candidate: Candidate, member_id: UUID | None) -> Refusal | None:
    """A wallet coupon is usable only by the identified member who holds it."""
    if candidate.kind != "wallet":
        return None
    if member_id is None:
        return "unknown", "identify the member to use a wallet coupon"
    if candidate.owner != member_id:
        return "unknown", "no such coupon"
    return None


def _unusable(candidate: Candidate, *, store_code: str, now: dt.datetime) -> Refusal | None:
    """Whether the coupon itself can be used now, at this store, whatever the basket."""
    template = candidate.template
    if not template.active:
        return "inactive", "this coupon has been withdrawn"
    if candidate.valid_from is not None and now < candidate.valid_from:
        return "not_yet_valid", f"usable from {candidate.valid_from.isoformat()}"
    if candidate.valid_until is not None and now >= candidate.valid_until:
        return "expired", f"expired at {candidate.valid_until.isoformat()}"
    if candidate.redeemed:
        return "already_used", "this coupon has been used"
    if template.stores and store_code not in template.stores:
        return "wrong_store", "not usable at this store"
    return None


def _on_basket(
    template: Template, lines: list[PurchaseLine],
) -> tuple[CouponReason | None, str, int]:
    """(reason, detail, discount) of the template on this basket alone."""
    money, detail = _money_off(template, lines)
    if money is None:
        return "not_applicable", detail, 0
    eligible = sum(_amount(line) for line in _eligible_lines(template, lines))
    if eligible < template.min_spend:
        return ("below_minimum",
                f"needs a spend of {template.min_spend}; the basket has {eligible}", 0)
    return None, detail, money


def _alone(
    ref: CouponRef, candidate: Candidate | None, *, listed_twice: bool,
    lines: list[PurchaseLine], store_code: str, now: dt.datetime, member_id: UUID | None,
) -> tuple[CouponReason | None, str, int]:
    """One coupon's verdict on its own, the first refusal that applies: (reason, detail,
    discount), reason None when it applies."""
    if candidate is None:
        return (*_not_found(ref), 0)
    refusal = _not_theirs(candidate, member_id)
    if refusal is None and listed_twice and candidate.kind != "public":
        refusal = "already_used", "this coupon is listed twice"
    refusal = refusal or _unusable(candidate, store_code=store_code, now=now)
    if refusal is not None:
        return (*refusal, 0)
    return _on_basket(candidate.template, lines)


def _refuse_unstackable(
    verdicts: list[tuple[CouponReason | None, str]], candidates: Sequence[Candidate | None],
) -> None:
    """A coupon that does not stack cannot go with any other valid one."""
    valid = [i for i, (reason, _) in enumerate(verdicts) if reason is None]
    if len(valid) < 2:
        return
    for i in valid:
        candidate = candidates[i]
        assert candidate is not None
        if not candidate.template.stackable:
            verdicts[i] = ("not_stackable", "cannot be combined with other coupons")


def _over_limit(template: Template, n: int, usage: dict[UUID, int] | None) -> Refusal | None:
    """Whether redeeming the ``n``th coupon of the template in this basket passes a limit."""
    if template.total_limit is not None and template.redeemed_count + n > template.total_limit:
        return "limit_reached", "this coupon's budget is used up"
    if usage is not None and template.per_member_limit is not None and \
            usage.get(template.template_id, 0) + n > template.per_member_limit:
        return "limit_reached", f"usable {template.per_member_limit} time(s) per member"
    return None


def _refuse_over_limits(
    verdicts: list[tuple[CouponReason | None, str]], candidates: Sequence[Candidate | None],
    usage: dict[UUID, int] | None,
) -> None:
    """Limits count the coupons of a template this basket would redeem, in order; a refused
    coupon does not count."""
    in_basket: Counter[UUID] = Counter()
    for i, (reason, _) in enumerate(verdicts):
        candidate = candidates[i]
        if reason is not None or candidate is None:
            continue
        template = candidate.template
        n = in_basket[template.template_id] + 1
        refusal = _over_limit(template, n, usage)
        if refusal is None:
            in_basket[template.template_id] = n
        else:
            verdicts[i] = refusal


def _checked(
    ref: CouponRef, candidate: Candidate | None, reason: CouponReason | None, detail: str,
    off: int,
) -> Checked:
    percent = None
    if candidate is not None and reason is None and isinstance(
            candidate.template.discount, PointsMultiplierDiscount):
        percent = candidate.template.discount.percent
    return Checked(CouponCheck(
        valid=reason is None, reason=reason, detail=detail,
        code=ref.code, coupon_id=ref.coupon_id,
        template_id=candidate.template.template_id if candidate else None,
        name=candidate.template.name if candidate else None, discount=off,
        points_percent=percent), candidate)


def check_coupons(
    refs: Sequence[CouponRef], candidates: Sequence[Candidate | None], *,
    lines: list[PurchaseLine], store_code: str, now: dt.datetime, member_id: UUID | None,
    usage: dict[UUID, int] | None,
) -> list[Checked]:
    """Each coupon against the basket, in order: valid with its discount, or the first
    reason it is not. ``usage`` counts the member's redemptions per template (None: the
    member is unknown, so per-member limits are not checked). Discounts together never
    exceed the basket."""
    verdicts: list[tuple[CouponReason | None, str]] = []
    offs: list[int] = []
    seen: set[tuple[str | None, UUID | None]] = set()
    for ref, candidate in zip(refs, candidates, strict=True):
        key = (ref.code, ref.coupon_id)
        reason, detail, off = _alone(
            ref, candidate, listed_twice=key in seen, lines=lines, store_code=store_code,
            now=now, member_id=member_id)
        seen.add(key)
        verdicts.append((reason, detail))
        offs.append(off)
    _refuse_unstackable(verdicts, candidates)
    _refuse_over_limits(verdicts, candidates, usage)

    # Discounts are taken in order, each from what the ones before it left.
    subtotal = sum(_amount(line) for line in lines)
    out = []
    for ref, candidate, (reason, detail), off in zip(
            refs, candidates, verdicts, offs, strict=True):
        taken = min(off, subtotal) if reason is None else 0
        subtotal -= taken
        out.append(_checked(ref, candidate, reason, detail, taken))
    return out
