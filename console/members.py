"""Members: search by name, kana, e-mail, phone or member number, through the function the API's
search calls (GET /v1/members), with the API's rules for who sees contact details."""

from __future__ import annotations

from typing import Annotated

from litestar import Response, get
from litestar.params import QueryParameter

from console.pages import render, staff_session
from console.services import AnyRequest, services
from loyalty.access.audit import record_audit
from loyalty.access.roles import CONTACT_READERS, PROFILE_READERS
from loyalty.core.db import transaction
from loyalty.members.profiles import search_kind, search_members
from schemas.base import SINGLE_LINE, whole

PAGE_SIZE = 25
# Bounded as the API's search parameters are (api/params.py); empty is allowed, since the form
# sends an empty box as ``q=``.
SearchText = Annotated[str | None, QueryParameter(max_length=100, pattern=SINGLE_LINE)]
Cursor = Annotated[str | None, QueryParameter(max_length=200,
                                              pattern=whole(r"[A-Za-z0-9_-]*"))]


@get("/members")
async def members_page(
    request: AnyRequest, q: SearchText = None, cursor: Cursor = None,
) -> Response[str]:
    """The search form and a page of results; an htmx request gets the results alone. A role
    that may not see contact details finds by number, name and kana only, as in the API."""
    svc = services(request)
    session = await staff_session(request, PROFILE_READERS)
    contacts = session.role in CONTACT_READERS
    page = None
    q = (q or "").strip() or None
    cursor = cursor or None
    if q is not None or cursor is not None:
        async with transaction(svc.pool) as conn:
            page = await search_members(conn, q=q, limit=PAGE_SIZE, cursor=cursor,
                                        region=svc.settings.default_region, by_contact=contacts)
            await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                               action="members.search", subject_kind="member", subject_id=None,
                               details={"q_kind": search_kind(q), "status": None,
                                        "results": len(page.items),
                                        "found": [str(m.member_id) for m in page.items],
                                        "via": "console"})
    template = "members_results.html" if request.headers.get("hx-request") else "members.html"
    return render(request, template, session=session, q=q or "", page=page,
                  contacts=contacts, cursor=cursor)
