"""Coupons: templates (list, create, one template with its counts), batches of generated codes
(make one, download it as CSV) and issuing a template to a saved segment, through the functions
behind /v1/coupon-templates (api/coupons.py), under the same role sets and the same
idempotency mechanism."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import msgspec
from babel.numbers import format_currency, get_currency_precision
from litestar import Response, get, post
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Redirect
from msgspec import Struct

from console.forms import (
    PAGE_SIZE,
    Choice,
    Cursor,
    Unreadable,
    answered,
    claimed,
    failed_path,
    local_moment,
    may_edit,
    new_key,
    problems,
    valid_key,
    whole_number,
    words,
)
from console.pages import language_of, render, staff_session
from console.services import AnyRequest, services
from console.session import check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.roles import MARKETING_EDITORS, MARKETING_READERS
from loyalty.core.db import transaction
from loyalty.core.errors import LoyaltyError
from loyalty.promotions.coupon_templates import (
    code_batch,
    create_template,
    generate_code_batch,
    get_template,
    list_code_batches,
    list_templates,
)
from loyalty.promotions.coupon_wallet import issue_coupons
from loyalty.promotions.segments import get_segment, list_segments, preview_segment, segment_filter
from schemas.base import decode_edge
from schemas.coupons import (
    CodeBatch,
    CodeBatchRequest,
    CouponTemplate,
    CouponTemplateCreate,
    DaysAfterIssue,
    FixedAmount,
    FixedWindow,
    FreeItem,
    IssueRequest,
    IssueResult,
    PercentOff,
    PointsMultiplierDiscount,
)

# Segments offered in the issue form: the newest ones (the API pages them by 200 at most).
SEGMENT_CHOICES = 200
# A leading character a spreadsheet would read as a formula (OWASP "CSV injection").
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


class TemplateForm(Struct):
    """The create form as the browser sends it: text, read into CouponTemplateCreate."""

    name: str = ""
    description: str = ""
    discount_kind: str = "fixed_amount"
    amount: str = ""
    percent: str = ""
    cap: str = ""
    sku: str = ""
    points_percent: str = ""
    validity_kind: str = "window"
    valid_from: str = ""
    valid_until: str = ""
    days: str = ""
    min_spend: str = ""
    stores: str = ""
    categories: str = ""
    per_member_limit: str = ""
    total_limit: str = ""
    stackable: str = ""
    on_return: str = "reinstate"
    public_code: str = ""
    csrf_token: str = ""


class BatchForm(Struct):
    count: str = ""
    prefix: str = ""
    key: str = ""
    csrf_token: str = ""


class IssueForm(Struct):
    segment_id: str = ""
    key: str = ""
    csrf_token: str = ""


# The form's field a failing path of CouponTemplateCreate is shown next to.
_DISCOUNT_FIELDS = {"fixed_amount": {"amount": "amount"},
                    "percent": {"percent": "percent", "cap": "cap"},
                    "free_item": {"sku": "sku"},
                    "points_multiplier": {"percent": "points_percent"}}


# The form's fields each part of the body is read from (a part read from one of them that did
# not read is not checked again).
_FIELDS_OF = {"discount": ("amount", "percent", "cap", "points_percent", "discount_kind"),
              "validity": ("valid_from", "valid_until", "days", "validity_kind")}


def _field_of(path: list[str], form: TemplateForm) -> str:
    if not path:
        return "name"
    if path[0] == "discount":
        return _DISCOUNT_FIELDS.get(form.discount_kind, {}).get(
            path[1] if len(path) > 1 else "", "discount_kind")
    if path[0] == "validity":
        if len(path) > 1 and path[1] in ("valid_from", "days"):
            return path[1]
        return "days" if form.validity_kind == "days_after_issue" else "valid_until"
    return path[0]


def _read_template(form: TemplateForm, timezone: str
                   ) -> tuple[CouponTemplateCreate | None, dict[str, str]]:
    """The form as the API's body, or the fields to fix (field → what is wrong)."""
    errors: dict[str, str] = {}
    data: dict[str, Any] = {}

    def read(field: str, parse: Any) -> Any:
        try:
            return parse()
        except Unreadable:
            errors[field] = "invalid"
            return None

    data["name"] = form.name.strip()
    data["description"] = form.description.strip()
    match form.discount_kind:
        case "fixed_amount":
            data["discount"] = {"type": "fixed_amount",
                                "amount": read("amount", lambda: whole_number(form.amount))}
        case "percent":
            data["discount"] = {
                "type": "percent", "percent": read("percent", lambda: whole_number(form.percent)),
                "cap": read("cap", lambda: whole_number(form.cap, optional=True))}
        case "free_item":
            data["discount"] = {"type": "free_item", "sku": form.sku.strip()}
        case "points_multiplier":
            data["discount"] = {"type": "points_multiplier", "percent": read(
                "points_percent", lambda: whole_number(form.points_percent))}
        case _:
            errors["discount_kind"] = "invalid"
    match form.validity_kind:
        case "window":
            data["validity"] = {
                "type": "window",
                "valid_from": read("valid_from", lambda: local_moment(
                    form.valid_from, timezone, optional=True)),
                "valid_until": read("valid_until", lambda: local_moment(
                    form.valid_until, timezone, optional=True))}
        case "days_after_issue":
            data["validity"] = {"type": "days_after_issue",
                                "days": read("days", lambda: whole_number(form.days))}
        case _:
            errors["validity_kind"] = "invalid"
    data["min_spend"] = read("min_spend", lambda: whole_number(form.min_spend, optional=True)) or 0
    data["stores"] = words(form.stores)
    data["categories"] = words(form.categories)
    data["per_member_limit"] = read("per_member_limit",
                                    lambda: whole_number(form.per_member_limit, optional=True))
    data["total_limit"] = read("total_limit",
                               lambda: whole_number(form.total_limit, optional=True))
    data["stackable"] = form.stackable == "on"
    data["on_return"] = form.on_return
    data["public_code"] = form.public_code.strip() or None
    readable = {k: v for k, v in data.items() if not any(
        field in errors for field in _FIELDS_OF.get(k, (k,)))}
    for path in problems(readable, CouponTemplateCreate):
        errors.setdefault(_field_of(path, form), "invalid")
    if errors:
        return None, errors
    try:
        return msgspec.convert(data, CouponTemplateCreate, dec_hook=decode_edge), {}
    except msgspec.ValidationError as error:
        return None, {_field_of(failed_path(error), form): "invalid"}


