"""Campaigns: the list, a form to make one from a segment, the launch behind a confirmation
that states its reach and cost, and its results against the holdout, through the functions
behind /v1/campaigns (loyalty.promotions.campaigns). Analysts read; admins and marketers make
and launch."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
from babel.numbers import format_currency, format_decimal, format_percent, get_currency_precision
from litestar import Response, get, post
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect

from console.campaign_chart import UpliftChart, uplift_chart
from console.i18n import translations
from console.pages import language_of, render, staff_session
from console.services import AnyRequest, services
from console.session import check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS, MARKETING_READERS
from loyalty.core.db import transaction
from loyalty.core.errors import InvalidInput
from loyalty.promotions.campaigns import (
    Reach,
    campaign_reach,
    campaign_results,
    create_campaign,
    get_campaign,
    launch_campaign,
    list_campaigns,
)
from loyalty.promotions.coupon_templates import get_template, list_templates
from loyalty.promotions.segments import get_segment, list_segments
from loyalty.promotions.store_events import get_event, list_events
from schemas.base import decode_edge, whole
from schemas.campaigns import (
    BonusPoints,
    Campaign,
    CampaignCreate,
    CampaignResults,
    Difference,
    EventInvitation,
    IssueCoupon,
    PointsMultiplier,
)
from schemas.coupons import FixedAmount, PercentOff

PAGE_SIZE = 25
# The choices the form lists (the newest); more are reached through the API.
CHOICES = 100
CHART_WIDTH = 560
Cursor = Annotated[str | None, QueryParameter(max_length=200,
                                              pattern=whole(r"[A-Za-z0-9_-]*"))]
SegmentParam = Annotated[str | None, QueryParameter(max_length=36,
                                                    pattern=whole(r"[0-9a-fA-F-]*"))]
ACTIONS = ("bonus_points", "issue_coupon", "points_multiplier", "event_invitation")
FIELDS = ("name", "description", "segment_id", "action", "template_id", "points", "reason",
          "percent", "event_id", "holdout_percent", "max_members", "channel", "starts_at",
          "ends_at")
# The console's own messages; both catalogues hold them.
MESSAGES = (
    "Enter a whole number.",
    "Enter a date and time such as 2026-12-24 10:00.",
    "Choose a segment.",
    "Choose what the campaign does.",
    "Choose the coupon template the treated members get.",
    "Choose the event the treated members are invited to.",
    "Campaign bonus",
)
OWN = frozenset(MESSAGES)
_PATH = re.compile(r"\$\.(?:action\.)?(\w+)")


class _Bad(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _whole(form: dict[str, str], name: str) -> int | None:
    text = form.get(name, "").replace(",", "")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise _Bad(name, MESSAGES[0]) from None


def _moment(form: dict[str, str], name: str, tz: ZoneInfo) -> str | None:
    text = form.get(name, "")
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        raise _Bad(name, MESSAGES[1]) from None
    return moment.replace(tzinfo=tz).isoformat()


def campaign_of(form: dict[str, str], *, tz: ZoneInfo) -> CampaignCreate:
    """The campaign the form says, checked by the API's wire type; _Bad names the field."""
    kind = form.get("action", "")
    if kind not in ACTIONS:
        raise _Bad("action", MESSAGES[3])
    action: dict[str, Any] = {"type": kind}
    match kind:
        case "bonus_points":
            action |= {"points": _whole(form, "points")}
            if form.get("reason"):
                action["reason"] = form["reason"]
        case "issue_coupon":
            if not form.get("template_id"):
                raise _Bad("template_id", MESSAGES[4])
            action["template_id"] = form["template_id"]
        case "points_multiplier":
            action["percent"] = _whole(form, "percent")
        case "event_invitation":
            if not form.get("event_id"):
                raise _Bad("event_id", MESSAGES[5])
            action["event_id"] = form["event_id"]
    if not form.get("segment_id"):
        raise _Bad("segment_id", MESSAGES[2])
    data: dict[str, Any] = {
        "name": form.get("name", ""), "description": form.get("description", ""),
        "action": action, "segment_id": form.get("segment_id"),
        "starts_at": _moment(form, "starts_at", tz), "ends_at": _moment(form, "ends_at", tz),
        "holdout_percent": _whole(form, "holdout_percent") or 0,
        "max_members": _whole(form, "max_members"), "channel": form.get("channel") or None}
    try:
        created: CampaignCreate = msgspec.convert(data, CampaignCreate, dec_hook=decode_edge)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = _PATH.search(message)
        name = found.group(1) if found else (
            "ends_at" if "ends_at" in message or "multiplier" in message else
            "starts_at" if "time zone" in message else "segment_id")
        raise _Bad(name if name in FIELDS else "name", message) from None
    return created


