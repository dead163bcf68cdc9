"""Earning rules: the version in force in words, an editor that saves a new version, a
simulation with its trace, and the history of versions with a diff between any two. The same
functions as /v1/earning-rules (loyalty.points.rules), the same roles (MARKETING_EDITORS)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import msgspec
from babel.numbers import format_currency, get_currency_precision
from litestar import Response, get, post
from litestar.params import QueryParameter, URLEncodedBody
from litestar.response import Redirect

from console.pages import language_of, render, staff_session
from console.rulebook import (
    Problem,
    decoded,
    describe_condition,
    pretty_json,
    problem_of,
    rules_diff,
)
from console.services import AnyRequest, services
from console.session import check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS
from loyalty.core.db import transaction
from loyalty.core.errors import LoyaltyError
from loyalty.core.programme import Programme
from loyalty.points.rules import (
    RuleChangePolicy,
    current_rules,
    replace_rules,
    rule_history,
    rule_version_authors,
    simulate_earning,
)
from schemas.base import decode_edge, whole
from schemas.points import Simulation
from schemas.rules import EarningRules, RuleSet

# The editor's text: far more than any rule set within the schema's bounds needs.
MAX_RULES_TEXT = 2_000_000
# Rows of purchase lines the simulation form offers.
SIMULATED_LINES = 3
VersionParam = Annotated[str | None, QueryParameter(max_length=10, pattern=whole(r"[0-9]*"))]
FromVersion = Annotated[str | None, QueryParameter(name="from", max_length=10,
                                                   pattern=whole(r"[0-9]*"))]


class RulesForm(msgspec.Struct):
    rules: str = ""
    version: str = ""
    confirm: str = ""
    csrf_token: str = ""


def money_formatter(request: AnyRequest) -> Callable[[int], str]:
    """Amounts in minor units as the staff member's language writes the programme's currency."""
    settings = services(request).settings
    currency, locale = settings.currency, language_of(request)
    scale = 10 ** get_currency_precision(currency)
    return lambda amount: format_currency(amount / scale, currency, locale=locale)


def _read_view(request: AnyRequest, rule_set: RuleSet) -> dict[str, Any]:
    """What the template needs to show ``rule_set`` in words."""
    rules = rule_set.rules
    return {
        "rule_set": rule_set,
        "money": money_formatter(request),
        "rules": rules,
        "expiry_kind": type(rules.expiry).__struct_config__.tag,
        "conditions": [[describe_condition(c) for c in m.when] for m in rules.multipliers],
        "bonus_kinds": [type(b).__struct_config__.tag for b in rules.bonuses],
    }


@get("/rules")
async def rules_page(request: AnyRequest, saved: VersionParam = None) -> Response[str]:
    """The version in force, the simulation forms and the history of versions."""
    svc = services(request)
    session = await staff_session(request, MARKETING_EDITORS)
    async with transaction(svc.pool) as conn:
        current = await current_rules(conn)
        authors = await rule_version_authors(conn)
    return render(request, "rules.html", session=session, authors=authors,
                  saved=int(saved) if saved else None, lines=range(SIMULATED_LINES),
                  **_read_view(request, current))


@get("/rules/edit")
async def rules_editor(request: AnyRequest) -> Response[str]:
    """The editor, holding the version in force as JSON."""
    svc = services(request)
    session = await staff_session(request, MARKETING_EDITORS)
    async with transaction(svc.pool) as conn:
        current = await current_rules(conn)
    return render(request, "rules_edit.html", session=session, text=pretty_json(current.rules),
                  version=current.version, problem=None, confirm=False)


@post("/rules/edit", status_code=303)
async def save_rules(request: AnyRequest, data: URLEncodedBody[RulesForm]) -> Response[Any]:
    """A new version, as PUT /v1/earning-rules makes it: refused (the editor again, 400, with
    the field the problem is in) if the JSON is not a rule set or the rules break a limit, and
    (409) if another version was saved since the editor was opened."""
    svc = services(request)
    session = await staff_session(request, MARKETING_EDITORS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    confirmed = data.confirm == "yes"

    def again(problem: Problem, status: int) -> Response[str]:
        return render(request, "rules_edit.html", session=session, status_code=status,
                      text=data.rules, version=data.version, problem=problem, confirm=confirmed)

    if len(data.rules) > MAX_RULES_TEXT:
        return again(Problem("", f"the rules are longer than {MAX_RULES_TEXT} characters"), 400)
    try:
        rules: EarningRules = decoded(data.rules, EarningRules, decode_edge)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        return again(problem_of(error, data.rules), 400)
    except RecursionError:
        return again(Problem("", "JSON nested too deeply"), 400)
    async with transaction(svc.pool) as conn:
        current = await current_rules(conn)
        if data.version != str(current.version):
            return again(Problem("version", "stale"), 409)
        try:
            saved = await replace_rules(conn, rules, staff_id=session.principal.staff_id,
                                        confirmed=confirmed,
                                        policy=RuleChangePolicy.from_settings(svc.settings))
        except LoyaltyError as error:
            return again(Problem(error.field or "", error.detail), 400)
        await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                           action="earning_rules.replace", subject_kind="earning_rules",
                           subject_id=None, details={"version": saved.version,
                                                     "confirm": confirmed, "via": "console"})
    return Redirect(f"/console/rules?saved={saved.version}", status_code=303)


def _simulation(form: dict[str, str], lines: list[dict[str, str]], tz: ZoneInfo) -> Simulation:
    """The form as POST /v1/earning-rules/simulate takes it; raises msgspec's errors."""
    if form.get("kind") == "action":
        action: dict[str, Any] = {"type": form.get("type", ""),
                                  "target": form.get("target") or None}
        for count in ("today", "this_month", "for_target"):
            action[count] = form.get(count) or 0
        return msgspec.convert({"action": action}, Simulation, strict=False,
                               dec_hook=decode_edge)
    purchase: dict[str, Any] = {
        "store_code": form.get("store_code", ""), "total": form.get("total") or 0,
        "redeem_points": form.get("redeem_points") or 0,
        "first_purchase": form.get("first_purchase") == "yes",
        "tier": form.get("tier") or None,
    }
    if form.get("occurred_at"):
        try:
            local = dt.datetime.fromisoformat(form["occurred_at"])
        except ValueError:
            raise msgspec.ValidationError(
                "give the time as YYYY-MM-DDTHH:MM - at `$.purchase.occurred_at`") from None
        purchase["occurred_at"] = local.replace(tzinfo=tz).isoformat()
    filled = [line for line in lines if any(line.values())]
    if filled:
        purchase["lines"] = [{key: value for key, value in line.items() if value}
                             for line in filled]
    return msgspec.convert({"purchase": purchase}, Simulation, strict=False,
                           dec_hook=decode_edge)


