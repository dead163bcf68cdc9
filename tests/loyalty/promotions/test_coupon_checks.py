"""Whether coupons apply to a basket: pure rules, checked on random baskets and coupons."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st

from loyalty.promotions.coupon_checks import Candidate, Template, check_coupons
from schemas.coupons import Discount, FixedAmount, FreeItem, PercentOff, PointsMultiplierDiscount
from schemas.points import CouponRef, PurchaseLine

NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
MEMBER = UUID(int=1)

discounts: st.SearchStrategy[Discount] = st.one_of(
    st.builds(FixedAmount, amount=st.integers(1, 5_000)),
    st.builds(PercentOff, percent=st.integers(1, 100),
              cap=st.one_of(st.none(), st.integers(1, 3_000))),
    st.builds(FreeItem, sku=st.sampled_from(["A", "B", "Z"])),
    st.builds(PointsMultiplierDiscount, percent=st.integers(101, 500)),
)
lines = st.lists(st.builds(
    PurchaseLine, sku=st.sampled_from(["A", "B", "C"]),
    category=st.sampled_from(["food", "drinks"]), unit_price=st.integers(0, 3_000),
    quantity=st.integers(1, 3)), min_size=1, max_size=6)


def template(discount: Discount, **fields: Any) -> Template:
    values: dict[str, Any] = {
        "template_id": uuid4(), "name": "T", "discount": discount, "min_spend": 0,
        "stores": (), "categories": (), "per_member_limit": None, "total_limit": None,
        "redeemed_count": 0, "stackable": True, "active": True, "on_return": "reinstate"}
    values.update(fields)
    return Template(**values)


def public(t: Template, code: str = "PUBLIC") -> Candidate:
    return Candidate(kind="public", code=code, coupon_id=None, template=t, valid_from=None,
                     valid_until=None, redeemed=False, owner=None, campaign_id=None)


templates = st.builds(
    lambda discount, min_spend, categories, stackable: template(
        discount, min_spend=min_spend, categories=categories, stackable=stackable),
    discounts, st.integers(0, 4_000),
    st.sampled_from([(), ("food",), ("drinks",)]), st.booleans())


@given(basket=lines, chosen=st.lists(templates, min_size=1, max_size=5))
def test_discounts_never_exceed_the_basket_or_the_lines_they_apply_to(
    basket: list[PurchaseLine], chosen: list[Template],
) -> None:
    refs = [CouponRef(code=f"C{i}") for i in range(len(chosen))]
    checked = check_coupons(refs, [public(t, f"C{i}") for i, t in enumerate(chosen)],
                            lines=basket, store_code="S", now=NOW, member_id=MEMBER, usage={})
    subtotal = sum(line.quantity * line.unit_price for line in basket)
    assert sum(c.check.discount for c in checked) <= subtotal
    valid = [c for c in checked if c.valid]
    for c in checked:
        assert c.check.discount >= 0
        assert c.valid == (c.check.reason is None)
        if not c.valid:
            assert c.check.discount == 0
            continue
        t = c.candidate.template if c.candidate else None
        assert t is not None
        eligible = sum(line.quantity * line.unit_price for line in basket
                       if not t.categories or line.category in t.categories)
        assert eligible >= t.min_spend
        assert c.check.discount <= eligible
        if len(valid) > 1:
            assert t.stackable
        if isinstance(t.discount, PointsMultiplierDiscount):
            assert c.check.points_percent == t.discount.percent


@given(basket=lines, redeemed=st.integers(0, 5), limit=st.integers(0, 5),
       count=st.integers(1, 6))
def test_a_budget_is_never_exceeded_within_one_basket(
    basket: list[PurchaseLine], redeemed: int, limit: int, count: int,
) -> None:
    shared = template(PointsMultiplierDiscount(percent=150), total_limit=max(limit, redeemed),
                      redeemed_count=redeemed)
    refs = [CouponRef(code="SAME")] * count
    checked = check_coupons(refs, [public(shared, "SAME")] * count, lines=basket,
                            store_code="S", now=NOW, member_id=MEMBER, usage={})
    assert sum(c.valid for c in checked) == min(count, max(limit, redeemed) - redeemed)


def test_per_member_limit_counts_past_use_and_this_basket() -> None:
    once = template(FixedAmount(amount=10), per_member_limit=2)
    refs = [CouponRef(code="P")] * 3
    basket = [PurchaseLine(sku="A", unit_price=1_000)]
    fresh = check_coupons(refs, [public(once, "P")] * 3, lines=basket, store_code="S",
                          now=NOW, member_id=MEMBER, usage={})
    assert [c.check.reason for c in fresh] == [None, None, "limit_reached"]
    used = check_coupons(refs[:1], [public(once, "P")], lines=basket, store_code="S",
                         now=NOW, member_id=MEMBER, usage={once.template_id: 2})
    assert [c.check.reason for c in used] == ["limit_reached"]
    anonymous = check_coupons(refs[:1], [public(once, "P")], lines=basket, store_code="S",
                              now=NOW, member_id=None, usage=None)
    assert [c.check.reason for c in anonymous] == [None]


def test_validity_edges_are_half_open() -> None:
    window = template(FixedAmount(amount=10))
    basket = [PurchaseLine(sku="A", unit_price=100)]

    def reason(valid_from: dt.datetime | None, valid_until: dt.datetime | None) -> str | None:
        candidate = Candidate(kind="code", code="X", coupon_id=None, template=window,
                              valid_from=valid_from, valid_until=valid_until, redeemed=False,
                              owner=None, campaign_id=None)
        (c,) = check_coupons([CouponRef(code="X")], [candidate], lines=basket,
                             store_code="S", now=NOW, member_id=None, usage=None)
        return c.check.reason

    assert reason(NOW, None) is None
    assert reason(NOW + dt.timedelta(microseconds=1), None) == "not_yet_valid"
    assert reason(None, NOW) == "expired"
    assert reason(None, NOW + dt.timedelta(microseconds=1)) is None
