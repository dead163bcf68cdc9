"""The tier programme for marketing staff: read it, replace it (a new earning-rules version)."""

from __future__ import annotations

import msgspec
from litestar import Controller, get, put
from litestar.params import JSONBody

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, Db, Staff, Svc
from api.idempotency import idempotent
from api.rules import rule_change_policy
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS
from loyalty.points.rules import current_rules, replace_rules
from loyalty.points.tiers import check_tier_coupons
from schemas.rules import TierProgrammeChange, TierProgrammeSet


class TiersController(Controller):
    path = "/v1/tiers"
    tags = ["tiers"]
    guards = [staff_with(*MARKETING_EDITORS)]
    dependencies = STAFF_DEPENDENCIES

    @get("", operation_id="getTiers")
    async def current(self, conn: Db) -> TierProgrammeSet:
        """The levels, their thresholds and benefits, and the measure they are reached on."""
        rules = await current_rules(conn)
        return TierProgrammeSet(version=rules.version, tiers=rules.rules.tiers)

    @put("", operation_id="replaceTiers")
    @idempotent
    async def replace(self, data: JSONBody[TierProgrammeChange], staff: Staff,
                      conn: Db, services: Svc) -> TierProgrammeSet:
        """A new tier programme, as a new version of the earning rules (the rest unchanged).
        Members move up at their next purchase and are re-evaluated at period end. Tier
        multipliers are earning rules: held to the same range and confirmation."""
        tiers = data.programme()
        await check_tier_coupons(conn, tiers)
        current = await current_rules(conn)
        saved = await replace_rules(conn, msgspec.structs.replace(current.rules, tiers=tiers),
                                    staff_id=staff.staff_id, confirmed=data.confirm,
                                    policy=rule_change_policy(services))
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="tiers.replace", subject_kind="earning_rules",
                           subject_id=None,
                           details={"version": saved.version, "confirm": data.confirm})
        return TierProgrammeSet(version=saved.version, tiers=saved.rules.tiers)
