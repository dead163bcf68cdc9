"""Redeeming a purchase's coupons inside its posting statement, and giving them back on a full
return (docs/decisions/0008-coupon-redemption.md).

``loyalty/points/purchases.py`` adds ``REDEEM_COUPONS`` to the purchase's one posting statement
and ends it with ``COUPONS_CLAIMED``, and the database has the last word: a code or wallet coupon
is claimed only while unused, a template's count only rises while under its budget, and if
either fails the whole purchase is undone. ``loyalty/points/returns.py`` reads
``REINSTATABLE`` with the ledger and writes ``REINSTATE_COUPONS`` with the return.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from loyalty.core.ids import uuid7
from loyalty.promotions.coupon_checks import Checked

# The CTEs a purchase's posting gains when it carries coupons. Besides the posting's ``:member``
# and ``:now``, they use the purchase event's ``:purchase_id`` and ``:store_id``; their own
# parameters get their values from ``redemption_values``.
REDEEM_COUPONS = """
, codes_claimed as (
    update coupon_codes set redeemed_at = :now, member_id = :member, purchase_id = :purchase_id
     where code = any(:coupon_codes::text[]) and redeemed_at is null
       and exists (select 1 from bal)
    returning code
), wallet_claimed as (
    update member_coupons set redeemed_at = :now, purchase_id = :purchase_id
     where member_id = :member and coupon_id = any(:wallet_coupons::uuid[])
       and redeemed_at is null and exists (select 1 from bal)
    returning coupon_id
), budget as (
    update coupon_templates t set redeemed_count = t.redeemed_count + c.n
      from unnest(:budget_templates::uuid[], :budget_counts::int8[]) as c(template_id, n)
     where t.template_id = c.template_id and t.active
       and (t.total_limit is null or t.redeemed_count + c.n <= t.total_limit)
       and exists (select 1 from bal)
    returning t.template_id
), redeemed as (
    insert into coupon_redemptions (member_id, redemption_id, template_id, code, coupon_id,
                                    purchase_id, store_id, discount, campaign_id, redeemed_at)
    select :member, r.redemption_id, r.template_id, r.code, r.coupon_id, :purchase_id,
           :store_id, r.discount, r.campaign_id, :now
      from unnest(:redemption_ids::uuid[], :redemption_templates::uuid[],
                  :redemption_codes::text[], :redemption_coupons::uuid[],
                  :redemption_discounts::int8[], :redemption_campaigns::uuid[])
           as r(redemption_id, template_id, code, coupon_id, discount, campaign_id)
     where exists (select 1 from bal)
)"""

# The check that ends a posting carrying ``REDEEM_COUPONS``: any coupon not claimed undoes the
# whole purchase.
COUPONS_CLAIMED = """case when exists (select 1 from bal) then
    case when (select count(*) from codes_claimed) < cardinality(:coupon_codes::text[])
           or (select count(*) from wallet_claimed) < cardinality(:wallet_coupons::uuid[])
         then coupon_refused('already_used')
         when (select count(*) from budget) < cardinality(:budget_templates::uuid[])
         then coupon_refused(case when exists (
                  select 1 from coupon_templates
                   where template_id = any(:budget_templates::uuid[]) and not active)
              then 'inactive' else 'limit_reached' end)
    end end"""


def redemption_values(checked: Sequence[Checked]) -> dict[str, Any]:
    """The values of ``REDEEM_COUPONS``' parameters: what to claim, what to count."""
    used = [c.candidate for c in checked if c.valid and c.candidate is not None]
    per_template = Counter(c.template.template_id for c in used)
    ordered = sorted(per_template)  # one lock order for every purchase
    return {
        "coupon_codes": [c.code for c in used if c.kind == "code"],
        "wallet_coupons": [c.coupon_id for c in used if c.kind == "wallet"],
        "budget_templates": ordered, "budget_counts": [per_template[t] for t in ordered],
        "redemption_ids": [uuid7() for _ in used],
        "redemption_templates": [c.template.template_id for c in used],
        "redemption_codes": [c.code if c.kind != "wallet" else None for c in used],
        "redemption_coupons": [c.coupon_id if c.kind == "wallet" else None for c in used],
        "redemption_discounts": [c.check.discount for c in checked
                                 if c.valid and c.candidate is not None],
        "redemption_campaigns": [c.campaign_id for c in used],
    }


# A column of a return's ledger read: the purchase's redemptions that a full return gives back
# (``:purchase_member_id`` bought it, ``:purchase_id`` is it).
REINSTATABLE = """
       (select coalesce(jsonb_agg(jsonb_build_object(
                   'redemption_id', r.redemption_id, 'template_id', r.template_id,
                   'code', r.code, 'coupon_id', r.coupon_id)), '[]')
          from coupon_redemptions r join coupon_templates t using (template_id)
         where r.member_id = :purchase_member_id and r.purchase_id = :purchase_id
           and r.reinstated_at is null and t.on_return = 'reinstate') as reinstatable"""

# The CTEs a return's posting gains: a full return gives its coupons back (redemption marked,
# code or wallet coupon usable again, the template's count down). ``:reinstated_ids`` are the
# redemptions read as ``REINSTATABLE``.
REINSTATE_COUPONS = """
, reinstated as (
    update coupon_redemptions set reinstated_at = :now
     where member_id = :purchase_member_id and redemption_id = any(:reinstated_ids::uuid[])
       and reinstated_at is null and exists (select 1 from bal)
    returning template_id, code, coupon_id
), codes_back as (
    update coupon_codes c set redeemed_at = null, member_id = null, purchase_id = null
      from reinstated r where c.code = r.code
), wallet_back as (
    update member_coupons w set redeemed_at = null, purchase_id = null
      from reinstated r where w.member_id = :purchase_member_id and w.coupon_id = r.coupon_id
), budget_back as (
    update coupon_templates t set redeemed_count = t.redeemed_count - x.n
      from (select template_id, count(*) as n from reinstated group by template_id) x
     where t.template_id = x.template_id
)"""
