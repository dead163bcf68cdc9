"""The read model of the member's points summary (loyalty/points/summaries.py) on a real
PostgreSQL: served from ``point_summaries`` while it holds, computed again after any write to
the member's points, a merge, a rules change, or when time reaches a moment the summary changes
at; never replaced by an older computation.

A stored row is proved served by changing its body to a marker the full computation never
gives: the next read answers the marker when, and only when, it came from the row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any
from uuid import UUID

import msgspec
import pytest

from loyalty.access.principals import TerminalPrincipal
from loyalty.access.stores import create_terminal, ensure_store
from loyalty.core.db import Connection
from loyalty.core.errors import NotFound
from loyalty.core.idempotency import Idempotency, request_hash
from loyalty.core.programme import Programme
from loyalty.members.erasure import erase_member
from loyalty.members.merge import merge_members
from loyalty.points.adjustments import adjust_points
from loyalty.points.expiry import expire_points, release_points
from loyalty.points.history import EXPIRING_WINDOW, computed_summary, points_summary
from loyalty.points.purchases import record_purchase
from loyalty.points.returns import record_return
from loyalty.points.rules import RuleBook, save_rules
from loyalty.points.summaries import member_points, store_summary
from schemas.base import json_encoder
from schemas.points import MemberRef, Purchase, PurchaseLine, ReturnRequest
from schemas.rules import EarningRules, RollingExpiry
from tests.factories import PROGRAMME, TOKYO, insert_lot, insert_member, instant

NOW = dt.datetime(2026, 4, 1, 3, 0, tzinfo=dt.UTC)
MARKER = b'"served from point_summaries"'
STAFF = UUID(int=1)
_numbers = itertools.count()


class Till:
    """A member's points as the app reads them and as the full computation has them, and the
    writes that change them, on one connection."""

    def __init__(self, conn: Connection, terminal: TerminalPrincipal) -> None:
        self.conn = conn
        self.terminal = terminal
        self.rulebook = RuleBook()

    async def read(self, member: UUID, now: dt.datetime = NOW,
                   programme: Programme = PROGRAMME) -> bytes:
        return await member_points(self.conn, member, rulebook=self.rulebook,
                                   programme=programme, now=now)

    async def full(self, member: UUID, now: dt.datetime = NOW) -> bytes:
        return json_encoder.encode(await points_summary(
            self.conn, member, rulebook=self.rulebook, programme=PROGRAMME, now=now))

    async def mark(self, member: UUID) -> None:
        """Replace the stored body by the marker (it must be there)."""
        assert await self.conn.fetchval(
            "update point_summaries set body = $2 where member_id = $1 returning true",
            member, MARKER)

    async def buy(self, member: UUID, total: int, *, redeem: int = 0,
                  now: dt.datetime = NOW) -> UUID:
        body = Purchase(member=MemberRef(id=member), receipt_id=f"S-{next(_numbers)}",
                        occurred_at=instant(now), total=total, currency="JPY",
                        lines=[PurchaseLine(sku="TEA", unit_price=total // 2, quantity=2)],
                        redeem_points=redeem)
        outcome = await record_purchase(
            self.conn, member=member, purchase=body, terminal=self.terminal,
            idempotency=Idempotency(self.terminal.terminal_id, f"k-{next(_numbers)}",
                                    request_hash("POST", "/v1/pos/purchases", body)),
            rulebook=self.rulebook, programme=PROGRAMME, now=now)
        assert outcome.status == 201, outcome.body
        return UUID(msgspec.json.decode(outcome.body)["purchase_id"])


@pytest.fixture
async def till(db: Connection) -> Till:
    await save_rules(db, EarningRules(pending_days=0, expiry=RollingExpiry(months=12)),
                     staff_id=None)
    store = await ensure_store(db, code="SUMMARY-1")
    created = await create_terminal(db, store=store)
    return Till(db, TerminalPrincipal(created.terminal.terminal_id, store.store_id, store.code))


async def _stored(conn: Connection, member: UUID) -> Any:
    return await conn.fetchrow("select * from point_summaries where member_id = $1", member)


# -- served ------------------------------------------------------------------------------------


async def test_the_second_read_is_served_from_the_stored_summary(till: Till) -> None:
    member = await insert_member(till.conn, "Reader")
    await till.buy(member, 5_000)
    first = await till.read(member)
    assert first == await till.full(member)
    assert msgspec.json.decode(first)["available"] == 50

    row: Any = await till.conn.fetchrow(
        "select s.*, b.version from point_summaries s join point_balances b using (member_id)"
        " where member_id = $1", member)
    assert row["body"] == first
    assert row["balance_version"] == row["version"]
    assert row["valid_from"] == NOW

    await till.mark(member)
    assert await till.read(member) == MARKER
    assert await till.read(member, NOW + dt.timedelta(days=1)) == MARKER


async def test_the_stored_read_is_one_statement(till: Till) -> None:
    member = await insert_member(till.conn, "Counted")
    await till.buy(member, 5_000)
    await till.read(member)
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query)

    till.conn.add_query_logger(log)
    try:
        await till.read(member)
        await asyncio.sleep(0.01)  # asyncpg calls its loggers soon after, not at once
    finally:
        till.conn.remove_query_logger(log)
    assert len(sent) == 1
    assert "point_summaries" in sent[0]


# -- what makes the next read compute again ----------------------------------------------------


async def _purchase(till: Till, member: UUID) -> None:
    await till.buy(member, 2_000)


async def _redemption(till: Till, member: UUID) -> None:
    await till.buy(member, 1_000, redeem=10)


async def _return(till: Till, member: UUID) -> None:
    purchase_id: UUID = await till.conn.fetchval(
        "select purchase_id from purchases where member_id = $1 limit 1", member)
    request = ReturnRequest(amount=1_000)
    outcome = await record_return(
        till.conn, purchase_id=purchase_id, request=request, terminal=till.terminal,
        idempotency=Idempotency(till.terminal.terminal_id, f"r-{next(_numbers)}",
                                request_hash("POST", "/r", request)), now=NOW)
    assert outcome.status == 201


async def _adjustment(till: Till, member: UUID) -> None:
    await adjust_points(till.conn, member_id=member, points=-5, reason="test", staff_id=STAFF,
                        rulebook=till.rulebook, programme=PROGRAMME, now=NOW, idempotency=None)


async def _rules_change(till: Till, member: UUID) -> None:
    await save_rules(till.conn, EarningRules(pending_days=0, expiry=RollingExpiry(months=12),
                                             point_value=2), staff_id=None)


WRITES = {"purchase": _purchase, "redemption": _redemption, "return": _return,
          "adjustment": _adjustment, "rules change": _rules_change}


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_a_write_makes_the_next_read_compute_again(till: Till, write: str) -> None:
    member = await insert_member(till.conn, "Changed")
    await till.buy(member, 5_000)
    await till.read(member)
    await till.mark(member)

    await WRITES[write](till, member)
    answer = await till.read(member)
    assert answer != MARKER
    assert answer == await till.full(member)
    assert (await _stored(till.conn, member))["body"] == answer


async def test_the_expiry_and_release_jobs_make_the_next_read_compute_again(till: Till) -> None:
    await save_rules(till.conn, EarningRules(pending_days=3, expiry=RollingExpiry(months=1)),
                     staff_id=None)
    expiring = await insert_member(till.conn, "Expiring")
    pending = await insert_member(till.conn, "Pending")
    await insert_lot(till.conn, expiring, NOW - dt.timedelta(days=10), 40,
                     expires=NOW + dt.timedelta(days=5))
    await till.buy(pending, 3_000)
    later = NOW + dt.timedelta(days=6)
    for member in (expiring, pending):
        await till.read(member, NOW)
        await till.mark(member)
        # Served while nothing changes, until the moment something does.
        assert await till.read(member, NOW + dt.timedelta(days=2)) == MARKER

    assert (await expire_points(till.conn, now=later))["members"] == 1
    assert (await release_points(till.conn, now=later))["members"] == 1
    # A read now would compute again by time anyway; one back at the start shows the jobs'
    # version bump alone is enough (the rows' times still cover it).
    for member in (expiring, pending):
        await till.conn.execute(
            "update point_summaries set valid_until = null where member_id = $1", member)
        answer = await till.read(member, later)
        assert answer != MARKER
        assert answer == await till.full(member, later)
    assert msgspec.json.decode(await till.read(expiring, later))["lifetime_expired"] == 40


async def test_a_merge_makes_both_members_read_the_survivors_summary_afresh(till: Till) -> None:
    survivor = await insert_member(till.conn, "Survivor")
    merged = await insert_member(till.conn, "Merged")
    await till.buy(survivor, 3_000)
    await till.buy(merged, 4_000)
    for member in (survivor, merged):
        await till.read(member)
        await till.mark(member)

    await merge_members(till.conn, survivor_id=survivor, merged_id=merged, staff_id=STAFF,
                        now=NOW)
    for member in (merged, survivor):
        answer = await till.read(member)
        assert answer != MARKER
        assert answer == await till.full(member)
        assert msgspec.json.decode(answer)["member_id"] == str(survivor)
        assert msgspec.json.decode(answer)["available"] == 70
    # The merged member's token is served from the survivor's row, checked against the
    # survivor's balance; the merged member's own row is never used again.
    await till.mark(survivor)
    assert await till.read(merged) == MARKER
    await till.buy(survivor, 1_000)
    assert await till.read(merged) == await till.full(merged)


async def test_another_basis_neither_uses_nor_keeps_the_stored_summary(till: Till) -> None:
    member = await insert_member(till.conn, "Abroad")
    await till.buy(member, 2_000)
    await till.read(member)
    await till.mark(member)
    euros = Programme(currency="EUR", timezone=TOKYO)
    answer = await till.read(member, programme=euros)
    assert msgspec.json.decode(answer)["currency"] == "EUR"
    assert await till.read(member, programme=euros) == answer
    assert msgspec.json.decode(await till.read(member))["currency"] == "JPY"


# -- time --------------------------------------------------------------------------------------


async def _moment_test(till: Till, member: UUID, moment: dt.datetime) -> None:
    """Stored at NOW: served up to just before ``moment``, computed again at it."""
    await till.read(member, NOW)
    assert (await _stored(till.conn, member))["valid_until"] == moment
    await till.mark(member)
    assert await till.read(member, moment - dt.timedelta(microseconds=1)) == MARKER
    answer = await till.read(member, moment)
    assert answer != MARKER
    assert answer == await till.full(member, moment)
    assert answer != await till.full(member, moment - dt.timedelta(microseconds=1))


async def test_a_read_at_a_release_moment_computes_again(till: Till) -> None:
    await save_rules(till.conn, EarningRules(pending_days=2, expiry=RollingExpiry(months=12)),
                     staff_id=None)
    member = await insert_member(till.conn, "Released")
    await till.buy(member, 3_000, now=NOW - dt.timedelta(hours=1))
    await _moment_test(till, member, NOW - dt.timedelta(hours=1) + dt.timedelta(days=2))


async def test_a_read_at_an_expiry_moment_computes_again(till: Till) -> None:
    member = await insert_member(till.conn, "Expired")
    expiry = NOW + dt.timedelta(days=20, seconds=7)
    await insert_lot(till.conn, member, NOW - dt.timedelta(days=100), 30, expires=expiry)
    await insert_lot(till.conn, member, NOW - dt.timedelta(days=10), 5)
    await _moment_test(till, member, expiry)


async def test_a_read_as_a_lot_enters_the_expiring_window_computes_again(till: Till) -> None:
    member = await insert_member(till.conn, "Window")
    expiry = NOW + EXPIRING_WINDOW + dt.timedelta(days=3, microseconds=5)
    await insert_lot(till.conn, member, NOW - dt.timedelta(days=10), 30, expires=expiry)
    await _moment_test(till, member, expiry - EXPIRING_WINDOW)


async def test_a_summary_with_nothing_ahead_holds_until_something_is_written(till: Till) -> None:
    member = await insert_member(till.conn, "Forever")
    await insert_lot(till.conn, member, NOW - dt.timedelta(days=10), 30)
    await till.read(member)
    assert (await _stored(till.conn, member))["valid_until"] is None
    await till.mark(member)
    assert await till.read(member, NOW + dt.timedelta(days=3_000)) == MARKER
    # Computed as of NOW: a read from before it is not answered by it.
    assert await till.read(member, NOW - dt.timedelta(seconds=1)) != MARKER


# -- storing -----------------------------------------------------------------------------------


async def test_an_older_computation_never_replaces_a_newer_one(till: Till) -> None:
    member = await insert_member(till.conn, "Raced")
    await till.buy(member, 2_000)
    older = await computed_summary(till.conn, member, rulebook=till.rulebook,
                                   programme=PROGRAMME, now=NOW)
    await till.buy(member, 3_000)
    newer = await till.read(member)
    assert msgspec.json.decode(newer)["available"] == 50

    # The read that computed before the purchase stores last: it is not kept.
    await store_summary(till.conn, older, programme=PROGRAMME, now=NOW)
    row = await _stored(till.conn, member)
    assert row["body"] == newer
    assert row["balance_version"] == older.balance_version + 1
    assert await till.read(member) == newer


async def test_an_erased_member_has_no_stored_summary_and_no_answer(till: Till) -> None:
    member = await insert_member(till.conn, "Gone")
    await till.buy(member, 2_000)
    await till.read(member)
    await erase_member(till.conn, member, now=NOW, reason="test")
    assert await _stored(till.conn, member) is None
    with pytest.raises(NotFound):
        await till.read(member)