async def _choices(request: AnyRequest) -> dict[str, Any]:
    async with transaction(services(request).pool) as conn:
        segments = await list_segments(conn, limit=CHOICES)
        templates = await list_templates(conn, active=True, limit=CHOICES, cursor=None)
        events = await list_events(conn, limit=CHOICES)
    return {"segments": segments.items, "templates": templates.items,
            "events": [e for e in events.items if e.status == "scheduled"]}


def _form(form: Any) -> dict[str, str]:
    return {name: str(form.get(name) or "").strip()[:2000] for name in FIELDS}


@get("/campaigns")
async def campaigns_page(request: AnyRequest, cursor: Cursor = None) -> Response[str]:
    """Campaigns newest first, with their status and groups."""
    session = await staff_session(request, MARKETING_READERS)
    async with transaction(services(request).pool) as conn:
        page = await list_campaigns(conn, limit=PAGE_SIZE, cursor=cursor or None)
    return render(request, "campaigns.html", session=session, page=page, cursor=cursor,
                  editor=session.role in MARKETING_EDITORS)


@get("/campaigns/new")
async def new_campaign_page(request: AnyRequest, segment_id: SegmentParam = None
                            ) -> Response[str]:
    """The form, the segment chosen when one is named."""
    session = await staff_session(request, MARKETING_EDITORS)
    reason = translations(language_of(request)).gettext("Campaign bonus")
    values = {"segment_id": segment_id or "", "action": "bonus_points", "holdout_percent": "10",
              "reason": reason}
    return render(request, "campaign_new.html", session=session, own_messages=OWN,
                  values=values, errors={}, **await _choices(request))


@post("/campaigns/new", status_code=303)
async def create_campaign_submit(request: AnyRequest) -> Response[Any]:
    """Make a draft campaign (POST /v1/campaigns); a wrong field is the form again, 400,
    with the message next to it."""
    session = await staff_session(request, MARKETING_EDITORS)
    posted = await request.form()
    check_csrf(request, session.csrf_token, posted.get("csrf_token"))
    values = _form(posted)
    tz = ZoneInfo(services(request).settings.timezone)
    try:
        data = campaign_of(values, tz=tz)
        async with transaction(services(request).pool) as conn:
            campaign = await create_campaign(conn, data, staff_id=session.principal.staff_id)
            await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                               action="campaign.create", subject_kind="campaign",
                               subject_id=campaign.campaign_id, details={"via": "console"})
    except _Bad as exc:
        return render(request, "campaign_new.html", session=session, own_messages=OWN,
                      values=values,
                      errors={exc.field: str(exc)}, status_code=400, **await _choices(request))
    except InvalidInput as exc:
        name = (exc.field or "name").removeprefix("action.")
        return render(request, "campaign_new.html", session=session, own_messages=OWN,
                      values=values,
                      errors={name if name in FIELDS else "name": exc.detail}, status_code=400,
                      **await _choices(request))
    return Redirect(f"/console/campaigns/{campaign.campaign_id}", status_code=303)