@post("/rules/simulate", status_code=200)
async def simulate_rules(request: AnyRequest) -> Response[str]:
    """What a purchase or an action would earn under the rules in force, with the trace the
    API returns; nothing is written. An htmx request gets the result alone."""
    svc = services(request)
    session = await staff_session(request, MARKETING_EDITORS)
    form = await request.form()
    check_csrf(request, session.csrf_token, form.get("csrf_token"))
    fields = {key: str(value)[:200] for key, value in form.items() if isinstance(value, str)}
    columns = ("sku", "category", "quantity", "unit_price")
    values = {column: [str(v)[:200] for v in form.getall(column, [])] for column in columns}
    lines = [{column: values[column][i] if i < len(values[column]) else ""
              for column in columns} for i in range(min(SIMULATED_LINES, max(
                  (len(v) for v in values.values()), default=0)))]
    programme = Programme.from_settings(svc.settings)
    partial = bool(request.headers.get("hx-request"))
    result, problem = None, None
    try:
        simulation = _simulation(fields, lines, programme.timezone)
        async with transaction(svc.pool) as conn:
            result = await simulate_earning(conn, simulation, programme,
                                            dt.datetime.now(dt.UTC))
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        problem = problem_of(error)
    except LoyaltyError as error:
        problem = Problem(error.field or "", error.detail)
    # The problem is shown where the trace would be (htmx swaps a 4xx in: base.html), or on
    # the whole page for a browser without htmx.
    status = 400 if problem is not None else 200
    if partial:
        return render(request, "rules_simulation.html", session=session, status_code=status,
                      result=result, problem=problem, kind=fields.get("kind", "purchase"))
    async with transaction(svc.pool) as conn:
        current = await current_rules(conn)
        authors = await rule_version_authors(conn)
    return render(request, "rules.html", session=session, status_code=status, authors=authors,
                  saved=None, lines=range(SIMULATED_LINES), result=result, problem=problem,
                  kind=fields.get("kind", "purchase"), **_read_view(request, current))


@get("/rules/diff")
async def rules_diff_page(
    request: AnyRequest, from_: FromVersion = None, to: VersionParam = None,
) -> Response[str]:
    """The lines that differ between two versions (by default the one in force and the one
    before it), as pretty JSON with keys sorted."""
    svc = services(request)
    session = await staff_session(request, MARKETING_EDITORS)
    async with transaction(svc.pool) as conn:
        history = await rule_history(conn)
        authors = await rule_version_authors(conn)
    by_version = {rule_set.version: rule_set for rule_set in history}
    newest = history[0].version
    newer = int(to) if to else newest
    older = int(from_) if from_ else max(newer - 1, 1)
    missing = [v for v in (older, newer) if v not in by_version]
    if missing:
        return render(request, "rules_diff.html", session=session, status_code=400,
                      authors=authors, older=older, newer=newer, lines=None, missing=missing)
    lines = rules_diff(by_version[older].rules, by_version[newer].rules)
    return render(request, "rules_diff.html", session=session, authors=authors, older=older,
                  newer=newer, lines=lines, missing=[])
