"""Code batches against the database: a drawn code that is already taken is drawn again, so a
batch always has exactly the codes asked for, and no existing code changes hands."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from loyalty.core.db import Connection
from loyalty.promotions import coupon_templates
from loyalty.promotions.codes import generate_codes
from loyalty.promotions.coupon_templates import create_template, generate_code_batch
from schemas.coupons import CouponTemplateCreate, FixedAmount

NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


async def test_a_drawn_code_already_taken_is_replaced_by_a_fresh_one(
    db: Connection, monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await create_template(db, CouponTemplateCreate(
        name="First", discount=FixedAmount(amount=10)), staff_id=None)
    second = await create_template(db, CouponTemplateCreate(
        name="Second", discount=FixedAmount(amount=20)), staff_id=None)
    (taken,) = (await generate_code_batch(
        db, first.template_id, count=1, prefix="", staff_id=None,
        now=NOW, tz="Asia/Tokyo")).codes
    taken_code = taken.replace("-", "")
    real = generate_codes

    def unlucky(count: int, prefix: str = "") -> Iterator[str]:
        # The first draw repeats the taken code (and itself); later draws are honest.
        monkeypatch.setattr(coupon_templates, "generate_codes", real)
        yield from [taken_code, taken_code]
        yield from real(count - 2, prefix)

    monkeypatch.setattr(coupon_templates, "generate_codes", unlucky)
    batch = await generate_code_batch(
        db, second.template_id, count=5, prefix="", staff_id=None,
        now=NOW, tz="Asia/Tokyo")
    assert len(batch.codes) == len(set(batch.codes)) == 5
    assert taken not in batch.codes
    owner = await db.fetchval("select template_id from coupon_codes where code = $1",
                              taken_code)
    assert owner == first.template_id
