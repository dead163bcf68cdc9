"""Earning rules for marketing staff: read, replace (a new version), simulate."""

from __future__ import annotations

from litestar import Controller, get, post, put
from litestar.params import JSONBody

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, Db, Services, Staff, Svc, utc_now
from api.idempotency import idempotent
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS
from loyalty.core.errors import InvalidInput
from loyalty.points.earning import (
    ActionCounts,
    PurchaseFacts,
    action_points,
    check_points_in_range,
    purchase_points,
)
from loyalty.points.rules import RuleChangePolicy, current_rules, replace_rules, rule_history
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
        if (data.purchase is None) == (data.action is None):
            raise InvalidInput("simulate either a purchase or an action", field="purchase")
        if data.rules is not None:
            check_points_in_range(data.rules)
            version, rules = 0, data.rules
        else:
            current = await current_rules(conn)
            version, rules = current.version, current.rules
        programme = services.programme
        tz = programme.timezone
        if data.purchase is not None:
            p = data.purchase
            facts = PurchaseFacts(
                occurred_at=p.occurred_at or utc_now(), store_code=p.store_code, total=p.total,
                lines=p.lines, redeem_points=p.redeem_points, first_purchase=p.first_purchase,
                birth_date=p.birth_date,
                birthday_bonus_year=(p.occurred_at or utc_now()).astimezone(tz).year
                if p.birthday_bonus_given_this_year else None,
                tier=next((t for t in rules.tiers.levels if t.code == p.tier), None),
            )
            earned = purchase_points(rules, version, facts, tz,
                                     ceiling=programme.max_points_per_purchase)
            return SimulationResult(points=earned.points, trace=earned.trace)
        assert data.action is not None
        a = data.action
        award = action_points(rules, version, a.type, a.target,
                              ActionCounts(a.today, a.this_month, a.for_target),
                              ceiling=programme.max_points_per_action)
        return SimulationResult(points=award.points, trace=award.trace, reason=award.reason)


def rule_change_policy(services: Services) -> RuleChangePolicy:
    """What a change of the rules or the tiers is held to, from the programme's settings."""
    return RuleChangePolicy(
        timezone=services.programme.timezone,
        max_points_per_purchase=services.programme.max_points_per_purchase,
        confirm_factor=services.settings.rule_change_confirm_factor)
