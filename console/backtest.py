"""Rule backtest: a marketer chooses a period and rules (the draft from the editor, or the rules
in force to start from) and reads what the period's purchases would have earned against what
they earned: in total, per tier, per store, and the change in liability. The same function as
POST /v1/earning-rules/backtest (loyalty.insights.backtest), the same roles
(MARKETING_EDITORS); a large period runs in the background and its page follows its progress."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from uuid import UUID

import msgspec
from babel.numbers import format_decimal
from litestar import Response, get, post
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Redirect

from console.pages import language_of, render, staff_session
from console.rulebook import Problem, decoded, pretty_json, problem_of
from console.rules import MAX_RULES_TEXT, money_formatter
from console.services import AnyRequest, services
from console.session import check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS
from loyalty.core.db import transaction
from loyalty.core.errors import LoyaltyError, NotFound
from loyalty.insights.backtest import MAX_DAYS, BacktestPolicy, get_backtest, start_backtest
from loyalty.points.rules import current_rules
from schemas.base import decode_edge
from schemas.rules import Backtest, BacktestRequest, EarningRules

# The period the form offers first: the last 30 business days.
DEFAULT_DAYS = 30


class BacktestForm(msgspec.Struct):
    rules: str = ""
    from_: str = msgspec.field(name="from", default="")
    to: str = ""
    # "prepare": the editor's draft, to show on the form before choosing the period.
    step: str = ""
    csrf_token: str = ""


def _policy(request: AnyRequest) -> BacktestPolicy:
    svc = services(request)
    return BacktestPolicy(programme=svc.programme, point_value=svc.settings.point_value,
                          sync_purchases=svc.settings.backtest_sync_purchases)


def _today(request: AnyRequest) -> dt.date:
    return dt.datetime.now(services(request).programme.timezone).date()


def signed(request: AnyRequest) -> Callable[[int], str]:
    """A difference as the staff member's language writes numbers, with its sign."""
    locale = language_of(request)
    return lambda value: ("+" if value > 0 else "") + format_decimal(value, locale=locale)


def _form(request: AnyRequest, session: Any, *, text: str, first: str, last: str,
          problem: Problem | None = None, status_code: int = 200) -> Response[str]:
    return render(request, "rules_backtest.html", session=session, status_code=status_code,
                  text=text, first=first, last=last, problem=problem,
                  max_days=MAX_DAYS, today=_today(request).isoformat())


@get("/rules/backtest")
async def backtest_page(request: AnyRequest) -> Response[str]:
    """The form: the rules in force as the starting draft, the last 30 days as the period."""
    svc = services(request)
    session = await staff_session(request, MARKETING_EDITORS)
    async with transaction(svc.pool) as conn:
        current = await current_rules(conn)
    last = _today(request)
    return _form(request, session, text=pretty_json(current.rules),
                 first=(last - dt.timedelta(days=DEFAULT_DAYS - 1)).isoformat(),
                 last=last.isoformat())


@post("/rules/backtest", status_code=303)
async def run_backtest(request: AnyRequest, data: URLEncodedBody[BacktestForm]) -> Response[Any]:
    """Start a backtest as POST /v1/earning-rules/backtest does and show its page; the form
    again (400) with the field to fix if the rules or the period are refused. From the editor
    (``step=prepare``) the draft is shown on the form, to choose the period first."""
    svc = services(request)
    session = await staff_session(request, MARKETING_EDITORS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    last = _today(request)
    first = data.from_ or (last - dt.timedelta(days=DEFAULT_DAYS - 1)).isoformat()
    to = data.to or last.isoformat()
    if data.step == "prepare":
        return _form(request, session, text=data.rules, first=first, last=to)

    def again(problem: Problem) -> Response[str]:
        return _form(request, session, text=data.rules, first=first, last=to, problem=problem,
                     status_code=400)

    if len(data.rules) > MAX_RULES_TEXT:
        return again(Problem("rules", f"the rules are longer than {MAX_RULES_TEXT} characters"))
    try:
        rules: EarningRules = decoded(data.rules, EarningRules, decode_edge)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        found = problem_of(error, data.rules)
        return again(Problem(f"rules.{found.path}".rstrip("."), found.message))
    except RecursionError:
        return again(Problem("rules", "JSON nested too deeply"))
    try:
        period = msgspec.convert({"rules": {}, "from": first, "to": to}, BacktestRequest,
                                 dec_hook=decode_edge)
    except msgspec.ValidationError as error:
        return again(problem_of(error))
    asked = msgspec.structs.replace(period, rules=rules)
    staff_id = session.principal.staff_id
    try:
        async with svc.pool.acquire() as conn:
            backtest = await start_backtest(conn, asked, policy=_policy(request),
                                            pool=svc.jobs.pool, staff_id=staff_id,
                                            now=dt.datetime.now(dt.UTC))
            await record_audit(conn, actor_kind="staff", actor_id=staff_id,
                               action="earning_rules.backtest", subject_kind="rule_backtest",
                               subject_id=backtest.backtest_id,
                               details={"from": first, "to": to, "purchases": backtest.total,
                                        "via": "console"})
    except LoyaltyError as error:
        field = error.field or ""
        return again(Problem(field if field in ("from", "to") else f"rules.{field}".rstrip("."),
                             error.detail))
    return Redirect(f"/console/rules/backtests/{backtest.backtest_id}", status_code=303)


async def _found(request: AnyRequest, backtest_id: UUID) -> Backtest | None:
    try:
        async with transaction(services(request).pool) as conn:
            return await get_backtest(conn, backtest_id)
    except NotFound:
        return None


def _view(request: AnyRequest, backtest: Backtest | None) -> dict[str, Any]:
    locale = language_of(request)
    done = 0 if backtest is None else min(backtest.done, backtest.total)
    return {"item": backtest, "money": money_formatter(request), "signed": signed(request),
            "number": lambda value: format_decimal(value, locale=locale),
            "status_code": 200 if backtest is not None else 404,
            "percent": done * 100 // backtest.total if backtest and backtest.total else 0}


@get("/rules/backtests/{backtest_id:uuid}")
async def backtest_result_page(request: AnyRequest, backtest_id: FromPath[UUID]) -> Response[str]:
    """A backtest: its comparison table, or its progress while it runs (polled)."""
    session = await staff_session(request, MARKETING_EDITORS)
    backtest = await _found(request, backtest_id)
    return render(request, "rules_backtest_result.html", session=session,
                  **_view(request, backtest))


@get("/rules/backtests/{backtest_id:uuid}/progress")
async def backtest_progress_partial(request: AnyRequest,
                                    backtest_id: FromPath[UUID]) -> Response[str]:
    """The progress, or the result once done, alone: htmx asks again every second."""
    session = await staff_session(request, MARKETING_EDITORS)
    backtest = await _found(request, backtest_id)
    return render(request, "rules_backtest_progress.html", session=session,
                  **_view(request, backtest))


BACKTEST_ROUTES = [backtest_page, run_backtest, backtest_result_page, backtest_progress_partial]
