"""Earning rules for marketing staff: read, replace (a new version), simulate, backtest."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, Response, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, Db, Ledger, Services, Staff, Svc, utc_now
from api.idempotency import idempotent
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS
from loyalty.insights.backtest import BacktestPolicy, get_backtest, start_backtest
from loyalty.points.rules import (
    RuleChangePolicy,
    current_rules,
    replace_rules,
    rule_history,
    simulate_earning,
)
from schemas.points import Simulation, SimulationResult
from schemas.rules import Backtest, BacktestRequest, EarningRulesChange, RuleSet


class EarningRulesController(Controller):
    path = "/v1/earning-rules"
    tags = ["earning rules"]
    guards = [staff_with(*MARKETING_EDITORS)]
    dependencies = STAFF_DEPENDENCIES

    @get("", operation_id="getEarningRules")
    async def current(self, conn: Db) -> RuleSet:
        """The rules in force and their version."""
        return await current_rules(conn)

    @get("/versions", operation_id="listEarningRuleVersions")
    async def versions(self, conn: Db) -> list[RuleSet]:
        """Every version, newest first: old entries are explained by the version they name."""
        return await rule_history(conn)

    @put("", operation_id="replaceEarningRules")
    @idempotent
    async def replace(self, data: JSONBody[EarningRulesChange], staff: Staff, conn: Db,
                      services: Svc) -> RuleSet:
        """A new version of the rules, in force from the next purchase; the old one stays.
        Refused (422) if a purchase could earn out of range under them, or if they multiply
        what recent purchases earn by more than allowed and ``confirm`` is not true."""
        saved = await replace_rules(conn, data.rules(), staff_id=staff.staff_id,
                                    confirmed=data.confirm, policy=rule_change_policy(services))
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="earning_rules.replace", subject_kind="earning_rules",
                           subject_id=None,
                           details={"version": saved.version, "confirm": data.confirm})
        return saved

    @post("/simulate", operation_id="simulateEarning", status_code=200)
    async def simulate(self, data: JSONBody[Simulation], conn: Db,
                       services: Svc) -> SimulationResult:
        """Points and trace for a purchase or an action under the current (or given) rules;
        nothing is written."""
        return await simulate_earning(conn, data, services.programme, utc_now())

    @post("/backtest", operation_id="backtestEarningRules", status_code=200, responses={
        202: ResponseSpec(data_container=Backtest,
                          description="Started in the background: follow its Location")})
    @idempotent
    async def backtest(self, data: JSONBody[BacktestRequest], staff: Staff, ledger: Ledger,
                       services: Svc) -> Response[Backtest]:
        """What the purchases of business days ``from`` to ``to`` (at most 366) would have
        earned under ``rules`` against what they earned: in total, per tier, per store, and
        the change in liability. A period with up to ``LOYALTY_BACKTEST_SYNC_PURCHASES``
        purchases is answered at once (200); a larger one runs in the background (202, with
        the Location of its status and progress)."""
        # The row commits before the answer (``ledger`` is outside any transaction), so the
        # background run and a status read on any instance find it.
        backtest = await start_backtest(
            ledger, data, policy=backtest_policy(services), pool=services.jobs.pool,
            staff_id=staff.staff_id, now=utc_now())
        await record_audit(ledger, actor_kind="staff", actor_id=staff.staff_id,
                           action="earning_rules.backtest", subject_kind="rule_backtest",
                           subject_id=backtest.backtest_id,
                           details={"from": backtest.from_.isoformat(),
                                    "to": backtest.to.isoformat(), "purchases": backtest.total})
        location = f"/v1/earning-rules/backtests/{backtest.backtest_id}"
        return Response(backtest, status_code=200 if backtest.state == "done" else 202,
                        headers={"Location": location})

    @get("/backtests/{backtest_id:uuid}", operation_id="getEarningRulesBacktest")
    async def backtest_status(self, backtest_id: FromPath[UUID], conn: Db) -> Backtest:
        """A backtest: how many of its purchases are done, and its result once finished."""
        return await get_backtest(conn, backtest_id)


def rule_change_policy(services: Services) -> RuleChangePolicy:
    """What a change of the rules or the tiers is held to, from the programme's settings."""
    return RuleChangePolicy(
        timezone=services.programme.timezone,
        max_points_per_purchase=services.programme.max_points_per_purchase,
        confirm_factor=services.settings.rule_change_confirm_factor)


def backtest_policy(services: Services) -> BacktestPolicy:
    """What a backtest runs with, from the programme's settings."""
    return BacktestPolicy(programme=services.programme,
                          point_value=services.settings.point_value,
                          sync_purchases=services.settings.backtest_sync_purchases)
