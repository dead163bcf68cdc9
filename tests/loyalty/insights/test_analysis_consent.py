"""Withdrawing ``data_analysis`` on a real PostgreSQL (docs/privacy.md, "Consent"): the member's
scores go in the transaction of the withdrawal, the next RFM refresh, at-risk run and churn
scoring pass them by, segments built on those scores (and campaigns to them) leave them out,
while the aggregates (RFM thresholds, the churn fit) still count them; granting it again brings
them back at the next run. Members never asked are scored."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from uuid import UUID

from loyalty.access.staff import create_staff
from loyalty.core.db import Connection
from loyalty.core.programme import Programme
from loyalty.insights.at_risk import flag_at_risk
from loyalty.insights.churn_model import fit_and_score
from loyalty.insights.rfm import member_rfm, refresh_rfm, rfm_segment_members
from loyalty.members.merge import merge_members
from loyalty.members.profiles import record_consents
from loyalty.points.rules import RuleBook
from loyalty.promotions.campaigns import campaign_reach, create_campaign, launch_campaign
from loyalty.promotions.segments import (
    compile_definition,
    create_segment,
    preview_segment,
    profiles,
)
from schemas.campaigns import BonusPoints, CampaignCreate
from schemas.members import ConsentChoice
from schemas.segments import (
    AllOf,
    AtRiskCondition,
    ChurnRiskCondition,
    ConsentCondition,
    Not,
    RfmCondition,
    SegmentCreate,
    StatusCondition,
)
from tests.factories import AT_RISK_NOW, TOKYO, Shop, hand_flagged
from tests.loyalty.insights.test_rfm import NOW, hand_scored, scores


async def choose(conn: Connection, member_id: UUID, granted: bool) -> None:
    """The member's own choice on data_analysis, as PUT /v1/me/consents records it."""
    await record_consents(
        conn, member_id,
        [ConsentChoice(purpose="data_analysis", granted=granted, text_version="privacy-2026")],
        actor_kind="member", actor_id=member_id)
    # Choices in one transaction share recorded_at (now()); the latest is the one with the
    # later consent id, whose time part counts milliseconds.
    await asyncio.sleep(0.005)


async def selected(conn: Connection, people: dict[str, UUID], definition: Any,
                   now: dt.datetime) -> set[str]:
    names = {member_id: name for name, member_id in people.items()}
    member_filter = compile_definition(definition, now=now)
    found = await conn.fetch(f"select m.member_id from members m where {member_filter.render(1)}",  # noqa: S608 - a MemberFilter rendered with $n slots
                             *member_filter.params)
    return {names[r["member_id"]] for r in found if r["member_id"] in names}


async def rows_of(conn: Connection, table: str, member_id: UUID) -> int:
    return int(await conn.fetchval(
        f"select count(*) from {table} where member_id = $1", member_id))  # noqa: S608 - a table name from the test


async def test_withdrawing_removes_the_member_from_rfm_and_granting_brings_them_back(
    db: Connection,
) -> None:
    people = await hand_scored(db)
    assert await refresh_rfm(db, now=NOW, window_days=365) == {
        "members": 6, "changed": 6, "removed": 0}
    before = await scores(db)
    champions = RfmCondition(recency=[5], frequency=[5])
    assert await selected(db, people, champions, NOW) == {"ann"}

    await choose(db, people["ann"], False)
    # Gone in the transaction of the withdrawal, before any refresh.
    assert await member_rfm(db, people["ann"]) is None
    assert await refresh_rfm(db, now=NOW, window_days=365) == {
        "members": 5, "changed": 0, "removed": 0}
    after = await scores(db)
    assert people["ann"] not in after
    # Her purchases still shape the thresholds the others are scored against: nobody else's
    # scores move.
    assert after == {member: row for member, row in before.items() if member != people["ann"]}
    assert await selected(db, people, champions, NOW) == set()
    # Not in the complement either: "not a champion" is a judgement about her too.
    assert "ann" not in await selected(db, people, Not(condition=champions), NOW)
    assert "ann" in await selected(db, people, StatusCondition(statuses=["active"]), NOW)
    preview = await preview_segment(db, champions, sample_size=10, now=NOW)
    assert people["ann"] not in {s.member_id for s in preview.sample or ()}

    await choose(db, people["ann"], True)
    assert await refresh_rfm(db, now=NOW, window_days=365) == {
        "members": 6, "changed": 1, "removed": 0}
    assert await scores(db) == before
    assert await selected(db, people, champions, NOW) == {"ann"}


