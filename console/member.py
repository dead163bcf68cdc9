"""One member's page: profile, status and consents with their history, tier, points and the
ledger with each entry's rule trace, coupons, events, RFM segment, at-risk flag and look-alike
members; and the actions on a member (adjust points, suspend or reinstate, merge a duplicate,
erase their personal data at their request or cancel that).

Each section is read through the function the API's handler for the same data calls
(api/members.py, api/points.py, api/coupons.py, api/events.py), for the roles of
loyalty/access/roles.py the API's guard takes; each action goes through the API's function with
its idempotency and audit: the form carries a key made when it is rendered, so a form sent
twice (a double click, a reload after a lost answer) changes the member once."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from uuid import UUID

from babel.numbers import format_currency, format_decimal, get_currency_precision
from litestar import Response, get, post
from litestar.params import FromPath, QueryParameter, URLEncodedBody
from litestar.response import Redirect
from msgspec import Struct, ValidationError, convert

from console.pages import language_of, render, staff_session
from console.services import AnyRequest, ConsoleServices, services
from console.session import ConsoleSession, check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.roles import (
    CONTACT_READERS,
    LEDGER_READERS,
    MEMBER_EDITORS,
    POINTS_ADJUSTERS,
    PROFILE_READERS,
    as_seen_by,
)
from loyalty.core.db import Connection, transaction
from loyalty.core.errors import Conflict, InsufficientPoints, InvalidInput, LoyaltyError, NotFound
from loyalty.core.idempotency import Idempotency, claim, record_response, request_hash
from loyalty.core.normalize import normalize_text
from loyalty.insights.at_risk import member_at_risk
from loyalty.insights.churn_model import churn_score
from loyalty.insights.rfm import member_rfm
from loyalty.members.erasure import cancel_erasure, erasure_status, request_erasure
from loyalty.members.merge import duplicates_of, merge_members
from loyalty.members.profiles import (
    analysis_allowed_by,
    get_consents,
    get_member,
    status_history,
    update_member,
)
from loyalty.points.adjustments import adjust_points
from loyalty.points.history import entry_detail, points_history, points_summary
from loyalty.points.tiers import member_tier
from loyalty.promotions.coupon_wallet import wallet
from loyalty.promotions.event_seats import my_events
from schemas.base import json_encoder, whole
from schemas.members import (
    Erasure,
    Member,
    MergeRequest,
    StaffErasureRequest,
    StaffMemberUpdate,
)
from schemas.points import Adjustment

HISTORY_PAGE = 20
SECTION_PAGE = 20
POINTS_LIMIT = 100_000_000  # the API's bound on one adjustment (schemas.points.Adjustment)
REASON_MAX = 500
ERASURE_REASON_MAX = 500  # the API's bound on an erasure's reason (StaffErasureRequest)
Cursor = Annotated[str | None, QueryParameter(max_length=200,
                                              pattern=whole(r"[A-Za-z0-9_-]*"))]
# What the page says it has just done, after the redirect that follows an action.
Done = Annotated[Literal["adjusted", "suspended", "reinstated", "merged", "erasure_requested",
                         "erased", "erasure_cancelled"] | None,
                 QueryParameter()]
Target = Annotated[Literal["active", "suspended"], QueryParameter()]
# The key a form carries (new_key); another is replaced by a fresh one.
_KEY = re.compile(r"[A-Za-z0-9_-]{1,100}")
# What schemas.points.Reason refuses.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _(message: str) -> str:
    """Marks a label for the catalogue; the template translates it when it renders."""
    return message


# Words the domain stores and the page shows in the staff member's language.
LABELS = {
    # ledger entry kinds
    "earn": _("Earned"), "redeem": _("Redeemed"), "expire": _("Expired"),
    "adjust": _("Adjusted by staff"), "reverse": _("Reversed"), "transfer": _("Transferred"),
    # consent purposes
    "marketing_email": _("Marketing e-mail"), "push": _("Push notifications"),
    "data_analysis": _("Data analysis"),
    # why a status changed (migration 0010)
    "staff": _("By staff"), "merge": _("Merged"), "dormancy": _("No activity"),
    "activity": _("Active again"), "update": _("Changed by staff"), "import": _("Import"),
    # coupon wallet
    "usable": _("Usable"), "upcoming": _("Not yet valid"), "used": _("Used"),
    "expired": _("Expired"),
    # look-alike rules (loyalty/members/merge.py)
    "same name and birth date": _("Same name and birth date"),
    "same reading and birth date": _("Same reading and birth date"),
    "same name and postal code": _("Same name and postal code"),
    "same mailbox": _("Same mailbox"),
    "look-alike e-mail": _("Look-alike e-mail address"),
    "look-alike name": _("Look-alike name"),
    # RFM segments (loyalty/insights/rfm.py)
    "champions": _("Champions"), "loyal": _("Loyal"),
    "potential_loyalists": _("Potential loyalists"), "new": _("New"),
    "promising": _("Promising"), "need_attention": _("Need attention"),
    "about_to_sleep": _("About to sleep"), "at_risk": _("At risk"),
    "cannot_lose_them": _("Cannot lose them"), "hibernating": _("Hibernating"),
    "lost": _("Lost"),
}


class AdjustForm(Struct):
    points: str = ""
    reason: str = ""
    key: str = ""
    csrf_token: str = ""


class StatusForm(Struct):
    status: str = ""
    reason: str = ""
    key: str = ""
    csrf_token: str = ""


class ConfirmForm(Struct):
    """A confirmation with nothing to fill in: a merge, cancelling an erasure."""

    key: str = ""
    csrf_token: str = ""


class ErasureForm(Struct):
    reason: str = ""
    key: str = ""
    csrf_token: str = ""


def new_key() -> str:
    """An idempotency key for one rendering of a form."""
    return secrets.token_urlsafe(24)


def _formatters(request: AnyRequest) -> dict[str, Any]:
    svc = services(request)
    locale = language_of(request)
    currency = svc.programme.currency
    scale = 10 ** get_currency_precision(currency)

    def points(value: int, signed: bool = False) -> str:
        return ("+" if signed and value > 0 else "") + format_decimal(value, locale=locale)

    def money(value: int) -> str:
        return format_currency(value / scale, currency, locale=locale)

    return {"points": points, "money": money, "label": lambda word: LABELS.get(word, word)}


def _valid_key(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


async def _audit_read(conn: Connection, session: ConsoleSession, member_id: UUID,
                      **details: Any) -> None:
    await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                       action="members.read", subject_kind="member", subject_id=member_id,
                       details={"via": "console", **details})


async def _history(conn: Connection, member_id: UUID, cursor: str | None
                   ) -> tuple[list[Any], str | None]:
    """A page of the ledger, each entry with its trace and lots (the member app's entry
    detail), newest first."""
    page = await points_history(conn, member_id, limit=HISTORY_PAGE, cursor=cursor)
    return ([await entry_detail(conn, member_id, entry.entry_id) for entry in page.items],
            page.next_cursor)


async def _page_context(conn: Connection, svc: ConsoleServices, session: ConsoleSession,
                        member_id: UUID) -> dict[str, Any]:
    """What the member's page shows the signed-in role, each part read as the API reads it."""
    role = session.role
    now = dt.datetime.now(dt.UTC)
    member = as_seen_by(role, await get_member(conn, member_id))
    # A merged member's ledger reads follow the merge to the survivor: their page points there.
    merged = member.merged_into is not None
    # An erased member's ledger stays for accounting, but its reads refuse them (as the API's).
    without_ledger = merged or member.status == "erased"
    ledger = role in LEDGER_READERS and not without_ledger
    consents = await get_consents(conn, member_id)
    # Without data_analysis there are no scores to show, only why (docs/privacy.md).
    analysed = analysis_allowed_by(consents)
    context: dict[str, Any] = {
        "member": member, "contacts": role in CONTACT_READERS, "ledger": ledger,
        "may_adjust": role in POINTS_ADJUSTERS, "may_edit": role in MEMBER_EDITORS,
        "consents": consents, "analysed": analysed,
        "statuses": await status_history(conn, member_id),
        "tier": None if without_ledger else await member_tier(
            conn, member_id, rulebook=svc.rulebook, tz=svc.programme.timezone, now=now),
        "coupons": await wallet(conn, member_id, status=None, now=now, limit=SECTION_PAGE,
                                cursor=None),
        "events": await my_events(conn, member_id, now=now, limit=SECTION_PAGE),
        "rfm": await member_rfm(conn, member_id) if analysed else None,
        "at_risk": await member_at_risk(conn, member_id) if analysed else None,
        "churn": await churn_score(conn, member_id) if analysed else None,
        "erasure": await erasure_status(conn, member_id),
        "summary": None, "entries": [], "next_cursor": None, "duplicates": [],
    }
    if ledger:
        context["summary"] = await points_summary(conn, member_id, rulebook=svc.rulebook,
                                                  programme=svc.programme, now=now)
        context["entries"], context["next_cursor"] = await _history(conn, member_id, None)
    if role in MEMBER_EDITORS and not without_ledger:
        context["duplicates"] = await duplicates_of(conn, member_id)
    await _audit_read(conn, session, member_id)
    return context


