"""The member's points read, served from the read model or not, under random sequences of
everything that changes points: byte for byte the full computation's answer.

The ledger's own state machine (test_ledger_properties.py: earns, redemptions, retries,
returns, adjustments, actions, expiry and release runs, merges, time passing, its invariants
after every step) with three more steps: reading a member's points (twice: the second read is
the stored one whenever nothing changed), a change of the earning rules (the point value, and an
expiry long enough for lots to enter the 90-day window later), and time moving exactly to a
moment a stored summary stops holding at, or just before it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

from loyalty.points.history import points_summary
from loyalty.points.rules import save_rules
from loyalty.points.summaries import member_points
from schemas.base import json_encoder
from schemas.rules import EarningRules, RollingExpiry
from tests.factories import PROGRAMME
from tests.loyalty.points.test_ledger_properties import LedgerMachine, machine_database

__all__ = ["machine_database"]  # the state machine's connection, a fixture of this module too


class SummaryMachine(LedgerMachine):
    @rule(member=LedgerMachine.members)
    def read_points(self, member: UUID) -> None:
        async def both() -> tuple[bytes, bytes, bytes, bool]:
            stored = await self._holding(member)
            served = await member_points(self.conn, member, rulebook=self.rulebook,
                                         programme=PROGRAMME, now=self.now)
            again = await member_points(self.conn, member, rulebook=self.rulebook,
                                        programme=PROGRAMME, now=self.now)
            full = json_encoder.encode(await points_summary(
                self.conn, member, rulebook=self.rulebook, programme=PROGRAMME, now=self.now))
            return served, again, full, stored

        served, again, full, stored = self.run(both())
        event("served from point_summaries" if stored else "computed")
        assert served == full
        assert again == full

    async def _holding(self, member: UUID) -> bool:
        """Whether the survivor's stored summary still holds now (the read will use it)."""
        return bool(await self.conn.fetchval(
            """
            with recursive chain as (
                select member_id, merged_into, 0 as hops from members where member_id = $1
                union all
                select m.member_id, m.merged_into, c.hops + 1
                  from members m join chain c on m.member_id = c.merged_into
            )
            select exists (
                select 1 from chain c
                  join point_balances b on b.member_id = c.member_id
                  join point_summaries s on s.member_id = c.member_id
                 where c.merged_into is null and s.balance_version = b.version
                   and s.rules_version = (select max(version) from earning_rule_versions)
                   and s.valid_from <= $2 and (s.valid_until is null or $2 < s.valid_until))
            """, member, self.now))

    @rule(point_value=st.integers(min_value=1, max_value=3),
          months=st.sampled_from([1, 4, 7]))
    def rules_change(self, point_value: int, months: int) -> None:
        self.run(save_rules(self.conn, EarningRules(
            pending_days=2, expiry=RollingExpiry(months=months), point_value=point_value),
            staff_id=None))

    @rule(just_before=st.booleans())
    def time_reaches_a_moment_a_summary_changes(self, just_before: bool) -> None:
        moment: dt.datetime | None = self.run(self.conn.fetchval(
            "select min(valid_until) from point_summaries where valid_until > $1", self.now))
        if moment is None:
            return
        if just_before:
            moment -= dt.timedelta(microseconds=1)
        self.now = max(self.now, moment)


def test_the_points_read_is_the_full_computation_whether_stored_or_not(
    machine_database: Any,
) -> None:
    run_state_machine_as_test(
        SummaryMachine,
        settings=settings(max_examples=100, stateful_step_count=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