async def test_a_member_who_withdrew_is_removed_at_the_next_refresh_if_a_row_slipped_in(
    db: Connection,
) -> None:
    people = await hand_scored(db)
    await choose(db, people["ben"], False)
    # A refresh that read the consents before the withdrawal committed would leave a row;
    # the next refresh drops it, and no segment reads it meanwhile.
    await db.execute(
        """
        insert into member_rfm (member_id, last_purchase_at, recency_days, frequency, monetary,
                                recency_score, frequency_score, monetary_score, window_days,
                                computed_at)
        values ($1, $2, 1, 1, 6000, 5, 1, 2, 365, $2)
        """, people["ben"], NOW)
    assert "ben" not in await selected(db, people, RfmCondition(recency=[5]), NOW)
    listed = await rfm_segment_members(db, "new")
    assert people["ben"] not in {m.member_id for m in listed.items}
    result = await refresh_rfm(db, now=NOW, window_days=365)
    assert (result["members"], result["removed"]) == (5, 1)
    assert people["ben"] not in await scores(db)


async def test_withdrawing_removes_the_member_from_the_at_risk_run_and_its_segments(
    db: Connection,
) -> None:
    people = await hand_flagged(db)
    assert await flag_at_risk(db, now=AT_RISK_NOW, multiple=2.0, min_purchases=3) == {
        "members": 8, "flagged": 4, "cleared": 0}
    assert await selected(db, people, AtRiskCondition(), AT_RISK_NOW) == {
        "ann", "cal", "gus", "jon"}

    await choose(db, people["ann"], False)
    assert await rows_of(db, "member_at_risk", people["ann"]) == 0
    assert await flag_at_risk(db, now=AT_RISK_NOW, multiple=2.0, min_purchases=3) == {
        "members": 8, "flagged": 0, "cleared": 0}
    assert await rows_of(db, "member_at_risk", people["ann"]) == 0
    assert await selected(db, people, AtRiskCondition(), AT_RISK_NOW) == {"cal", "gus", "jon"}
    assert "ann" not in await selected(db, people, AtRiskCondition(flagged=False), AT_RISK_NOW)
    assert "ann" not in await selected(db, people, Not(condition=AtRiskCondition()),
                                       AT_RISK_NOW)
    preview = await preview_segment(db, AtRiskCondition(), sample_size=10, now=AT_RISK_NOW)
    assert preview.count == 3
    # A segment on anything but scores still has her; the consent condition reads
    # data_analysis as it is honoured: never asked is granted.
    withdrawn = ConsentCondition(purpose="data_analysis", granted=False)
    assert await selected(db, people, withdrawn, AT_RISK_NOW) == {"ann"}
    assert "ben" in await selected(db, people, ConsentCondition(purpose="data_analysis"),
                                   AT_RISK_NOW)

    await choose(db, people["ann"], True)
    assert await flag_at_risk(db, now=AT_RISK_NOW, multiple=2.0, min_purchases=3) == {
        "members": 8, "flagged": 1, "cleared": 0}
    assert await selected(db, people, AtRiskCondition(), AT_RISK_NOW) == {
        "ann", "cal", "gus", "jon"}


