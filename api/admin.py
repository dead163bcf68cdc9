"""Administration: stores, terminals and staff accounts (staff role admin, reads for all staff)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, AnyRequest, Db, Staff, Svc
from api.idempotency import idempotent
from api.params import Cursor, Limit, Since
from api.sessions import check_current_password, limit_sign_in_address
from loyalty.access.audit import list_audit, record_audit
from loyalty.access.passwords import check_new_password
from loyalty.access.roles import ADMINS, STORE_READERS
from loyalty.access.sign_in import account_key
from loyalty.access.staff import (
    create_staff,
    get_staff,
    list_staff,
    set_staff_password,
    staff_password_hash,
    update_staff,
)
from loyalty.access.stores import (
    create_store,
    create_terminal,
    get_store_by_code,
    list_stores,
    list_terminals,
    revoke_terminal,
)
from schemas.admin import (
    AuditEntry,
    StaffAccount,
    StaffCreate,
    StaffRole,
    StaffUpdate,
    Store,
    StoreCreate,
    Terminal,
    TerminalCreate,
    TerminalCreated,
)
from schemas.auth import PasswordChange
from schemas.base import Instant, Page, whole

ADMIN = staff_with(*ADMINS)
AuditAction = Annotated[str | None, QueryParameter(
    min_length=1, max_length=64, pattern=whole(r"[a-z_]+(\.[a-z_]+)*"),
    description="an action, e.g. members.read or pos.members.lookup")]
ANY_STAFF = staff_with(*STORE_READERS)


class TerminalsController(Controller):
    path = "/v1/terminals"
    tags = ["administration"]
    guards = [ADMIN]
    dependencies = STAFF_DEPENDENCIES

    @post("", operation_id="createTerminal", status_code=201)
    async def create(
        self, data: JSONBody[TerminalCreate], staff: Staff, conn: Db
    ) -> TerminalCreated:
        """A terminal for an existing store. Its API key is in this response only."""
        store = await get_store_by_code(conn, data.store_code)
        created = await create_terminal(conn, store=store, name=data.name,
                                        created_by=staff.staff_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="terminals.create", subject_kind="terminal",
                           subject_id=created.terminal.terminal_id)
        return created

    @get("", operation_id="listTerminals")
    async def list(self, conn: Db, include_revoked: FromQuery[bool] = False) -> list[Terminal]:
        """All terminals, grouped by store."""
        return await list_terminals(conn, include_revoked=include_revoked)

    @delete("/{terminal_id:uuid}", operation_id="revokeTerminal", status_code=204)
    @idempotent
    async def revoke(self, terminal_id: FromPath[UUID], staff: Staff, conn: Db,
                     services: Svc) -> None:
        """Revoke the terminal's key: at once on this instance, within 10 seconds on every
        other (they remember checked keys that long); the record stays for history."""
        await revoke_terminal(conn, terminal_id)
        services.terminal_keys.forget(terminal_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="terminals.revoke", subject_kind="terminal",
                           subject_id=terminal_id)


class StaffController(Controller):
    path = "/v1/staff"
    tags = ["administration"]
    guards = [ADMIN]
    dependencies = STAFF_DEPENDENCIES

    @post("", operation_id="createStaff", status_code=201)
    @idempotent
    async def create(
        self, data: JSONBody[StaffCreate], staff: Staff, conn: Db, services: Svc
    ) -> StaffAccount:
        """A staff account with one role."""
        check_new_password(data.password)
        account = await create_staff(
            conn, email=data.email, password_hash=await services.passwords.hash(data.password),
            role=data.role, display_name=data.display_name,
        )
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="staff.create", subject_kind="staff",
                           subject_id=account.staff_id, details={"role": data.role})
        return account

    @get("", operation_id="listStaff")
    async def list(
        self, conn: Db, active: FromQuery[bool | None] = None,
        role: FromQuery[StaffRole | None] = None, limit: Limit = 50, cursor: Cursor = None,
    ) -> Page[StaffAccount]:
        """Staff accounts by e-mail address; ``active`` and ``role`` narrow the list."""
        return await list_staff(conn, active=active, role=role, limit=limit, cursor=cursor)

    @get("/{staff_id:uuid}", operation_id="getStaff")
    async def read(self, staff_id: FromPath[UUID], conn: Db) -> StaffAccount:
        return await get_staff(conn, staff_id)

    @patch("/{staff_id:uuid}", operation_id="updateStaff")
    @idempotent
    async def update(self, staff_id: FromPath[UUID], data: JSONBody[StaffUpdate],
                     staff: Staff, conn: Db) -> StaffAccount:
        """Change the role or display name, deactivate (``active: false``) or reactivate.
        A new role or deactivation ends the account's sessions and tokens within a second;
        the last active admin cannot be deactivated or given another role (409 last_admin)."""
        changed = await update_staff(conn, staff_id, role=data.role,
                                     display_name=data.display_name, active=data.active)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="staff.update", subject_kind="staff", subject_id=staff_id,
                           details=changed.changes)
        return changed.account


class MyStaffAccountController(Controller):
    path = "/v1/staff/me"
    tags = ["auth"]
    guards = [ANY_STAFF]
    dependencies = STAFF_DEPENDENCIES

    @put("/password", operation_id="changeMyStaffPassword", status_code=204)
    async def change_password(
        self, request: AnyRequest, data: JSONBody[PasswordChange], staff: Staff, conn: Db,
        services: Svc,
    ) -> None:
        """Change one's own password, giving the current one (counted like a sign-in). Every
        other session ends, console sessions included; this one goes on. Audited."""
        await limit_sign_in_address(request, services)
        check_new_password(data.new_password, field="new_password")
        await check_current_password(services, account_key("staff", staff.staff_id),
                                     await staff_password_hash(conn, staff.staff_id),
                                     data.current_password)
        await set_staff_password(conn, staff.staff_id,
                                 await services.passwords.hash(data.new_password),
                                 keep_session=staff.session_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="staff.password", subject_kind="staff",
                           subject_id=staff.staff_id)


class StoresController(Controller):
    path = "/v1/stores"
    tags = ["administration"]
    dependencies = STAFF_DEPENDENCIES

    @get("", operation_id="listStores", guards=[ANY_STAFF])
    async def list(self, conn: Db) -> list[Store]:
        """All stores, by code."""
        return await list_stores(conn)

    @post("", operation_id="createStore", status_code=201, guards=[ADMIN])
    @idempotent
    async def create(self, data: JSONBody[StoreCreate], staff: Staff, conn: Db) -> Store:
        """A store; its code is what terminals and receipts are scoped to."""
        store = await create_store(conn, code=data.code, name=data.name)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="stores.create", subject_kind="store",
                           subject_id=store.store_id)
        return store


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["administration"]
    guards = [ADMIN]
    dependencies = STAFF_DEPENDENCIES

    @get("", operation_id="listAudit")
    async def list(
        self, conn: Db, actor: FromQuery[UUID | None] = None,
        subject: FromQuery[UUID | None] = None, action: AuditAction = None,
        from_: Annotated[Instant | None, QueryParameter(
            name="from", description="RFC 3339 with its UTC offset")] = None,
        to: Since = None, limit: Limit = 50, cursor: Cursor = None,
    ) -> Page[AuditEntry]:
        """The audit trail, newest first: staff actions, staff reads of members' data, till
        look-ups. ``actor`` is a staff account's or terminal's id, ``subject`` a member's (or
        another object's) id; ``from`` inclusive, ``to`` exclusive."""
        return await list_audit(conn, actor_id=actor, subject_id=subject, action=action,
                                recorded_from=from_, recorded_to=to, limit=limit,
                                cursor=cursor)