async def _render_page(request: AnyRequest, session: ConsoleSession, member_id: UUID, *,
                       status_code: int = 200, **extra: Any) -> Response[str]:
    svc = services(request)
    try:
        async with transaction(svc.pool) as conn:
            context = await _page_context(conn, svc, session, member_id)
    except NotFound:
        return _not_found(request, session)
    extra.setdefault("adjust", {"points": "", "reason": "", "errors": {}})
    return render(request, "member.html", session=session, status_code=status_code,
                  key=new_key(), **_formatters(request), **context, **extra)


def _not_found(request: AnyRequest, session: ConsoleSession) -> Response[str]:
    return render(request, "member_missing.html", session=session, status_code=404)


@get("/members/{member_id:uuid}")
async def member_page(request: AnyRequest, member_id: FromPath[UUID],
                      done: Done = None) -> Response[str]:
    """The member's page, its sections as the signed-in role may see them; the read is
    audited."""
    session = await staff_session(request, PROFILE_READERS)
    return await _render_page(request, session, member_id, done=done)


@get("/members/{member_id:uuid}/history")
async def member_history(request: AnyRequest, member_id: FromPath[UUID],
                         cursor: Cursor = None) -> Response[str]:
    """The next page of the ledger (htmx appends it to the table); audited as a read."""
    session = await staff_session(request, LEDGER_READERS)
    svc = services(request)
    async with transaction(svc.pool) as conn:
        entries, next_cursor = await _history(conn, member_id, cursor or None)
        await _audit_read(conn, session, member_id, part="points history")
    # htmx appends the rows; a browser without it gets them on a page of their own.
    template = "member_history.html" if request.headers.get("hx-request") \
        else "member_history_page.html"
    return render(request, template, session=session, member_id=member_id,
                  entries=entries, next_cursor=next_cursor, **_formatters(request))


