"""Redeeming a purchase's coupons inside its posting statement, and giving them back on a full
return (docs/decisions/0008-coupon-redemption.md).

``loyalty.points.purchases`` adds the statements of ``redemption_sql`` to the purchase's one
posting statement, and the database has the last word: a code or wallet coupon is claimed only
while unused, a template's count only rises while under its budget, and if either fails the
whole purchase is undone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from loyalty.core.ids import uuid7
from loyalty.points.ledger import EVENT_PARAMETERS_START
from loyalty.promotions.coupon_checks import Checked

# Parameter names of the redemption CTEs, in order; their values come from ``redemption_args``.
_REDEEM_PARAMETERS = ("codes", "wallet", "templates", "counts", "ids", "r_templates", "r_codes",
                      "r_coupons", "r_discounts", "r_campaigns")

_REDEEM = """
, codes_claimed as (
    update coupon_codes set redeemed_at = $2, member_id = $1, purchase_id = {purchase}
     where code = any({codes}::text[]) and redeemed_at is null and exists (select 1 from bal)
    returning code
), wallet_claimed as (
    update member_coupons set redeemed_at = $2, purchase_id = {purchase}
     where member_id = $1 and coupon_id = any({wallet}::uuid[]) and redeemed_at is null
       and exists (select 1 from bal)
    returning coupon_id
), budget as (
    update coupon_templates t set redeemed_count = t.redeemed_count + c.n
      from unnest({templates}::uuid[], {counts}::int8[]) as c(template_id, n)
     where t.template_id = c.template_id and t.active
       and (t.total_limit is null or t.redeemed_count + c.n <= t.total_limit)
       and exists (select 1 from bal)
    returning t.template_id
), redeemed as (
    insert into coupon_redemptions (member_id, redemption_id, template_id, code, coupon_id,
                                    purchase_id, store_id, discount, campaign_id, redeemed_at)
    select $1, r.redemption_id, r.template_id, r.code, r.coupon_id, {purchase}, {store},
           r.discount, r.campaign_id, $2
      from unnest({ids}::uuid[], {r_templates}::uuid[], {r_codes}::text[], {r_coupons}::uuid[],
                  {r_discounts}::int8[], {r_campaigns}::uuid[])
           as r(redemption_id, template_id, code, coupon_id, discount, campaign_id)
     where exists (select 1 from bal)
)"""

# Evaluated after the CTEs above: any coupon not claimed undoes the whole purchase.
_REDEEM_CHECK = """case when exists (select 1 from bal) then
    case when (select count(*) from codes_claimed) < cardinality({codes}::text[])
           or (select count(*) from wallet_claimed) < cardinality({wallet}::uuid[])
         then coupon_refused('already_used')
         when (select count(*) from budget) < cardinality({templates}::uuid[])
         then coupon_refused(case when exists (
                  select 1 from coupon_templates where template_id = any({templates}::uuid[])
                     and not active) then 'inactive' else 'limit_reached' end)
    end end"""


def redemption_sql(*, first: int, purchase: str, store: str) -> tuple[str, str]:
    """(CTEs, check) redeeming a purchase's coupons, their parameters numbered from the
    event's ``first``; ``purchase`` and ``store`` name the event's parameters for those."""
    slots = {name: f"${EVENT_PARAMETERS_START + first + index}"
             for index, name in enumerate(_REDEEM_PARAMETERS)}
    return (_REDEEM.format(purchase=purchase, store=store, **slots),
            _REDEEM_CHECK.format(**slots))


def redemption_args(checked: Sequence[Checked]) -> tuple[Any, ...]:
    """The values for ``redemption_sql``'s parameters: what to claim, what to count."""
    used = [c.candidate for c in checked if c.valid and c.candidate is not None]
    per_template = Counter(c.template.template_id for c in used)
    ordered = sorted(per_template)  # one lock order for every purchase
    discounts = [c.check.discount for c in checked if c.valid and c.candidate is not None]
    return (
        [c.code for c in used if c.kind == "code"],
        [c.coupon_id for c in used if c.kind == "wallet"],
        ordered, [per_template[t] for t in ordered],
        [uuid7() for _ in used], [c.template.template_id for c in used],
        [c.code if c.kind != "wallet" else None for c in used],
        [c.coupon_id if c.kind == "wallet" else None for c in used],
        discounts, [c.campaign_id for c in used],
    )


REDEMPTION_PARAMETERS = len(_REDEEM_PARAMETERS)

# What a return reads of the purchase's coupons: redemptions that a full return gives back.
REINSTATABLE_SQL = """
       (select coalesce(jsonb_agg(jsonb_build_object(
                   'redemption_id', r.redemption_id, 'template_id', r.template_id,
                   'code', r.code, 'coupon_id', r.coupon_id)), '[]')
          from coupon_redemptions r join coupon_templates t using (template_id)
         where r.member_id = $4 and r.purchase_id = $5 and r.reinstated_at is null
           and t.on_return = 'reinstate') as reinstatable"""

# A full return gives its coupons back: redemption marked, code or wallet coupon usable again,
# the template's count down.
REINSTATE_SQL = """
, reinstated as (
    update coupon_redemptions set reinstated_at = $2
     where member_id = {member} and redemption_id = any({ids}::uuid[])
       and reinstated_at is null and exists (select 1 from bal)
    returning template_id, code, coupon_id
), codes_back as (
    update coupon_codes c set redeemed_at = null, member_id = null, purchase_id = null
      from reinstated r where c.code = r.code
), wallet_back as (
    update member_coupons w set redeemed_at = null, purchase_id = null
      from reinstated r where w.member_id = {member} and w.coupon_id = r.coupon_id
), budget_back as (
    update coupon_templates t set redeemed_count = t.redeemed_count - x.n
      from (select template_id, count(*) as n from reinstated group by template_id) x
     where t.template_id = x.template_id
)"""
