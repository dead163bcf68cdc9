"""Members of a named RFM segment, a keyset page at a time: the ones its count counts."""

from __future__ import annotations

import pytest

from loyalty.core.db import Connection
from loyalty.core.errors import NotFound
from loyalty.insights.rfm import (
    refresh_rfm,
    rfm_distribution,
    rfm_segment_members,
    segment_named,
)
from tests.loyalty.insights.test_rfm import NOW, hand_scored


async def test_a_segment_lists_its_members_a_page_at_a_time(db: Connection) -> None:
    people = await hand_scored(db)
    await refresh_rfm(db, now=NOW, window_days=365)
    # ben (R5 F1) is new and ann (R5 F5) a champion; dee (R1 F1) and eve (R2 F1), lost and
    # hibernating; gus (R4 F3) a potential loyalist; cal (R2 F3) at risk.
    await db.execute("update member_rfm set recency_score = 4, frequency_score = 4"
                     " where member_id = any($1::uuid[])", [people["cal"], people["gus"]])
    # Moved by hand to R4 F4, cal and gus are loyal.
    first = await rfm_segment_members(db, "loyal", limit=1)
    assert len(first.items) == 1
    assert first.next_cursor is not None
    second = await rfm_segment_members(db, "loyal", limit=1, cursor=first.next_cursor)
    assert second.next_cursor is None
    listed = {first.items[0].member_id, second.items[0].member_id}
    assert listed == {people["cal"], people["gus"]}
    champions = await rfm_segment_members(db, "champions")
    assert [m.member_id for m in champions.items] == [people["ann"]]
    assert champions.items[0].member_number
    assert (await rfm_segment_members(db, "need_attention")).items == []
    # Every segment's list is as long as the distribution's count of it.
    for segment in (await rfm_distribution(db)).segments:
        page = await rfm_segment_members(db, segment.name, limit=100)
        assert len(page.items) == segment.members


def test_a_segment_is_found_by_its_name_and_an_unknown_one_names_them_all() -> None:
    assert segment_named("at_risk") == "at_risk"
    with pytest.raises(NotFound, match=r"the segments are champions, loyal, .*, lost"):
        segment_named("vip")