def _reason(text: str) -> tuple[str, str | None]:
    """A reason as the API's Reason type takes it (3 to 500 characters once trimmed, no
    control characters), or what is wrong with it."""
    if _CONTROL.search(text):
        return text, "control"
    reason = normalize_text(text) if len(text) <= 4 * REASON_MAX else text
    if len(reason) < 3:
        return reason, "short"
    if len(reason) > REASON_MAX:
        return reason, "long"
    return reason, None


def _adjustment_errors(form: AdjustForm) -> tuple[dict[str, str], int, str]:
    """The form's points and reason as the API's Adjustment takes them, or what is wrong with
    each (a word the template turns into the message)."""
    errors: dict[str, str] = {}
    points = 0
    text = unicodedata.normalize("NFKC", form.points).strip().replace(",", "")
    text = text.replace("−", "-")
    try:
        points = int(text)
    except ValueError:
        errors["points"] = "number"
    else:
        if points == 0:
            errors["points"] = "zero"
        elif abs(points) > POINTS_LIMIT:
            errors["points"] = "range"
    reason, error = _reason(form.reason)
    if error:
        errors["reason"] = error
    return errors, points, reason


@post("/members/{member_id:uuid}/adjust", status_code=303)
async def adjust_member_points(
    request: AnyRequest, member_id: FromPath[UUID], data: URLEncodedBody[AdjustForm],
) -> Response[Any]:
    """Add or take away points with a reason, as POST /v1/members/{id}/adjustments does
    (audited with the entry, once per form key); a wrong form comes back with the message next
    to the field (400) and changes nothing."""
    session = await staff_session(request, POINTS_ADJUSTERS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    svc = services(request)
    errors, points, reason = _adjustment_errors(data)
    if not errors:
        key = data.key if _valid_key(data.key) else new_key()
        idempotency = Idempotency(
            session.principal.staff_id, f"console:{key}",
            request_hash("POST", request.url.path, Adjustment(points=points, reason=reason)))
        try:
            async with svc.pool.acquire() as conn:
                await adjust_points(conn, member_id=member_id, points=points, reason=reason,
                                    staff_id=session.principal.staff_id,
                                    rulebook=svc.rulebook, programme=svc.programme,
                                    now=dt.datetime.now(dt.UTC), idempotency=idempotency)
        except NotFound:
            return _not_found(request, session)
        except InsufficientPoints:
            errors["points"] = "insufficient"
        except Conflict:
            errors["points"] = "conflict"
        except InvalidInput as invalid:
            errors[invalid.field or "points"] = "reused" \
                if invalid.code == "idempotency_key_reused" else "invalid"
    if errors:
        return await _render_page(
            request, session, member_id, status_code=400,
            adjust={"points": data.points[:50], "reason": data.reason[:REASON_MAX],
                    "errors": errors})
    return Redirect(f"/console/members/{member_id}?done=adjusted#history", status_code=303)


async def _once(conn: Connection, svc: ConsoleServices, idempotency: Idempotency,
                write: Callable[[Connection], Awaitable[Any]]) -> None:
    """The API's idempotency for a write in the caller's transaction (api/idempotency.py):
    claim the key, write, store the answer; a key already answered writes nothing."""
    if await claim(conn, idempotency, wait_ms=svc.settings.idempotency_wait_ms) is not None:
        return
    result = await write(conn)
    await record_response(conn, idempotency, 200, json_encoder.encode(result))


@get("/members/{member_id:uuid}/status")
async def status_form(request: AnyRequest, member_id: FromPath[UUID],
                      to: Target = "suspended") -> Response[str]:
    """The confirmation step of a suspension or reinstatement, with the reason to give."""
    session = await staff_session(request, MEMBER_EDITORS)
    return await _status_page(request, session, member_id, to, reason="", error=None)


async def _status_page(request: AnyRequest, session: ConsoleSession, member_id: UUID,
                       to: str, *, reason: str, error: str | None,
                       status_code: int = 200) -> Response[str]:
    svc = services(request)
    try:
        async with transaction(svc.pool) as conn:
            member = await get_member(conn, member_id)
            await _audit_read(conn, session, member_id, part="status")
    except NotFound:
        return _not_found(request, session)
    return render(request, "member_status.html", session=session, member=member, to=to,
                  reason=reason[:REASON_MAX], error=error, key=new_key(),
                  status_code=status_code, **_formatters(request))


@post("/members/{member_id:uuid}/status", status_code=303)
async def change_status(request: AnyRequest, member_id: FromPath[UUID],
                        data: URLEncodedBody[StatusForm]) -> Response[Any]:
    """Suspend or reinstate, as PATCH /v1/members/{id} with a status does (audited as
    ``members.update``, with the reason), once per form key."""
    session = await staff_session(request, MEMBER_EDITORS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    to = data.status if data.status in ("active", "suspended") else "suspended"
    reason, error = _reason(data.reason)
    if data.status not in ("active", "suspended"):
        error = "status"
    if error:
        return await _status_page(request, session, member_id, to, reason=data.reason,
                                  error=error, status_code=400)
    svc = services(request)
    change = StaffMemberUpdate(status=data.status)  # type: ignore[arg-type]
    key = data.key if _valid_key(data.key) else new_key()
    idempotency = Idempotency(session.principal.staff_id, f"console:{key}",
                              request_hash("POST", request.url.path, change))

    async def write(conn: Connection) -> Member:
        member = await update_member(conn, member_id, change,
                                     region=svc.settings.default_region)
        await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                           action="members.update", subject_kind="member",
                           subject_id=member_id,
                           details={"fields": ["status"], "status": data.status,
                                    "reason": reason, "via": "console"})
        return member

    try:
        async with transaction(svc.pool) as conn:
            await _once(conn, svc, idempotency, write)
    except NotFound:
        return _not_found(request, session)
    done = "suspended" if data.status == "suspended" else "reinstated"
    return Redirect(f"/console/members/{member_id}?done={done}", status_code=303)


async def _comparison(conn: Connection, svc: ConsoleServices, session: ConsoleSession,
                      survivor_id: UUID, merged_id: UUID) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    sides = []
    for member_id in (survivor_id, merged_id):
        sides.append({
            "member": await get_member(conn, member_id),
            "summary": await points_summary(conn, member_id, rulebook=svc.rulebook,
                                            programme=svc.programme, now=now),
            "tier": await member_tier(conn, member_id, rulebook=svc.rulebook,
                                      tz=svc.programme.timezone, now=now),
            "coupons": await wallet(conn, member_id, status="usable", now=now,
                                    limit=SECTION_PAGE, cursor=None),
            "consents": await get_consents(conn, member_id),
        })
        await _audit_read(conn, session, member_id, part="merge comparison")
    reasons = [group.reason for group in await duplicates_of(conn, survivor_id)
               if any(m.member_id == merged_id for m in group.members)]
    return {"survivor": sides[0], "merged": sides[1], "reasons": reasons}


async def _merge_page(request: AnyRequest, session: ConsoleSession, member_id: UUID,
                      other_id: UUID, *, error: str | None = None,
                      status_code: int = 200) -> Response[str]:
    svc = services(request)
    if member_id == other_id:
        error, status_code = "self", 400
    try:
        async with transaction(svc.pool) as conn:
            context = await _comparison(conn, svc, session, member_id, other_id) \
                if member_id != other_id else {}
    except NotFound:
        return _not_found(request, session)
    return render(request, "member_merge.html", session=session, status_code=status_code,
                  member_id=member_id, other_id=other_id, error=error, key=new_key(),
                  **_formatters(request), **context)


@get("/members/{member_id:uuid}/merge/{other_id:uuid}")
async def merge_comparison(request: AnyRequest, member_id: FromPath[UUID],
                           other_id: FromPath[UUID]) -> Response[str]:
    """The two members side by side before a merge: ``member_id`` stays, ``other_id`` is
    merged into it."""
    session = await staff_session(request, MEMBER_EDITORS)
    return await _merge_page(request, session, member_id, other_id)


@post("/members/{member_id:uuid}/merge/{other_id:uuid}", status_code=303)
async def merge(request: AnyRequest, member_id: FromPath[UUID], other_id: FromPath[UUID],
                data: URLEncodedBody[ConfirmForm]) -> Response[Any]:
    """Merge ``other_id`` into ``member_id`` as POST /v1/members/{id}/merge does (audited,
    once per form key)."""
    session = await staff_session(request, MEMBER_EDITORS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    svc = services(request)
    key = data.key if _valid_key(data.key) else new_key()
    idempotency = Idempotency(
        session.principal.staff_id, f"console:{key}",
        request_hash("POST", request.url.path, MergeRequest(from_member_id=other_id)))

    async def write(conn: Connection) -> Member:
        return await merge_members(conn, survivor_id=member_id, merged_id=other_id,
                                   staff_id=session.principal.staff_id,
                                   now=dt.datetime.now(dt.UTC))

    try:
        async with transaction(svc.pool) as conn:
            await _once(conn, svc, idempotency, write)
    except NotFound:
        return _not_found(request, session)
    except LoyaltyError as refused:
        error = {"already_merged": "already"}.get(refused.code, "self"
                                                 if member_id == other_id else "invalid")
        return await _merge_page(request, session, member_id, other_id, error=error,
                                 status_code=409 if error == "already" else 400)
    return Redirect(f"/console/members/{member_id}?done=merged", status_code=303)


def _erasure_reason(text: str) -> tuple[str, str | None]:
    """The reason, trimmed, as the API's StaffErasureRequest takes it, or what is wrong with
    it."""
    reason = text.strip()
    if not reason:
        return reason, "empty"
    try:
        convert({"reason": reason}, StaffErasureRequest)
    except ValidationError:
        return reason, "long" if len(reason) > ERASURE_REASON_MAX else "control"
    return reason, None


@get("/members/{member_id:uuid}/erasure")
async def erasure_form(request: AnyRequest, member_id: FromPath[UUID]) -> Response[str]:
    """The confirmation step of an erasure at the member's request: what goes, what stays and
    when, with the reason to give; or the pending erasure and its cancel button; or that the
    data is already erased."""
    session = await staff_session(request, MEMBER_EDITORS)
    return await _erasure_page(request, session, member_id, reason="", error=None)


async def _erasure_page(request: AnyRequest, session: ConsoleSession, member_id: UUID, *,
                        reason: str, error: str | None,
                        status_code: int = 200) -> Response[str]:
    svc = services(request)
    grace_days = svc.settings.erasure_grace_days
    try:
        async with transaction(svc.pool) as conn:
            member = await get_member(conn, member_id)
            erasure = await erasure_status(conn, member_id)
            await _audit_read(conn, session, member_id, part="erasure")
    except NotFound:
        return _not_found(request, session)
    return render(request, "member_erasure.html", session=session, member=member,
                  erasure=erasure, grace_days=grace_days,
                  due=dt.datetime.now(dt.UTC) + dt.timedelta(days=grace_days),
                  reason=reason[:ERASURE_REASON_MAX], error=error, key=new_key(),
                  status_code=status_code, **_formatters(request))


@post("/members/{member_id:uuid}/erasure", status_code=303)
async def erase_member_data(request: AnyRequest, member_id: FromPath[UUID],
                            data: URLEncodedBody[ErasureForm]) -> Response[Any]:
    """Erase the member's personal data at their request, as POST /v1/members/{id}/erasure
    does: after the grace period, or at once when it is 0 days; audited as ``members.erase``
    with the reason, once per form key."""
    session = await staff_session(request, MEMBER_EDITORS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    reason, error = _erasure_reason(data.reason)
    if error:
        return await _erasure_page(request, session, member_id, reason=data.reason,
                                   error=error, status_code=400)
    svc = services(request)
    staff_id = session.principal.staff_id
    key = data.key if _valid_key(data.key) else new_key()
    idempotency = Idempotency(
        staff_id, f"console:{key}",
        request_hash("POST", request.url.path, StaffErasureRequest(reason=reason)))

    async def write(conn: Connection) -> Erasure:
        # Written first, as the API does, so an erasure done at once also erases its own
        # values from the reason.
        await record_audit(conn, actor_kind="staff", actor_id=staff_id,
                           action="members.erase", subject_kind="member", subject_id=member_id,
                           details={"reason": reason, "via": "console"})
        return await request_erasure(
            conn, member_id, by="staff", by_id=staff_id, now=dt.datetime.now(dt.UTC),
            grace=dt.timedelta(days=svc.settings.erasure_grace_days))

    try:
        async with transaction(svc.pool) as conn:
            await _once(conn, svc, idempotency, write)
            erasure = await erasure_status(conn, member_id)
    except NotFound:
        return _not_found(request, session)
    except Conflict as refused:
        if refused.code != "already_erased":
            raise
        # Erased meanwhile (another tab, the member): the page says so.
        return await _erasure_page(request, session, member_id, reason="", error=None,
                                   status_code=409)
    done = "erased" if erasure.state == "erased" else "erasure_requested"
    return Redirect(f"/console/members/{member_id}?done={done}", status_code=303)


@post("/members/{member_id:uuid}/erasure/cancel", status_code=303)
async def cancel_member_erasure(request: AnyRequest, member_id: FromPath[UUID],
                                data: URLEncodedBody[ConfirmForm]) -> Response[Any]:
    """Cancel the member's pending erasure, as POST /v1/members/{id}/erasure/cancel does
    (audited as ``members.erase_cancel``), once per form key. An erasure already done is the
    erasure page again, 409."""
    session = await staff_session(request, MEMBER_EDITORS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    svc = services(request)
    staff_id = session.principal.staff_id
    key = data.key if _valid_key(data.key) else new_key()
    idempotency = Idempotency(staff_id, f"console:{key}",
                              request_hash("POST", request.url.path, None))

    async def write(conn: Connection) -> Erasure:
        erasure = await cancel_erasure(conn, member_id, by="staff", by_id=staff_id,
                                       now=dt.datetime.now(dt.UTC))
        await record_audit(conn, actor_kind="staff", actor_id=staff_id,
                           action="members.erase_cancel", subject_kind="member",
                           subject_id=member_id,
                           details={"state": erasure.state, "via": "console"})
        return erasure

    try:
        async with transaction(svc.pool) as conn:
            await _once(conn, svc, idempotency, write)
            erasure = await erasure_status(conn, member_id)
    except NotFound:
        return _not_found(request, session)
    if erasure.state == "erased":
        return await _erasure_page(request, session, member_id, reason="", error=None,
                                   status_code=409)
    done = "?done=erasure_cancelled" if erasure.state == "cancelled" else ""
    return Redirect(f"/console/members/{member_id}{done}", status_code=303)
