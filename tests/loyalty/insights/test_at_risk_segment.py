"""The ``at_risk`` segment condition on a real PostgreSQL: it selects the members the at_risk job
flagged (and still active), its ``false`` form and ``not`` are exactly the rest, and it travels
on the wire like every other condition."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
import pytest

from loyalty.core.db import Connection
from loyalty.insights.at_risk import flag_at_risk
from loyalty.promotions.segments import compile_definition, preview_segment
from schemas.segments import AllOf, AtRiskCondition, Condition, Not, StatusCondition
from tests.factories import AT_RISK_NOW, hand_flagged

decode = msgspec.json.Decoder(Condition).decode


async def selected(conn: Connection, people: dict[str, UUID], definition: Any) -> set[str]:
    names = {member_id: name for name, member_id in people.items()}
    member_filter = compile_definition(definition, now=AT_RISK_NOW)
    found = await conn.fetch(f"select m.member_id from members m where {member_filter.render(1)}",  # noqa: S608 - a MemberFilter rendered with $n slots
                             *member_filter.params)
    return {names[r["member_id"]] for r in found}


async def test_the_condition_selects_the_flagged_members(db: Connection) -> None:
    people = await hand_flagged(db)
    assert await selected(db, people, AtRiskCondition()) == set()
    await flag_at_risk(db, now=AT_RISK_NOW, multiple=2.0, min_purchases=3)
    # See hand_flagged: ann, cal, gus and jon are at risk. fay (merged) and lea (erased) are
    # nobody's segment; eve (dormant) and ivy (suspended) are segmentable but not at risk.
    assert await selected(db, people, AtRiskCondition()) == {"ann", "cal", "gus", "jon"}
    rest = {"ben", "dee", "eve", "hal", "ivy", "kim"}
    assert await selected(db, people, AtRiskCondition(flagged=False)) == rest
    assert await selected(db, people, Not(condition=AtRiskCondition())) == rest
    assert await selected(db, people, Not(condition=AtRiskCondition(flagged=False))) == {
        "ann", "cal", "gus", "jon"}
    assert await selected(db, people, AllOf(conditions=[
        AtRiskCondition(flagged=False), StatusCondition(statuses=["active"]),
    ])) == {"ben", "dee", "hal", "kim"}
    preview = await preview_segment(db, AtRiskCondition(), sample_size=10, now=AT_RISK_NOW)
    assert preview.count == 4
    assert isinstance(preview.sample, list)
    assert {s.member_id for s in preview.sample} == {
        people[n] for n in ("ann", "cal", "gus", "jon")}


async def test_a_member_gone_dormant_since_the_run_is_no_longer_at_risk(db: Connection) -> None:
    people = await hand_flagged(db)
    await flag_at_risk(db, now=AT_RISK_NOW, multiple=2.0, min_purchases=3)
    await db.execute("update members set status = 'dormant' where member_id = $1", people["ann"])
    # The job has not run again: ann's row is still there, but she is past being at risk.
    assert await db.fetchval("select count(*) from member_at_risk where member_id = $1",
                             people["ann"]) == 1
    assert await selected(db, people, AtRiskCondition()) == {"cal", "gus", "jon"}
    assert "ann" in await selected(db, people, AtRiskCondition(flagged=False))


def test_the_condition_compiles_to_constant_text_without_parameters() -> None:
    flagged = compile_definition(AtRiskCondition(), now=AT_RISK_NOW)
    not_flagged = compile_definition(AtRiskCondition(flagged=False), now=AT_RISK_NOW)
    assert (flagged.params, not_flagged.params) == ((), ())
    assert "member_at_risk" in flagged.sql
    assert "not (" in not_flagged.sql


def test_the_condition_on_the_wire() -> None:
    assert decode(b'{"type": "at_risk"}') == AtRiskCondition()
    assert decode(b'{"type": "at_risk", "flagged": false}') == AtRiskCondition(flagged=False)
    # Stored and shown without the default.
    assert msgspec.json.encode(AtRiskCondition()) == b'{"type":"at_risk"}'
    assert msgspec.json.decode(msgspec.json.encode(
        Not(condition=AtRiskCondition(flagged=False)))) == {
        "type": "not", "condition": {"type": "at_risk", "flagged": False}}


@pytest.mark.parametrize("body", [
    b'{"type": "at_risk", "flagged": "yes"}',
    b'{"type": "at_risk", "flagged": 1}',
    b'{"type": "at_risk", "multiple": 2}',
])
def test_the_wire_refuses_what_the_condition_cannot_hold(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(body)
