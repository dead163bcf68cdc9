"""Tiers: the levels, the measure and window they are reached on, their benefits and how many
members hold each, and a form that saves a new tier programme as /v1/tiers does (a new
earning-rules version, the rest unchanged). Roles as the API's: MARKETING_EDITORS."""

from __future__ import annotations

from typing import Any

import msgspec
from babel.numbers import format_decimal
from litestar import Response, get, post
from litestar.response import Redirect

from console.pages import language_of, render, staff_session
from console.rulebook import Problem, problem_of
from console.rules import VersionParam, money_formatter
from console.services import AnyRequest, services
from console.session import check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS
from loyalty.core.db import transaction
from loyalty.core.errors import LoyaltyError
from loyalty.points.rules import RuleChangePolicy, current_rules, replace_rules
from loyalty.points.tiers import check_tier_coupons, kept_members_per_tier
from schemas.base import decode_edge
from schemas.rules import TierProgramme, TierProgrammeChange

# Empty rows the form offers below the levels, to add new ones.
NEW_ROWS = 2
COLUMNS = ("code", "name", "threshold", "multiplier_percent", "coupon_template_id")
# Each cell's label, for screen readers (the column's heading says it to everyone else).
COLUMN_LABELS = {
    "code": "Code of level %(n)s",
    "name": "Name of level %(n)s",
    "threshold": "Threshold of level %(n)s",
    "multiplier_percent": "Earning multiplier of level %(n)s",
    "coupon_template_id": "Coupon template of level %(n)s",
}
# Each cell of the form, bounded before it is read (the schema's bounds are far below).
CELL = 200


def _rows_of(tiers: TierProgramme) -> list[dict[str, str]]:
    rows = [{"code": t.code, "name": t.name, "threshold": str(t.threshold),
             "multiplier_percent": str(t.multiplier_percent),
             "coupon_template_id": str(t.coupon_template_id or "")} for t in tiers.levels]
    return rows + [dict.fromkeys(COLUMNS, "") for _ in range(NEW_ROWS)]


@get("/tiers")
async def tiers_page(request: AnyRequest, saved: VersionParam = None) -> Response[str]:
    """The tier programme in words, and how many members are in each level."""
    svc = services(request)
    session = await staff_session(request, MARKETING_EDITORS)
    async with transaction(svc.pool) as conn:
        current = await current_rules(conn)
    kept = await kept_members_per_tier(svc.redis, svc.pool)
    counts = kept.value
    tiers = current.rules.tiers
    codes = {level.code for level in tiers.levels}
    locale = language_of(request)
    money = money_formatter(request)
    return render(
        request, "tiers.html", session=session, version=current.version, tiers=tiers,
        counts=counts, counted_at=kept.computed_at, without=counts.get(None, 0),
        elsewhere=sum(n for code, n in counts.items() if code is not None and code not in codes),
        saved=int(saved) if saved else None,
        threshold=money if tiers.measure == "spend" else
        (lambda n: format_decimal(n, locale=locale)))


@get("/tiers/edit")
async def tiers_editor(request: AnyRequest) -> Response[str]:
    svc = services(request)
    session = await staff_session(request, MARKETING_EDITORS)
    async with transaction(svc.pool) as conn:
        current = await current_rules(conn)
    tiers = current.rules.tiers
    return render(request, "tiers_edit.html", session=session, version=current.version,
                  measure=tiers.measure, period=tiers.period, rows=_rows_of(tiers),
                  problems={}, general=None, confirm=False, column_labels=COLUMN_LABELS)


def _programme(form: dict[str, str], rows: list[dict[str, str]]) -> tuple[Any, list[int]]:
    """The form as PUT /v1/tiers takes it, and which form row each level came from (rows left
    empty are not levels)."""
    used = [i for i, row in enumerate(rows) if any(row.values())]
    levels = []
    for i in used:
        level: dict[str, Any] = {"code": rows[i]["code"], "name": rows[i]["name"],
                                 "threshold": rows[i]["threshold"] or 0}
        if rows[i]["multiplier_percent"]:
            level["multiplier_percent"] = rows[i]["multiplier_percent"]
        if rows[i]["coupon_template_id"]:
            level["coupon_template_id"] = rows[i]["coupon_template_id"]
        levels.append(level)
    return {"measure": form.get("measure", ""), "period": form.get("period", ""),
            "levels": levels}, used


def _field(path: str, used: list[int]) -> str:
    """A path into the levels sent (``levels[1].threshold``) as the form row it came from."""
    if path.startswith("levels[") and "]" in path:
        index, rest = path[len("levels["):].split("]", 1)
        if index.isdigit() and int(index) < len(used):
            return f"levels[{used[int(index)]}]{rest}"
    return path


@post("/tiers/edit", status_code=303)
async def save_tiers(request: AnyRequest) -> Response[Any]:
    """A new tier programme, checked as PUT /v1/tiers checks it; refused with the form again
    (400), the message next to the field it is about, and nothing saved."""
    svc = services(request)
    session = await staff_session(request, MARKETING_EDITORS)
    form = await request.form()
    check_csrf(request, session.csrf_token, form.get("csrf_token"))
    fields = {key: str(value)[:CELL] for key, value in form.items() if isinstance(value, str)}
    columns = {column: [str(v)[:CELL] for v in form.getall(column, [])] for column in COLUMNS}
    count = min(max((len(v) for v in columns.values()), default=0), 100)
    rows = [{column: columns[column][i].strip() if i < len(columns[column]) else ""
             for column in COLUMNS} for i in range(count)]
    confirmed = fields.get("confirm") == "yes"
    data, used = _programme(fields, rows)

    def again(problem: Problem, status: int = 400) -> Response[str]:
        path = _field(problem.path, used)
        if not path and problem.message.startswith("tier "):
            path = "levels"  # thresholds not increasing, codes not unique: the whole table
        by_field = path.startswith("levels") or path in ("measure", "period", "confirm")
        return render(request, "tiers_edit.html", session=session, status_code=status,
                      version=fields.get("version", ""), measure=fields.get("measure"),
                      period=fields.get("period"), rows=rows or _rows_of(TierProgramme()),
                      problems={path: problem.message} if by_field else {},
                      general=None if by_field else problem, confirm=confirmed,
                      column_labels=COLUMN_LABELS)

    try:
        change = msgspec.convert(data, TierProgrammeChange, strict=False, dec_hook=decode_edge)
    except msgspec.ValidationError as error:
        return again(problem_of(error))
    tiers = change.programme()
    async with transaction(svc.pool) as conn:
        current = await current_rules(conn)
        if fields.get("version") != str(current.version):
            return again(Problem("version", "stale"), 409)
        try:
            await check_tier_coupons(conn, tiers)
            saved = await replace_rules(
                conn, msgspec.structs.replace(current.rules, tiers=tiers),
                staff_id=session.principal.staff_id, confirmed=confirmed,
                policy=RuleChangePolicy.from_settings(svc.settings))
        except LoyaltyError as error:
            return again(Problem(error.field or "", error.detail))
        await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                           action="tiers.replace", subject_kind="earning_rules",
                           subject_id=None, details={"version": saved.version,
                                                     "confirm": confirmed, "via": "console"})
    return Redirect(f"/console/tiers?saved={saved.version}", status_code=303)