def _money(amount: int, currency: str, locale: str) -> str:
    return format_currency(amount / 10 ** get_currency_precision(currency), currency,
                           locale=locale)


def _discount_text(template: CouponTemplate, currency: str, locale: str) -> dict[str, Any]:
    """What the template gives, for the page to put in words: its kind and figures."""
    match template.discount:
        case FixedAmount(amount=amount):
            return {"kind": "fixed_amount", "amount": _money(amount, currency, locale)}
        case PercentOff(percent=percent, cap=cap):
            return {"kind": "percent", "percent": percent,
                    "cap": _money(cap, currency, locale) if cap else None}
        case FreeItem(sku=sku):
            return {"kind": "free_item", "sku": sku}
        case PointsMultiplierDiscount(percent=percent):
            return {"kind": "points_multiplier", "percent": percent}


def _validity_text(template: CouponTemplate) -> dict[str, Any]:
    match template.validity:
        case DaysAfterIssue(days=days):
            return {"kind": "days_after_issue", "days": days}
        case FixedWindow(valid_from=start, valid_until=end):
            return {"kind": "window", "valid_from": start, "valid_until": end}


def _shown(request: AnyRequest, template: CouponTemplate) -> dict[str, Any]:
    settings = services(request).settings
    locale = language_of(request)
    return {"coupon": template,
            "discount": _discount_text(template, settings.currency, locale),
            "validity": _validity_text(template),
            "min_spend": _money(template.min_spend, settings.currency, locale)}


@get("/coupons")
async def coupons_page(request: AnyRequest, cursor: Cursor = None) -> Response[str]:
    """Templates newest first with their issued and redeemed counts; an htmx request for the
    next page gets the rows alone."""
    session = await staff_session(request, MARKETING_READERS)
    svc = services(request)
    async with transaction(svc.pool) as conn:
        page = await list_templates(conn, active=None, limit=PAGE_SIZE, cursor=cursor or None)
    template = ("coupons_results.html" if request.headers.get("hx-request")
                else "coupons.html")
    locale = language_of(request)
    return render(request, template, session=session, page=page,
                  discounts={t.template_id: _discount_text(t, svc.settings.currency, locale)
                             for t in page.items},
                  editor=session.role in MARKETING_EDITORS)


def _template_form(request: AnyRequest, form: TemplateForm, errors: dict[str, str],
                   status_code: int, session: Any, detail: str = "") -> Response[str]:
    return render(request, "coupon_form.html", session=session, form=form, errors=errors,
                  currency=services(request).settings.currency, status_code=status_code,
                  detail=detail)


@get("/coupons/new")
async def new_coupon_page(request: AnyRequest) -> Response[str]:
    session = await staff_session(request, MARKETING_EDITORS)
    return _template_form(request, TemplateForm(), {}, 200, session)