async def _campaign(request: AnyRequest, campaign_id: UUID) -> tuple[Campaign, str | None]:
    async with transaction(services(request).pool) as conn:
        campaign = await get_campaign(conn, campaign_id)
        segment = (await get_segment(conn, campaign.segment_id)
                   if campaign.segment_id else None)
    return campaign, segment.name if segment else None


@get("/campaigns/{campaign_id:uuid}")
async def campaign_page(request: AnyRequest, campaign_id: FromPath[UUID]) -> Response[str]:
    """One campaign: what it does, to whom, its status and groups."""
    session = await staff_session(request, MARKETING_READERS)
    campaign, segment_name = await _campaign(request, campaign_id)
    return render(request, "campaign.html", session=session, campaign=campaign,
                  segment_name=segment_name, action=_action(request, campaign),
                  editor=session.role in MARKETING_EDITORS,
                  launched=request.query_params.get("launched") == "1")


def _money(request: AnyRequest, minor: float) -> str:
    currency = services(request).settings.currency
    return format_currency(minor / 10 ** get_currency_precision(currency), currency,
                           locale=language_of(request))


def _count(request: AnyRequest, n: float) -> str:
    return format_decimal(n, locale=language_of(request))


def _action(request: AnyRequest, campaign: Campaign) -> dict[str, Any]:
    """The action as the pages show it: its kind and its figures."""
    match campaign.action:
        case BonusPoints(points=points, reason=reason):
            return {"kind": "bonus_points", "points": _count(request, points), "reason": reason}
        case IssueCoupon(template_id=template_id):
            return {"kind": "issue_coupon", "template_id": template_id}
        case PointsMultiplier(percent=percent):
            return {"kind": "points_multiplier", "percent": percent}
        case EventInvitation(event_id=event_id):
            return {"kind": "event_invitation", "event_id": event_id}
    raise AssertionError(campaign.action)


async def _cost(request: AnyRequest, campaign: Campaign, reach: Reach) -> dict[str, Any]:
    """The launch's cost from the action and the treated group: exact for bonus points, an
    upper bound for coupons of a fixed or capped discount, otherwise what it depends on."""
    point_value = services(request).settings.point_value
    treated = reach.treated
    match campaign.action:
        case BonusPoints(points=points):
            return {"kind": "bonus_points", "points": _count(request, points * treated),
                    "each": _count(request, points),
                    "value": _money(request, round(points * treated * point_value)),
                    "point_value": _money(request, point_value)}
        case IssueCoupon(template_id=template_id):
            async with transaction(services(request).pool) as conn:
                template = await get_template(conn, template_id)
            each = None
            if isinstance(template.discount, FixedAmount):
                each = template.discount.amount
            elif isinstance(template.discount, PercentOff) and template.discount.cap:
                each = template.discount.cap
            return {"kind": "issue_coupon", "coupons": _count(request, treated),
                    "template": template.name,
                    "most": _money(request, each * treated) if each is not None else None}
        case PointsMultiplier(percent=percent):
            return {"kind": "points_multiplier", "extra": percent - 100,
                    "treated": _count(request, treated)}
        case EventInvitation(event_id=event_id):
            async with transaction(services(request).pool) as conn:
                event = await get_event(conn, event_id)
            return {"kind": "event_invitation", "invitations": _count(request, treated),
                    "event": event.name, "capacity": _count(request, event.capacity)}
    raise AssertionError(campaign.action)


@get("/campaigns/{campaign_id:uuid}/launch")
async def launch_page(request: AnyRequest, campaign_id: FromPath[UUID]) -> Response[str]:
    """The confirmation: whom launching now reaches (the segment's reachable members, the
    budget's cap and the holdout applied as the launch applies them) and what it costs."""
    session = await staff_session(request, MARKETING_EDITORS)
    campaign, segment_name = await _campaign(request, campaign_id)
    now = dt.datetime.now(dt.UTC)
    async with transaction(services(request).pool) as conn:
        reach = await campaign_reach(conn, campaign_id, now=now)
    return render(request, "campaign_launch.html", session=session, campaign=campaign,
                  segment_name=segment_name, reach=reach, cost=await _cost(request, campaign,
                                                                           reach),
                  counts={k: _count(request, getattr(reach, k))
                          for k in ("eligible", "treated", "control")},
                  later=campaign.starts_at is not None and campaign.starts_at > now)


