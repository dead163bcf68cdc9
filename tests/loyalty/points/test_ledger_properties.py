"""The ledger's invariants under random sequences of everything that changes points.

A hypothesis state machine drives earns (purchases and actions), redemptions, retries,
returns, adjustments, the passing of time, expiry and release runs, and merges, through the
same ``loyalty`` functions the API calls, on a real PostgreSQL. After every step it checks:
balance = sum of entries = sum of lots' remaining; available never negative; no entry or
allocation changed or deleted; every redemption drew on the earliest-expiring spendable lots.
Each example runs in a transaction that is rolled back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from loyalty.access.principals import TerminalPrincipal
from loyalty.access.stores import create_terminal, ensure_store
from loyalty.core.db import init_connection
from loyalty.core.errors import InsufficientPoints, InvalidInput, LoyaltyError
from loyalty.core.idempotency import Idempotency, request_hash
from loyalty.members.merge import merge_members
from loyalty.members.profiles import register_member
from loyalty.points.actions import record_action
from loyalty.points.adjustments import adjust_points
from loyalty.points.expiry import expire_points, release_points
from loyalty.points.purchases import record_purchase
from loyalty.points.returns import record_return
from loyalty.points.rules import RuleBook, save_rules
from schemas.members import MemberRegistration
from schemas.points import (
    Adjustment,
    AdjustmentRecorded,
    MemberRef,
    Purchase,
    PurchaseLine,
    ReturnRequest,
)
from schemas.rules import EarningRules, RollingExpiry
from tests.factories import PROGRAMME, instant
from tests.ledger_checks import LedgerRows, check_append_only, check_invariants, read_rows

START = dt.datetime(2026, 1, 5, 3, 0, tzinfo=dt.UTC)
_numbers = itertools.count()


def _spendable_order(rows: LedgerRows, member_id: UUID, now: dt.datetime) -> list[UUID]:
    """The lots a draw may take from at ``now``, in the order it must take them."""
    lots = [
        lot for lot in rows.lots
        if lot["member_id"] == member_id and lot["remaining"] > 0
        and (lot["released_at"] is not None or lot["available_at"] <= now)
        and not (lot["expires_at"] is not None and lot["expires_at"] <= now)
    ]
    never = dt.datetime.max.replace(tzinfo=dt.UTC)
    lots.sort(key=lambda lot: (lot["expires_at"] is None, lot["expires_at"] or never,
                               lot["earned_at"], lot["lot_id"]))
    return [lot["lot_id"] for lot in lots]


class LedgerMachine(RuleBasedStateMachine):
    members = Bundle("members")

    def __init__(self) -> None:
        super().__init__()
        self.loop: asyncio.AbstractEventLoop = MACHINE_CONTEXT["loop"]
        self.conn: asyncpg.Connection = MACHINE_CONTEXT["conn"]
        self.transaction = self.conn.transaction()
        self.loop.run_until_complete(self.transaction.start())
        self.now = START
        self.rulebook = RuleBook()
        self.purchases: list[dict[str, Any]] = []
        self.adjustments: list[dict[str, Any]] = []
        self.merged: set[UUID] = set()
        self.rows = self.run(read_rows(self.conn))
        self.terminal: TerminalPrincipal | None = None

    def run(self, coroutine: Any) -> Any:
        """Run one step in a savepoint: a step that fails leaves nothing behind, as a failed
        statement does outside the test's enclosing transaction."""

        async def in_savepoint() -> Any:
            async with self.conn.transaction():
                return await coroutine

        return self.loop.run_until_complete(in_savepoint())

    def teardown(self) -> None:
        self.loop.run_until_complete(self.transaction.rollback())

    @initialize(target=members, count=st.integers(min_value=2, max_value=3))
    def setup(self, count: int) -> Any:
        async def prepare() -> list[UUID]:
            rules = EarningRules(pending_days=2, expiry=RollingExpiry(months=1))
            await save_rules(self.conn, rules, staff_id=None)
            store = await ensure_store(self.conn, code="PROP-1")
            created = await create_terminal(self.conn, store=store)
            self.terminal = TerminalPrincipal(created.terminal.terminal_id, store.store_id,
                                              store.code)
            ids = []
            for _ in range(count):
                n = next(_numbers)
                member = await register_member(
                    self.conn, MemberRegistration(password="x" * 8, name=f"P{n}",
                                                  email=f"p{n}@example.com"),
                    password_hash="unused", region="JP")
                ids.append(member.member_id)
            return ids

        from hypothesis.stateful import multiple

        return multiple(*self.run(prepare()))

    # -- steps -----------------------------------------------------------------------------

    def _purchase_body(self, member: UUID, total: int, redeem: int) -> Purchase:
        return Purchase(member=MemberRef(id=member), receipt_id=f"P-{next(_numbers)}",
                        occurred_at=instant(self.now), total=total, currency="JPY",
                        lines=[PurchaseLine(sku="A", unit_price=total // 2 or 1, quantity=2)],
                        redeem_points=redeem)

    def _record(self, member: UUID, body: Purchase, key: str) -> Any:
        assert self.terminal is not None
        return self.run(record_purchase(
            self.conn, member=member, purchase=body, terminal=self.terminal,
            idempotency=Idempotency(self.terminal.terminal_id, key,
                                    request_hash("POST", "/v1/pos/purchases", body)),
            rulebook=self.rulebook, programme=PROGRAMME, now=self.now))

    @rule(member=members, total=st.integers(min_value=0, max_value=50_000),
          redeem=st.integers(min_value=0, max_value=600))
    def purchase(self, member: UUID, total: int, redeem: int) -> None:
        redeem = min(redeem, total)
        body = self._purchase_body(member, total, redeem)
        order = _spendable_order(self.rows, self._survivor(member), self.now)
        key = f"k-{next(_numbers)}"
        try:
            outcome = self._record(member, body, key)
        except (InsufficientPoints, InvalidInput):
            return
        assert outcome.status == 201
        assert not outcome.replayed
        recorded = msgspec.json.decode(outcome.body)
        self.purchases.append({"id": UUID(recorded["purchase_id"]), "total": total,
                               "body": body, "key": key, "response": outcome.body})
        if redeem:
            self._check_fifo(order, "redeem", UUID(recorded["purchase_id"]))

    @precondition(lambda self: bool(self.purchases))
    @rule(data=st.data(), same_key=st.booleans())
    def retry_a_purchase(self, data: st.DataObject, same_key: bool) -> None:
        bought = data.draw(st.sampled_from(self.purchases))
        body = bought["body"]
        if same_key:
            # Whatever happened since, the retry gets the first response back, unchanged.
            outcome = self._record(body.member.id, body, bought["key"])
            assert outcome.replayed
            assert outcome.body == bought["response"]
            return
        with pytest.raises(LoyaltyError) as refused:
            self._record(body.member.id, body, f"other-{next(_numbers)}")
        assert refused.value.code == "receipt_already_recorded"

    @precondition(lambda self: bool(self.purchases))
    @rule(data=st.data(), share=st.integers(min_value=1, max_value=100))
    def return_part(self, data: st.DataObject, share: int) -> None:
        bought = data.draw(st.sampled_from(self.purchases))
        amount = max(1, bought["total"] * share // 100)
        assert self.terminal is not None
        request = ReturnRequest(amount=amount)
        try:
            self.run(record_return(
                self.conn, purchase_id=bought["id"], request=request, terminal=self.terminal,
                idempotency=Idempotency(self.terminal.terminal_id, f"r-{next(_numbers)}",
                                        request_hash("POST", "/r", request)),
                now=self.now))
        except InvalidInput as exc:
            refused = exc.code
            assert refused == "return_exceeds_purchase"

    @rule(member=members, points=st.integers(min_value=-300, max_value=300).filter(bool))
    def adjust(self, member: UUID, points: int) -> None:
        order = _spendable_order(self.rows, self._survivor(member), self.now)
        key = f"a-{next(_numbers)}"
        asked = {"member": member, "points": points, "key": key}
        try:
            outcome = self._adjust(member=member, points=points, key=key)
        except InsufficientPoints:
            return
        assert not outcome.replayed
        self.adjustments.append({**asked, "response": outcome.body})
        if points < 0:
            recorded = msgspec.json.decode(outcome.body, type=AdjustmentRecorded)
            self._check_fifo(order, "adjust", recorded.entry_id, by_entry=True)

    def _adjust(self, *, member: UUID, points: int, key: str) -> Any:
        body = Adjustment(points=points, reason="property test")
        return self.run(adjust_points(
            self.conn, member_id=member, points=points, reason=body.reason,
            staff_id=UUID(int=1), rulebook=self.rulebook, programme=PROGRAMME, now=self.now,
            idempotency=Idempotency(UUID(int=1), key, request_hash(
                "POST", f"/v1/members/{member}/adjustments", body))))

    @precondition(lambda self: bool(self.adjustments))
    @rule(data=st.data())
    def retry_an_adjustment(self, data: st.DataObject) -> None:
        # Whatever happened since (expiry, merges, spending), the retry changes nothing.
        made = data.draw(st.sampled_from(self.adjustments))
        outcome = self._adjust(member=made["member"], points=made["points"], key=made["key"])
        assert outcome.replayed
        assert outcome.body == made["response"]

    @rule(member=members, action=st.sampled_from(["site_visit", "app_checkin", "sns_share"]))
    def action(self, member: UUID, action: str) -> None:
        target = f"https://example.com/{next(_numbers) % 3}" if action == "sns_share" else None
        self.run(record_action(self.conn, member_id=member, action=action, target=target,
                               rulebook=self.rulebook, programme=PROGRAMME, now=self.now))

    @rule(hours=st.integers(min_value=1, max_value=24 * 40))
    def time_passes(self, hours: int) -> None:
        self.now += dt.timedelta(hours=hours)

    @rule()
    def expiry_run(self) -> None:
        self.run(expire_points(self.conn, now=self.now, batch_size=2))
        again = self.run(expire_points(self.conn, now=self.now, batch_size=2))
        assert again == {"lots": 0, "points": 0, "members": 0}

    @rule()
    def release_run(self) -> None:
        self.run(release_points(self.conn, now=self.now, batch_size=2))
        again = self.run(release_points(self.conn, now=self.now, batch_size=2))
        assert again == {"lots": 0, "points": 0, "members": 0}

    @rule(survivor=members, merged=members)
    def merge(self, survivor: UUID, merged: UUID) -> None:
        if survivor == merged or survivor in self.merged or merged in self.merged:
            return
        self.run(merge_members(self.conn, survivor_id=survivor, merged_id=merged,
                               staff_id=UUID(int=1), now=self.now))
        self.merged.add(merged)

    # -- checks ----------------------------------------------------------------------------

    def _survivor(self, member: UUID) -> UUID:
        while member in self.merged:
            member = self.run(self.conn.fetchval(
                "select merged_into from members where member_id = $1", member))
        return member

    def _check_fifo(self, order: list[UUID], kind: str, link: UUID,
                    by_entry: bool = False) -> None:
        rows = self.run(read_rows(self.conn))
        column = "entry_id" if by_entry else "purchase_id"
        (entry,) = [e for e in rows.entries if e["kind"] == kind and e[column] == link]
        taken = [a for a in rows.allocations if a["entry_id"] == entry["entry_id"]]
        lots = {lot["lot_id"]: lot for lot in rows.lots}
        used = sorted((a["lot_id"] for a in taken), key=order.index)
        assert used == order[: len(used)], "a redemption skipped an earlier-expiring lot"
        for lot_id in used[:-1]:
            assert lots[lot_id]["remaining"] == 0, "drew on a later lot before emptying one"

    @invariant()
    def ledger_is_consistent(self) -> None:
        rows = self.run(read_rows(self.conn))
        check_invariants(rows)
        check_append_only(self.rows, rows)
        self.rows = rows


MACHINE_CONTEXT: dict[str, Any] = {}


@pytest.fixture
def machine_database(fresh_database: str) -> Any:
    loop = asyncio.new_event_loop()

    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(fresh_database)
        await init_connection(conn)
        return conn

    conn = loop.run_until_complete(connect())
    MACHINE_CONTEXT.update(loop=loop, conn=conn)
    yield
    loop.run_until_complete(conn.close())
    loop.close()
    MACHINE_CONTEXT.clear()


def test_ledger_invariants_hold_under_random_operations(machine_database: Any) -> None:
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(max_examples=60, stateful_step_count=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
