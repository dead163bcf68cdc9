"""Earning rules for marketing staff: read, replace (a new version), simulate."""

from __future__ import annotations

from litestar import Controller, get, post, put
from litestar.params import JSONBody

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, Db, Services, Staff, Svc, utc_now
from api.idempotency import idempotent
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS
from loyalty.points.rules import (
    RuleChangePolicy,
    current_rules,
    replace_rules,
    rule_history,
    simulate_earning,
)
from schemas.points import Simulation, SimulationResult
from schemas.rules import EarningRulesChange, RuleSet


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


def rule_change_policy(services: Services) -> RuleChangePolicy:
    """What a change of the rules or the tiers is held to, from the programme's settings."""
    return RuleChangePolicy(
        timezone=services.programme.timezone,
        max_points_per_purchase=services.programme.max_points_per_purchase,
        confirm_factor=services.settings.rule_change_confirm_factor)
