"""Dormancy on a calendar of the test's own: the scheduler's ticks are driven day by day (no
sleeping), members go dormant on the right business day, are handed to the reactivation
campaign once, and are active again at their next purchase, with the campaign credited."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from jobs.catalogue import job_named
from jobs.definition import JobContext, cron_trigger, make_context
from jobs.scheduler import run_due
from loyalty.core.db import create_pool
from loyalty.core.settings import Settings
from tests.factories import TOKYO, Actors, Staffed, bearer, purchase_body, query

DORMANCY_DAYS = 180
_receipts = itertools.count()


def tokyo(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=TOKYO)


class Calendar:
    """The night's jobs, each run by the scheduler's own catch-up logic as of a chosen moment."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    async def night_of(self, day: dt.date) -> dict[str, list[dict[str, int]]]:
        """Every job due by 09:00 on ``day`` in Tokyo, in the order the night runs them."""
        ran: dict[str, list[dict[str, int]]] = {}
        for name in ("dormancy", "reactivation"):
            job = job_named(name)
            assert job is not None
            runs = await run_due(self.ctx, job, cron_trigger(job.cron, "Asia/Tokyo"),
                                 tokyo(day, 9))
            assert all(run.outcome == "succeeded" for run in runs), runs
            ran[name] = [run.counts for run in runs]
        return ran


@dataclasses.dataclass
class Office(Staffed):
    """The marketer's reactivation campaign (``template_id``), a till, and the night's jobs on
    the test's database, configured to flag members after DORMANCY_DAYS."""

    template_id: str
    calendar: Calendar

    async def buy(self, member_id: str, total: int) -> None:
        """A purchase at the till, today."""
        bought = await self.client.post(
            "/v1/pos/purchases", json=purchase_body(member_id, total, prefix="D"),
            headers={**self.till, "Idempotency-Key": f"dormancy-{next(_receipts)}"})
        assert bought.status_code == 201, bought.text


@pytest.fixture
async def office(client: httpx.AsyncClient, actors: Actors,
                 settings: Settings) -> AsyncIterator[Office]:
    marketer = bearer(await actors.staff("marketer"))
    segment = await client.post("/v1/segments", headers=marketer, json={
        "name": "Dormant", "definition": {"type": "status", "statuses": ["dormant"]}})
    assert segment.status_code == 201, segment.text
    template = await client.post("/v1/campaigns", headers=marketer, json={
        "name": "We miss you", "segment_id": segment.json()["segment_id"],
        "action": {"type": "bonus_points", "points": 500, "reason": "welcome back"}})
    assert template.status_code == 201, template.text
    till, _ = await actors.terminal("DORMANCY-1")
    configured = msgspec.structs.replace(
        settings, dormancy_days=DORMANCY_DAYS,
        reactivation_campaign=template.json()["campaign_id"])
    assert configured.database_url
    pool = await create_pool(configured.database_url, min_size=1, max_size=4)
    try:
        yield Office(client, actors, configured.database_url, marketer, bearer(till),
                     template.json()["campaign_id"],
                     Calendar(make_context(configured.database_url, pool, configured)))
    finally:
        await pool.close()


async def _last_active(database_url: str, member_id: str, at: dt.datetime) -> None:
    await query(database_url, "update members set last_activity_at = $2, joined_at = $2"
                               " where member_id = $1", member_id, at)


async def _member(database_url: str, member_id: str) -> asyncpg.Record:
    [row] = await query(database_url, "select status, status_changed_at from members"
                                       " where member_id = $1", member_id)
    return row


async def _granted(database_url: str, member_id: str) -> list[tuple[int, dt.datetime]]:
    rows = await query(database_url, "select amount, created_at from point_entries"
                                      " where member_id = $1 and grant_id is not null", member_id)
    return [(r["amount"], r["created_at"]) for r in rows]


async def _changes(database_url: str, member_id: str) -> list[tuple[str, str, str, Any]]:
    rows = await query(
        database_url, "select from_status, to_status, reason, campaign_id::text as campaign_id"
                      " from member_status_changes where member_id = $1 order by change_id",
        member_id)
    return [(r["from_status"], r["to_status"], r["reason"], r["campaign_id"]) for r in rows]