@post("/coupons", status_code=303)
async def create_coupon(request: AnyRequest, data: URLEncodedBody[TemplateForm]) -> Response[Any]:
    """Create the template as POST /v1/coupon-templates does; the form again with what to fix
    (400, nothing saved) when it does not read."""
    session = await staff_session(request, MARKETING_READERS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    may_edit(session, MARKETING_EDITORS)
    svc = services(request)
    body, errors = _read_template(data, svc.settings.timezone)
    if body is None:
        return _template_form(request, data, errors, 400, session)
    try:
        async with transaction(svc.pool) as conn:
            created = await create_template(conn, body, staff_id=session.principal.staff_id)
            await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                               action="coupon_template.create", subject_kind="coupon_template",
                               subject_id=created.template_id, details={"via": "console"})
    except LoyaltyError as error:
        field = error.field if error.field in (*TemplateForm.__struct_fields__, "validity") \
            else "form"
        return _template_form(request, data, {field: error.code or "invalid"}, 400, session,
                              detail=error.detail)
    return Redirect(f"/console/coupons/{created.template_id}", status_code=303)


async def _template_page(request: AnyRequest, template_id: UUID, *, session: Any,
                         cursor: str | None = None, batch_form: BatchForm | None = None,
                         errors: dict[str, str] | None = None, status_code: int = 200,
                         made: UUID | None = None) -> Response[str]:
    svc = services(request)
    editor = session.role in MARKETING_EDITORS
    async with transaction(svc.pool) as conn:
        template = await get_template(conn, template_id)
        batches = await list_code_batches(conn, template_id, limit=PAGE_SIZE, cursor=cursor)
        segments = (await list_segments(conn, limit=SEGMENT_CHOICES)).items if editor else []
    if request.headers.get("hx-request") and cursor:
        return render(request, "coupon_batches.html", session=session, coupon=template,
                      batches=batches)
    return render(request, "coupon.html", session=session, status_code=status_code,
                  batches=batches, segments=segments, editor=editor,
                  batch_form=batch_form or BatchForm(key=new_key()), errors=errors or {},
                  made=made, **_shown(request, template))


@get("/coupons/{template_id:uuid}")
async def coupon_page(request: AnyRequest, template_id: FromPath[UUID], cursor: Cursor = None,
                      made: Choice = None) -> Response[str]:
    """One template: what it gives, its counts, its code batches, and (for editors) the forms
    to make codes and to issue it to a segment."""
    session = await staff_session(request, MARKETING_READERS)
    return await _template_page(request, template_id, session=session, cursor=cursor or None,
                                made=_uuid(made))


