"""The group commit's queue (loyalty/points/groups.py) on its own: who writes which group, in
what order, and that a cancelled request never stalls the others. The statement itself runs
against PostgreSQL in tests/api/test_group_commit.py and tests/api/test_ledger_concurrency.py;
here a group's write is an event the test releases, so the order of things is the test's."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from uuid import uuid4

import pytest

from loyalty.core.idempotency import Idempotency
from loyalty.points import groups
from loyalty.points.groups import PurchaseGroups, group_values
from loyalty.points.ledger import Grouped, Planned
from loyalty.points.posting import MemberLedger, Posting

NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
MEMBERS = {name: uuid4() for name in ("x", "y", "z")}
CONNECTION: Any = object()  # the queue hands a writer its request's connection, untouched


class Held(PurchaseGroups):
    """Group commit whose writes wait for the test: each group's member names are recorded,
    and each write returns when the test releases it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups: list[list[str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.releases: asyncio.Queue[asyncio.Event] = asyncio.Queue()
        # Cancelled the moment it is handed a writer's place, before it can run.
        self.cancel_when_handed: asyncio.Task[Grouped] | None = None
        self.fail_next: Exception | None = None

    def _pass_on(self) -> None:
        following = self._waiting[0] if self._waiting else None
        super()._pass_on()
        if self.cancel_when_handed is not None and following is not None:
            self.cancel_when_handed.cancel()
            self.cancel_when_handed = None

    async def _write(self, conn: Any, group: list[Any]) -> list[Grouped]:
        assert conn is CONNECTION
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        names = {v: k for k, v in MEMBERS.items()}
        self.groups.append([names[w.member_id] for w in group])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        release = asyncio.Event()
        await self.releases.put(release)
        try:
            await release.wait()
        finally:
            self.in_flight -= 1
        return [Grouped.WRITTEN] * len(group)

    async def release_next(self) -> None:
        (await asyncio.wait_for(self.releases.get(), 5)).set()


def _plan(member: str) -> Planned:
    ledger = MemberLedger(
        member_id=MEMBERS[member], member_number="100", name="m", status="active",
        birth_date=None, merged_into=None, version=1, available=0, pending=0,
        lifetime_earned=0, lifetime_redeemed=0, lifetime_expired=0, purchase_count=0,
        birthday_bonus_year=None, tier=None, tier_since=None, rules_version=1, lots=[],
        stored=None)
    return Planned(Posting(ledger, NOW), 201, b"{}", groupable=True)


def _key() -> Idempotency:
    return Idempotency(uuid4(), f"k-{uuid4()}", b"hash")


async def _write(held: Held, member: str) -> asyncio.Task[Grouped]:
    task = asyncio.create_task(held.write(CONNECTION, _plan(member), _key()))
    await asyncio.sleep(0)  # queued (or writing) before the next one is sent
    return task


async def test_purchases_gather_while_the_writer_is_busy_one_per_member_a_group() -> None:
    held = Held(writers=1, most=16)
    first = await _write(held, "x")
    waiting = [await _write(held, m) for m in ("x", "y", "x", "z")]
    await held.release_next()
    assert await first == Grouped.WRITTEN
    await held.release_next()
    await held.release_next()
    assert await asyncio.gather(*waiting) == [Grouped.WRITTEN] * 4
    # The oldest waiting one writes the next group; x's second purchase waits for the third.
    assert held.groups == [["x"], ["x", "y", "z"], ["x"]]
    assert held.most_in_flight == 1


async def test_a_group_holds_at_most_most_purchases() -> None:
    held = Held(writers=1, most=2)
    first = await _write(held, "x")
    waiting = [await _write(held, m) for m in ("y", "z", "x")]
    for _ in range(3):
        await held.release_next()
    assert await asyncio.gather(first, *waiting) == [Grouped.WRITTEN] * 4
    assert held.groups == [["x"], ["y", "z"], ["x"]]


async def test_no_more_groups_in_flight_than_writers() -> None:
    held = Held(writers=2, most=1)
    tasks = [await _write(held, m) for m in ("x", "y", "z", "x", "y")]
    assert held.in_flight == 2
    for _ in range(5):
        await held.release_next()
    assert await asyncio.gather(*tasks) == [Grouped.WRITTEN] * 5
    assert held.most_in_flight == 2


async def test_a_request_cancelled_while_it_waits_is_not_written_and_stalls_nobody() -> None:
    held = Held(writers=1, most=16)
    first = await _write(held, "x")
    gone = await _write(held, "y")
    after = await _write(held, "z")
    gone.cancel()
    await asyncio.sleep(0)
    await held.release_next()
    await held.release_next()
    assert (await first, await after) == (Grouped.WRITTEN, Grouped.WRITTEN)
    assert gone.cancelled()
    assert held.groups == [["x"], ["z"]]


async def test_a_request_cancelled_as_its_group_is_written_is_skipped() -> None:
    held = Held(writers=1, most=1)
    first = await _write(held, "x")
    gone = await _write(held, "y")
    after = await _write(held, "z")
    await held.release_next()
    gone.cancel()  # before x's writer has run again to hand y the place
    await held.release_next()
    assert (await first, await after) == (Grouped.WRITTEN, Grouped.WRITTEN)
    assert held.groups == [["x"], ["z"]]


async def test_a_request_cancelled_when_given_the_writers_place_passes_it_on() -> None:
    held = Held(writers=1, most=1)
    first = await _write(held, "x")
    handed = await _write(held, "y")
    after = await _write(held, "z")
    held.cancel_when_handed = handed
    await held.release_next()
    await first
    with pytest.raises(asyncio.CancelledError):
        await handed
    await held.release_next()
    assert await after == Grouped.WRITTEN
    assert held.groups == [["x"], ["z"]]
    # The place was given back: a later purchase is written at once.
    later = await _write(held, "x")
    await held.release_next()
    assert await later == Grouped.WRITTEN


async def test_a_writer_cancelled_mid_write_leaves_its_group_to_be_written_alone() -> None:
    held = Held(writers=1, most=16)
    first = await _write(held, "x")
    waiting = [await _write(held, m) for m in ("y", "z")]
    await held.release_next()
    await first
    # y writes the group [y, z]; y's request is cancelled in the middle of the write (whose
    # release the test takes, and never gives).
    await asyncio.wait_for(held.releases.get(), 5)
    assert held.groups[-1] == ["y", "z"]
    waiting[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
    assert await waiting[1] == Grouped.ALONE
    later = await _write(held, "y")
    await held.release_next()
    assert await later == Grouped.WRITTEN


async def test_a_write_that_fails_unexpectedly_sends_its_group_alone_and_frees_the_place(
) -> None:
    held = Held(writers=1, most=16)
    first = await _write(held, "x")
    waiting = [await _write(held, m) for m in ("y", "z")]
    held.fail_next = ValueError("a bug in the group's write")
    await held.release_next()
    assert await first == Grouped.WRITTEN
    with pytest.raises(ValueError, match="a bug"):
        await waiting[0]  # the request that wrote the group: its error is its answer
    assert await waiting[1] == Grouped.ALONE
    later = await _write(held, "x")
    await held.release_next()
    assert await later == Grouped.WRITTEN


def test_the_group_statement_asks_for_exactly_what_group_values_gives() -> None:
    purchase = {"purchase_id": uuid4(), "store_id": uuid4(), "terminal_id": uuid4(),
                "receipt_id": "R", "occurred_at": NOW, "currency": "JPY", "total": 100,
                "lines": [], "points_earned": 1, "points_redeemed": 0, "rule_version": 1}
    plans = [(Planned(_plan(m).posting, 201, b"{}", values=purchase, groupable=True), _key())
             for m in ("x", "y")]
    values = group_values(plans)
    assert set(groups._GROUP.names) == set(values)
    assert values["row_member_id"] == [MEMBERS["x"], MEMBERS["y"]]
    assert all(len(values[f"row_{c}"]) == 2 for c, _ in groups._ROW)