@post("/campaigns/{campaign_id:uuid}/launch", status_code=303)
async def launch_submit(request: AnyRequest, campaign_id: FromPath[UUID]) -> Response[Any]:
    """Launch (or schedule) through the API's function: launching again changes nothing."""
    session = await staff_session(request, MARKETING_EDITORS)
    posted = await request.form()
    check_csrf(request, session.csrf_token, posted.get("csrf_token"))
    svc = services(request)
    # As the API: outside any transaction, each step of the launch commits on its own.
    async with svc.pool.acquire() as conn:
        campaign = await launch_campaign(conn, campaign_id, rulebook=svc.rulebook,
                                         programme=svc.programme, now=dt.datetime.now(dt.UTC))
        await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                           action="campaign.launch", subject_kind="campaign",
                           subject_id=campaign_id,
                           details={"status": campaign.status, "via": "console"})
    return Redirect(f"/console/campaigns/{campaign_id}?launched=1", status_code=303)


@dataclass(frozen=True, slots=True)
class Measure:
    label: str
    treated: str
    control: str
    uplift: str | None
    low: str | None
    high: str | None
    chart: UpliftChart | None


def _measures(request: AnyRequest, results: CampaignResults) -> list[Measure]:
    locale = language_of(request)

    def rate(v: float) -> str:
        return format_percent(v, "#,##0.0%", locale=locale)

    def points(v: float) -> str:  # a difference of rates, in percentage points
        return f"{'+' if v > 0 else ''}{format_decimal(v * 100, '#,##0.0', locale=locale)} pt"

    def money(v: float, signed: bool = False) -> str:
        return ("+" if signed and v > 0 else "") + _money(request, v)

    def measure(label: str, treated: float, control: float, difference: Difference | None,
                show: Any, show_diff: Any) -> Measure:
        if difference is None:
            return Measure(label, show(treated), show(control), None, None, None, None)
        return Measure(
            label, show(treated), show(control), show_diff(difference.estimate),
            show_diff(difference.low) if difference.low is not None else None,
            show_diff(difference.high) if difference.high is not None else None,
            uplift_chart(treated, control, difference.estimate, difference.low,
                         difference.high, width=CHART_WIDTH))

    return [
        measure("Purchase rate", results.treated.purchase_rate, results.control.purchase_rate,
                results.purchase_rate_uplift, rate, points),
        measure("Revenue per member", results.treated.revenue_per_member,
                results.control.revenue_per_member, results.revenue_per_member_uplift,
                money, lambda v: money(v, signed=True)),
    ]


@get("/campaigns/{campaign_id:uuid}/results")
async def results_page(request: AnyRequest, campaign_id: FromPath[UUID]) -> Response[str]:
    """Treated against control (GET /v1/campaigns/{id}/results): the uplift of the purchase
    rate and of the revenue per member with their 95% intervals, drawn and in a table."""
    session = await staff_session(request, MARKETING_READERS)
    campaign, segment_name = await _campaign(request, campaign_id)
    results = None
    if campaign.status in ("launching", "launched"):
        async with transaction(services(request).pool) as conn:
            results = await campaign_results(conn, campaign_id, now=dt.datetime.now(dt.UTC))
    return render(request, "campaign_results.html", session=session, campaign=campaign,
                  segment_name=segment_name, results=results,
                  measures=_measures(request, results) if results else [],
                  money=lambda v: _money(request, v), count=lambda v: _count(request, v))