async def test_members_go_dormant_on_the_right_day_are_won_back_once_and_credited(
        client: httpx.AsyncClient, actors: Actors, office: Office) -> None:
    db, calendar = office.database_url, office.calendar
    quiet = await actors.member(email="quiet@example.com")
    later = await actors.member(email="later@example.com")
    # Last seen in the afternoon of 10 March (business day L), and one day later.
    last_seen = dt.date(2025, 3, 10)
    await _last_active(db, quiet.member_id, tokyo(last_seen, 15, 30))
    await _last_active(db, later.member_id, tokyo(last_seen + dt.timedelta(days=1), 0, 10))

    # 180 whole days without activity are L+1 .. L+180; the first night after them is L+181.
    dormant_day = last_seen + dt.timedelta(days=DORMANCY_DAYS + 1)
    assert dormant_day == dt.date(2025, 9, 7)

    before = await calendar.night_of(dormant_day - dt.timedelta(days=1))
    # The first night is each job's first run: its latest tick only.
    assert before["dormancy"] == [{"scanned": 2, "flagged": 0}]
    assert before["reactivation"] == [{"waves": 0, "members": 0, "treated": 0, "control": 0}]
    assert (await _member(db, quiet.member_id))["status"] == "active"

    night = await calendar.night_of(dormant_day)
    assert night["dormancy"] == [{"scanned": 2, "flagged": 1}]
    assert night["reactivation"] == [{"waves": 1, "members": 1, "treated": 1, "control": 0}]
    row = await _member(db, quiet.member_id)
    # Flagged at the night's 03:00 tick, as of which the job ran.
    assert (row["status"], row["status_changed_at"]) == ("dormant", tokyo(dormant_day, 3))
    assert (await _member(db, later.member_id))["status"] == "active"

    waves = (await client.get("/v1/campaigns", headers=office.marketer)).json()["items"]
    wave = next(c for c in waves if c["template_id"] == office.template_id)
    assert (wave["status"], wave["treated"], wave["control"]) == ("launched", 1, 0)
    assert wave["name"] == f"We miss you (wave of {dormant_day})"
    # The wave's points, as of the night (read from the ledger: the balance shown today would
    # already have let a lot earned on this old calendar expire).
    assert await _granted(db, quiet.member_id) == [(500, tokyo(dormant_day, 3, 30))]

    # The next night: the other member's turn; the first is not handed over again.
    next_night = await calendar.night_of(dormant_day + dt.timedelta(days=1))
    assert next_night["dormancy"] == [{"scanned": 2, "flagged": 1}]
    assert next_night["reactivation"] == [{"waves": 1, "members": 1, "treated": 1,
                                           "control": 0}]
    # Nights run again, or a night with nothing new: nobody handed over twice.
    assert await calendar.night_of(dormant_day + dt.timedelta(days=1)) == \
        {"dormancy": [], "reactivation": []}
    quiet_night = await calendar.night_of(dormant_day + dt.timedelta(days=2))
    assert quiet_night["reactivation"] == [{"waves": 0, "members": 0, "treated": 0,
                                            "control": 0}]
    assert await _granted(db, quiet.member_id) == [(500, tokyo(dormant_day, 3, 30))]

    # The quiet member buys again (today): active, and the wave credited.
    await office.buy(quiet.member_id, 2_000)
    assert (await _member(db, quiet.member_id))["status"] == "active"
    assert await _changes(db, quiet.member_id) == [
        ("active", "dormant", "inactivity", wave["campaign_id"]),
        ("dormant", "active", "activity", wave["campaign_id"]),
    ]
    # The member still dormant is untouched by another's purchase.
    assert (await _member(db, later.member_id))["status"] == "dormant"


async def test_a_dormant_member_in_the_control_group_comes_back_uncredited(
        client: httpx.AsyncClient, actors: Actors, office: Office) -> None:
    db, calendar = office.database_url, office.calendar
    # A template that holds everyone it can back: 90% control, so with one member, the
    # control group takes them (round(1 × 0.9) = 1).
    held = await client.post("/v1/campaigns", headers=office.marketer, json={
        "name": "Held back", "members": [(await actors.member()).member_id],
        "holdout_percent": 90,
        "action": {"type": "bonus_points", "points": 500, "reason": "welcome back"}})
    assert held.status_code == 201, held.text
    calendar.ctx = dataclasses.replace(calendar.ctx, settings=msgspec.structs.replace(
        calendar.ctx.settings, reactivation_campaign=held.json()["campaign_id"]))
    member = await actors.member(email="held@example.com")
    await _last_active(db, member.member_id, tokyo(dt.date(2025, 1, 1), 12))
    night = await calendar.night_of(dt.date(2025, 7, 1))
    assert night["reactivation"] == [{"waves": 1, "members": 1, "treated": 0, "control": 1}]
    await office.buy(member.member_id, 1_000)
    changes = await _changes(db, member.member_id)
    assert [c[:3] for c in changes] == [("active", "dormant", "inactivity"),
                                        ("dormant", "active", "activity")]
    # Handed to the wave, but the wave did not treat them: the comeback is nobody's credit.
    assert changes[0][3] is not None
    assert changes[1][3] is None