async def test_withdrawing_removes_the_member_from_churn_scores_not_from_the_fit(
    db: Connection,
) -> None:
    people = await hand_flagged(db)
    people["zed"] = await Shop(db).member("zed")  # never bought: scored 'cadence'
    await flag_at_risk(db, now=AT_RISK_NOW, multiple=2.0, min_purchases=3)
    first = await fit_and_score(db, now=AT_RISK_NOW, margin=0.3)
    assert await rows_of(db, "member_churn_scores", people["ann"]) == 1
    fitted = await db.fetchval("select members from churn_model_fits order by fit_id desc")

    await choose(db, people["ann"], False)
    assert await rows_of(db, "member_churn_scores", people["ann"]) == 0
    assert await rows_of(db, "member_at_risk", people["ann"]) == 0
    later = AT_RISK_NOW + dt.timedelta(hours=1)
    second = await fit_and_score(db, now=later, margin=0.3)
    assert second["members"] == first["members"] - 1
    assert await rows_of(db, "member_churn_scores", people["ann"]) == 0
    # The fit still counts her purchases: an aggregate, not a score of hers.
    assert await db.fetchval(
        "select members from churn_model_fits order by fit_id desc") == fitted
    # Whatever the fit, the churn_risk condition falls back on the flag, which she no longer
    # has; and it is a profiling condition, so its complement leaves her out too.
    risky = ChurnRiskCondition(p_alive_below=1.0)
    assert "ann" not in await selected(db, people, risky, later)
    assert "ann" not in await selected(db, people, Not(condition=risky), later)
    # Never asked: scored, and on one side of the condition or the other.
    assert "zed" in await selected(db, people, Not(condition=risky), later)

    await choose(db, people["ann"], True)
    third = await fit_and_score(db, now=later + dt.timedelta(hours=1), margin=0.3)
    assert third["members"] == first["members"]
    assert await rows_of(db, "member_churn_scores", people["ann"]) == 1


async def test_a_merge_that_takes_over_a_withdrawal_takes_the_survivors_scores(
    db: Connection,
) -> None:
    people = await hand_scored(db)
    await refresh_rfm(db, now=NOW, window_days=365)
    # ivy never bought and withdrew; merged into ann, who was never asked, her choice is
    # ann's now (loyalty.members.merge), and so is its effect.
    await choose(db, people["ivy"], False)
    assert await member_rfm(db, people["ann"]) is not None
    staff = await db.fetchval(
        "insert into staff (email, display_name, role, password_hash) values"
        " ('merge-consent@example.com', 'Merger', 'admin', 'x') returning staff_id")
    await merge_members(db, survivor_id=people["ann"], merged_id=people["ivy"],
                        staff_id=staff, now=NOW)
    assert await member_rfm(db, people["ann"]) is None


def test_only_definitions_on_scores_are_profiling() -> None:
    assert profiles(AllOf(conditions=[StatusCondition(statuses=["active"]),
                                      Not(condition=RfmCondition(recency=[1]))]))
    assert profiles(ChurnRiskCondition(p_alive_below=0.5))
    assert profiles(AtRiskCondition(flagged=False))
    assert not profiles(AllOf(conditions=[StatusCondition(statuses=["active"]),
                                          ConsentCondition(purpose="data_analysis")]))


async def test_a_campaign_to_a_segment_on_scores_leaves_out_who_withdrew(db: Connection) -> None:
    people = await hand_flagged(db)
    await flag_at_risk(db, now=AT_RISK_NOW, multiple=2.0, min_purchases=3)
    await choose(db, people["cal"], False)
    staff_id = (await create_staff(db, email="consent@staff.example", password_hash="x",
                                   role="marketer", display_name="consent")).staff_id
    # A profiling condition anywhere in the definition makes the whole segment profiling.
    segment = (await create_segment(db, SegmentCreate(
        name="Win back", definition=AllOf(conditions=[
            StatusCondition(statuses=["active"]), AtRiskCondition()])),
        staff_id=staff_id, now=AT_RISK_NOW)).segment_id
    campaign = await create_campaign(db, CampaignCreate(
        name="Win back", action=BonusPoints(points=100), segment_id=segment,
        channel="marketing_email"), staff_id=staff_id)
    reach = await campaign_reach(db, campaign.campaign_id, now=AT_RISK_NOW)
    assert (reach.eligible, reach.treated) == (3, 3)
    await launch_campaign(db, campaign.campaign_id, rulebook=RuleBook(),
                          programme=Programme(currency="JPY", timezone=TOKYO), now=AT_RISK_NOW)
    treated = {r["member_id"] for r in await db.fetch(
        "select member_id from campaign_members where campaign_id = $1", campaign.campaign_id)}
    assert treated == {people[name] for name in ("ann", "gus", "jon")}