@post("/coupons/{template_id:uuid}/batches", status_code=303)
async def generate_batch(request: AnyRequest, template_id: FromPath[UUID],
                         data: URLEncodedBody[BatchForm]) -> Response[Any]:
    """Make a batch as POST /v1/coupon-templates/{id}/codes does, once per the form's key: a
    second submit of the same form shows the batch the first made."""
    session = await staff_session(request, MARKETING_READERS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    may_edit(session, MARKETING_EDITORS)
    svc = services(request)
    errors: dict[str, str] = {}
    count = None
    try:
        count = whole_number(data.count)
    except Unreadable:
        errors["count"] = "invalid"
    body = None
    if not errors:
        try:
            body = msgspec.convert({"count": count, "prefix": data.prefix.strip()},
                                   CodeBatchRequest)
        except msgspec.ValidationError as error:
            path = failed_path(error)
            errors[path[0] if path else "count"] = "invalid"
    if not valid_key(data.key):
        errors["count"] = "key"
    if body is None or errors:
        data.key = data.key if valid_key(data.key) else new_key()
        return await _template_page(request, template_id, session=session, batch_form=data,
                                    errors=errors, status_code=400)
    staff_id = session.principal.staff_id
    async with transaction(svc.pool) as conn:
        idempotency, stored = await claimed(
            conn, svc, session, data.key, f"/v1/coupon-templates/{template_id}/codes", body)
        if stored is not None:
            batch_id = msgspec.json.decode(stored, type=CodeBatch).batch_id
        else:
            batch = await generate_code_batch(
                conn, template_id, count=body.count, prefix=body.prefix, staff_id=staff_id,
                now=dt.datetime.now(dt.UTC), tz=svc.settings.timezone)
            await record_audit(conn, actor_kind="staff", actor_id=staff_id,
                               action="coupon_codes.generate", subject_kind="coupon_template",
                               subject_id=template_id,
                               details={"batch_id": str(batch.batch_id), "count": batch.count,
                                        "via": "console"})
            await answered(conn, idempotency, batch)
            batch_id = batch.batch_id
    return Redirect(f"/console/coupons/{template_id}?made={batch_id}", status_code=303)


def _csv_cell(text: str) -> str:
    """A cell a spreadsheet shows as text: never a formula, quoted when it must be."""
    if text.startswith(_FORMULA):
        text = "'" + text
    if any(char in text for char in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text


@get("/coupons/{template_id:uuid}/batches/{batch_id:uuid}/codes.csv")
async def download_batch(request: AnyRequest, template_id: FromPath[UUID],
                         batch_id: FromPath[UUID]) -> Response[bytes]:
    """The batch's codes as CSV: UTF-8 with a byte-order mark (Excel in Japan reads it as
    UTF-8), CRLF lines, one code a line, as an attachment."""
    session = await staff_session(request, MARKETING_READERS)
    svc = services(request)
    async with transaction(svc.pool) as conn:
        template = await get_template(conn, template_id)
        batch = await code_batch(conn, template_id, batch_id)
        await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                           action="coupon_codes.download", subject_kind="coupon_template",
                           subject_id=template_id,
                           details={"batch_id": str(batch_id), "count": batch.count,
                                    "via": "console"})
    lines = ["code,coupon,batch"] + [
        ",".join((_csv_cell(code), _csv_cell(template.name), str(batch_id)))
        for code in batch.codes]
    body = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")
    made = batch.created_at.strftime("%Y%m%d")
    filename = f"coupon-codes-{made}-{str(batch_id)[-12:]}.csv"
    # litestar adds "; charset=utf-8" to a text/* type.
    return Response(body, media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


def _uuid(text: str | None) -> UUID | None:
    try:
        return UUID(text or "")
    except ValueError:
        return None


async def _segment_or_none(conn: Any, text: str) -> Any:
    segment_id = _uuid(text)
    if segment_id is None:
        return None
    try:
        return await get_segment(conn, segment_id)
    except LoyaltyError:
        return None


@get("/coupons/{template_id:uuid}/issue")
async def confirm_issue(request: AnyRequest, template_id: FromPath[UUID],
                        segment_id: Choice = None) -> Response[str]:
    """Before issuing: how many members the chosen segment holds now, and the form (with its
    key) that issues to them."""
    session = await staff_session(request, MARKETING_EDITORS)
    svc = services(request)
    async with transaction(svc.pool) as conn:
        template = await get_template(conn, template_id)
        segment = await _segment_or_none(conn, segment_id or "")
        if segment is None:
            return await _template_page(request, template_id, session=session,
                                        errors={"segment_id": "invalid"}, status_code=400)
        counted = await preview_segment(conn, segment.definition, sample_size=0,
                                        now=dt.datetime.now(dt.UTC))
    return render(request, "coupon_issue.html", session=session, coupon=template,
                  segment=segment, members=counted.count, key=new_key(), result=None)


@post("/coupons/{template_id:uuid}/issue", status_code=200)
async def issue_to_segment(request: AnyRequest, template_id: FromPath[UUID],
                           data: URLEncodedBody[IssueForm]) -> Response[Any]:
    """Issue as POST /v1/coupon-templates/{id}/issue does, once per the confirmation form's
    key: a second submit shows what the first issued and issues nothing more."""
    session = await staff_session(request, MARKETING_READERS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    may_edit(session, MARKETING_EDITORS)
    svc = services(request)
    staff_id = session.principal.staff_id
    async with transaction(svc.pool) as conn:
        template = await get_template(conn, template_id)
        segment = await _segment_or_none(conn, data.segment_id[:100])
        if segment is None or not valid_key(data.key):
            return await _template_page(request, template_id, session=session,
                                        errors={"segment_id": "invalid"}, status_code=400)
        body = IssueRequest(segment_id=segment.segment_id)
        idempotency, stored = await claimed(
            conn, svc, session, data.key, f"/v1/coupon-templates/{template_id}/issue", body)
        if stored is not None:
            result = msgspec.json.decode(stored, type=IssueResult)
        else:
            now = dt.datetime.now(dt.UTC)
            result = await issue_coupons(
                conn, template_id=template_id,
                member_filter=await segment_filter(conn, segment.segment_id, now=now),
                target={"segment_id": str(segment.segment_id)}, staff_id=staff_id, now=now,
                tz=svc.settings.timezone)
            await record_audit(conn, actor_kind="staff", actor_id=staff_id,
                               action="coupons.issue", subject_kind="coupon_template",
                               subject_id=template_id,
                               details={"issue_id": str(result.issue_id),
                                        "issued": result.issued, "via": "console"})
            await answered(conn, idempotency, result)
    return render(request, "coupon_issue.html", session=session, coupon=template,
                  segment=segment, members=None, key=data.key, result=result,
                  replayed=stored is not None)
