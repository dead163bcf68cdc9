"""Staff accounts (admins): the list with filters, a new account with the initial password the
admin types, and per account its display name, role, and deactivation or reactivation (asked
twice), through the functions the API's /v1/staff calls (api/admin.py). A new role or a
deactivation ends the account's console sessions and API tokens at once (migration 0015)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Response, get, post
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect

from console.forms import Cursor
from console.pages import render, staff_session
from console.roles import STAFF_ROLES
from console.services import AnyRequest, services
from console.session import ConsoleSession, check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.passwords import check_new_password
from loyalty.access.roles import ADMINS
from loyalty.access.staff import create_staff, get_staff, list_staff, update_staff
from loyalty.core.db import transaction
from loyalty.core.errors import Conflict, InvalidInput
from schemas.admin import StaffAccount, StaffCreate, StaffUpdate
from schemas.base import whole

PAGE_SIZE = 25
Word = Annotated[str | None, QueryParameter(max_length=20, pattern=whole(r"[a-z_]*"))]


async def _form(request: AnyRequest, session: ConsoleSession) -> Any:
    form = await request.form()
    check_csrf(request, session.csrf_token, form.get("csrf_token"))
    return form


def _filters(role: str | None, active: str | None) -> tuple[str | None, bool | None]:
    return (role if role in STAFF_ROLES else None,
            {"true": True, "false": False}.get(active or ""))


async def _list_page(request: AnyRequest, session: ConsoleSession, *, role: str | None = None,
                     active: str | None = None, cursor: str | None = None,
                     form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                     done: str | None = None, status_code: int = 200) -> Response[str]:
    chosen_role, chosen_active = _filters(role, active)
    async with transaction(services(request).pool) as conn:
        page = await list_staff(conn, role=chosen_role, active=chosen_active, limit=PAGE_SIZE,
                                cursor=cursor or None)
    template = "staff_results.html" if request.headers.get("hx-request") and not form \
        and status_code == 200 else "staff.html"
    return render(request, template, session=session, page=page, roles=STAFF_ROLES,
                  role=chosen_role or "", active=active if chosen_active is not None else "",
                  form=form or {}, errors=errors or {}, done=done, status_code=status_code)


@get("/staff")
async def staff_page(request: AnyRequest, role: Word = None, active: Word = None,
                     cursor: Cursor = None, done: Word = None) -> Response[str]:
    """Staff accounts by e-mail address, filtered by role and standing, and the form for a new
    one; an htmx request gets the list alone."""
    session = await staff_session(request, ADMINS)
    return await _list_page(request, session, role=role, active=active, cursor=cursor,
                            done="created" if done == "created" else None)


@post("/staff", status_code=303)
async def staff_create(request: AnyRequest) -> Response[Any]:
    """A new account with the role and initial password typed; bad input: the page again, 400,
    the message next to its field, nothing written."""
    session = await staff_session(request, ADMINS)
    form = await _form(request, session)
    svc = services(request)
    values = {name: (form.get(name) or "").strip()
              for name in ("email", "display_name", "role")}
    password = form.get("password") or ""
    errors: dict[str, str] = {}
    try:
        data = msgspec.convert({**values, "password": password}, StaffCreate)
    except msgspec.ValidationError as exc:
        for name in ("email", "password", "role", "display_name"):
            if f"$.{name}" in str(exc):
                errors[name] = "invalid"
        errors = errors or {"email": "invalid"}
    else:
        try:
            check_new_password(data.password)
            async with transaction(svc.pool) as conn:
                account = await create_staff(
                    conn, email=data.email, password_hash=await svc.passwords.hash(data.password),
                    role=data.role, display_name=data.display_name)
                await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                                   action="staff.create", subject_kind="staff",
                                   subject_id=account.staff_id,
                                   details={"role": data.role, "via": "console"})
        except Conflict:
            errors["email"] = "taken"
        except InvalidInput as exc:
            if exc.code == "common_password":
                errors["password"] = "common"
            else:
                errors["email"] = "invalid"
    if errors:
        return await _list_page(request, session, form=values, errors=errors, status_code=400)
    return Redirect("/console/staff?done=created", status_code=303)


async def _account_page(request: AnyRequest, session: ConsoleSession, staff_id: UUID, *,
                        account: StaffAccount | None = None, confirm: str | None = None,
                        errors: dict[str, str] | None = None, done: str | None = None,
                        status_code: int = 200) -> Response[str]:
    if account is None:
        async with transaction(services(request).pool) as conn:
            account = await get_staff(conn, staff_id)
    return render(request, "staff_account.html", session=session, account=account,
                  roles=STAFF_ROLES, confirm=confirm, errors=errors or {}, done=done,
                  myself=account.staff_id == session.principal.staff_id,
                  status_code=status_code)


@get("/staff/{staff_id:uuid}")
async def staff_account_page(request: AnyRequest, staff_id: FromPath[UUID],
                             done: Word = None) -> Response[str]:
    """One account: its display name and role to change, and the button that deactivates or
    reactivates it."""
    session = await staff_session(request, ADMINS)
    return await _account_page(request, session, staff_id,
                               done=done if done in ("name", "role", "active") else None)


async def _change(request: AnyRequest, session: ConsoleSession, staff_id: UUID,
                  change: StaffUpdate, done: str) -> Response[Any]:
    try:
        async with transaction(services(request).pool) as conn:
            changed = await update_staff(conn, staff_id, role=change.role,
                                         display_name=change.display_name, active=change.active)
            await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                               action="staff.update", subject_kind="staff", subject_id=staff_id,
                               details={**changed.changes, "via": "console"})
    except Conflict as refused:
        if refused.code != "last_admin":
            raise
        return await _account_page(request, session, staff_id, errors={"last_admin": "yes"},
                                   status_code=409)
    return Redirect(f"/console/staff/{staff_id}?done={done}", status_code=303)


@post("/staff/{staff_id:uuid}/name", status_code=303)
async def staff_rename(request: AnyRequest, staff_id: FromPath[UUID]) -> Response[Any]:
    session = await staff_session(request, ADMINS)
    form = await _form(request, session)
    try:
        change = msgspec.convert({"display_name": (form.get("display_name") or "").strip()},
                                 StaffUpdate)
    except msgspec.ValidationError:
        return await _account_page(request, session, staff_id,
                                   errors={"display_name": "invalid"}, status_code=400)
    return await _change(request, session, staff_id, change, "name")


@post("/staff/{staff_id:uuid}/role", status_code=303)
async def staff_change_role(request: AnyRequest, staff_id: FromPath[UUID]) -> Response[Any]:
    """Another role; the account's sessions end, so its next sign-in carries the new one."""
    session = await staff_session(request, ADMINS)
    form = await _form(request, session)
    try:
        change = msgspec.convert({"role": form.get("role") or ""}, StaffUpdate)
    except msgspec.ValidationError:
        return await _account_page(request, session, staff_id, errors={"role": "invalid"},
                                   status_code=400)
    return await _change(request, session, staff_id, change, "role")


@post("/staff/{staff_id:uuid}/active", status_code=303)
async def staff_set_active(request: AnyRequest, staff_id: FromPath[UUID]) -> Response[Any]:
    """Deactivate or reactivate: the first submit shows what will happen and asks again; the
    second (``confirmed=yes``) does it."""
    session = await staff_session(request, ADMINS)
    form = await _form(request, session)
    wanted = form.get("active")
    if wanted not in ("true", "false"):
        return await _account_page(request, session, staff_id, errors={"active": "invalid"},
                                   status_code=400)
    if form.get("confirmed") != "yes":
        return await _account_page(request, session, staff_id, confirm=wanted)
    return await _change(request, session, staff_id, StaffUpdate(active=wanted == "true"),
                         "active")


ROUTES = [staff_page, staff_create, staff_account_page, staff_rename, staff_change_role,
          staff_set_active]
