"""The audit log (admins): who did or read what, to whom, when, newest first, filtered by the
actor (a staff e-mail address or a terminal id), the subject (a member's or another object's
id), the action and the business days from and to, through the function GET /v1/audit calls
(loyalty.access.audit.list_audit)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated
from uuid import UUID
from zoneinfo import ZoneInfo

from litestar import Response, get
from litestar.params import QueryParameter

from console.forms import Cursor
from console.pages import render, staff_session
from console.services import AnyRequest, services
from loyalty.access.audit import list_audit
from loyalty.access.roles import ADMINS
from loyalty.access.staff import staff_id_by_email
from loyalty.core.db import transaction
from loyalty.core.errors import InvalidInput, NotFound
from schemas.base import SINGLE_LINE

PAGE_SIZE = 50
Text = Annotated[str | None, QueryParameter(max_length=254, pattern=SINGLE_LINE)]
_ACTION = re.compile(r"[a-z_]+(\.[a-z_]+)*")


def _day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


@get("/audit")
async def audit_page(
    request: AnyRequest, actor: Text = None, subject: Text = None, action: Text = None,
    from_: Annotated[str | None, QueryParameter(name="from", max_length=10,
                                                pattern=SINGLE_LINE)] = None,
    to: Annotated[str | None, QueryParameter(max_length=10, pattern=SINGLE_LINE)] = None,
    cursor: Cursor = None,
) -> Response[str]:
    """The filters and a page of the trail; an htmx request gets the rows alone. A filter that
    does not read shows the page again, 400, with the message next to it."""
    session = await staff_session(request, ADMINS)
    svc = services(request)
    tz = ZoneInfo(svc.settings.timezone)
    form = {"actor": (actor or "").strip(), "subject": (subject or "").strip(),
            "action": (action or "").strip(), "from": (from_ or "").strip(),
            "to": (to or "").strip()}
    errors: dict[str, str] = {}
    subject_id = actor_id = None
    recorded_from = recorded_to = None
    if form["subject"]:
        try:
            subject_id = UUID(form["subject"])
        except ValueError:
            errors["subject"] = "invalid"
    if form["action"] and not _ACTION.fullmatch(form["action"]):
        errors["action"] = "invalid"
    for name in ("from", "to"):
        if form[name]:
            try:
                day = _day(form[name])
            except ValueError:
                errors[name] = "invalid"
                continue
            start = dt.datetime.combine(day, dt.time(), tz)
            if name == "from":
                recorded_from = start
            else:  # the whole of the last day
                recorded_to = start + dt.timedelta(days=1)
    page = None
    async with transaction(svc.pool) as conn:
        if form["actor"]:
            try:
                actor_id = await staff_id_by_email(conn, form["actor"]) \
                    if "@" in form["actor"] else UUID(form["actor"])
            except (ValueError, NotFound):
                errors["actor"] = "invalid"
        if not errors:
            try:
                page = await list_audit(
                    conn, actor_id=actor_id, subject_id=subject_id,
                    action=form["action"] or None, recorded_from=recorded_from,
                    recorded_to=recorded_to, limit=PAGE_SIZE, cursor=cursor or None)
            except InvalidInput:
                errors["cursor"] = "invalid"
    filters = {k: v for k, v in form.items() if v}
    partial = request.headers.get("hx-request") and not errors
    return render(request, "audit_results.html" if partial else "audit.html", session=session,
                  page=page, form=form, errors=errors, filters=filters,
                  status_code=400 if errors else 200)


ROUTES = [audit_page]
