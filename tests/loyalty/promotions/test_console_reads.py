"""The reads the console's Coupons and Events pages added: a template's code batches, one
batch's codes, an event's guests and its attendance counts."""

from __future__ import annotations

import datetime as dt

import pytest

from loyalty.core.db import Connection
from loyalty.core.errors import NotFound
from loyalty.members.filter import MemberFilter
from loyalty.promotions.coupon_templates import (
    code_batch,
    create_template,
    generate_code_batch,
    list_code_batches,
)
from loyalty.promotions.event_seats import cancel_reservation, reserve_seat
from loyalty.promotions.store_events import (
    create_event,
    event_attendance,
    event_guests,
    invite_members,
)
from schemas.coupons import CouponTemplateCreate, FixedAmount
from schemas.events import EventCreate
from tests.factories import insert_member, instant

NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


async def test_batches_list_newest_first_and_a_batch_reads_back_its_codes(
    db: Connection,
) -> None:
    template = await create_template(db, CouponTemplateCreate(
        name="T", discount=FixedAmount(amount=10)), staff_id=None)
    other = await create_template(db, CouponTemplateCreate(
        name="U", discount=FixedAmount(amount=10)), staff_id=None)
    made = [await generate_code_batch(db, template.template_id, count=n, prefix="AB",
                                      staff_id=None, now=NOW, tz="Asia/Tokyo")
            for n in (2, 3, 4)]
    first = await list_code_batches(db, template.template_id, limit=2, cursor=None)
    assert [b.count for b in first.items] == [4, 3]
    assert first.next_cursor is not None
    rest = await list_code_batches(db, template.template_id, limit=2, cursor=first.next_cursor)
    assert [b.count for b in rest.items] == [2]
    assert rest.next_cursor is None
    assert (await list_code_batches(db, other.template_id, limit=5, cursor=None)).items == []
    again = await code_batch(db, template.template_id, made[1].batch_id)
    assert again.codes == made[1].codes
    with pytest.raises(NotFound):
        await code_batch(db, other.template_id, made[1].batch_id)


async def test_guests_are_the_invited_the_seated_and_the_checked_in_with_counts(
    db: Connection,
) -> None:
    event = await create_event(db, EventCreate(
        name="E", place="P", starts_at=instant(NOW + dt.timedelta(days=1)),
        ends_at=instant(NOW + dt.timedelta(days=1, hours=2)), capacity=5, invitation_only=False),
        staff_id=None, now=NOW)  # type: ignore[arg-type]
    invited, seated, cancelled, stranger = [
        await insert_member(db, name) for name in ("招待", "予約", "取消", "無関係")]
    await invite_members(db, event_id=event.event_id, member_filter=MemberFilter.members(
        [invited, seated]), campaign_id=None, now=NOW)
    await reserve_seat(db, event_id=event.event_id, member_id=seated, now=NOW)
    await reserve_seat(db, event_id=event.event_id, member_id=cancelled, now=NOW)
    await cancel_reservation(db, event_id=event.event_id, member_id=cancelled, now=NOW)
    page = await event_guests(db, event.event_id, limit=1)
    assert page.next_cursor is not None
    rest = await event_guests(db, event.event_id, limit=5, cursor=page.next_cursor)
    guests = {g.member_id: g for g in page.items + rest.items}
    assert set(guests) == {invited, seated}
    assert guests[invited].invited_at == NOW
    assert guests[invited].reserved_at is None
    assert guests[seated].reserved_at == NOW
    assert guests[seated].checked_in_at is None
    assert stranger not in guests
    counts = await event_attendance(db, event.event_id)
    assert (counts.invited, counts.reserved, counts.checked_in) == (2, 1, 0)
