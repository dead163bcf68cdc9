"""Administration: stores, terminals and staff accounts (staff role admin, reads for all staff)."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, Db, Staff, Svc
from api.idempotency import idempotent
from loyalty.access.audit import record_audit
from loyalty.access.roles import ADMINS, STORE_READERS
from loyalty.access.staff import create_staff
from loyalty.access.stores import (
    create_store,
    create_terminal,
    get_store_by_code,
    list_stores,
    list_terminals,
    revoke_terminal,
)
from schemas.admin import (
    StaffAccount,
    StaffCreate,
    Store,
    StoreCreate,
    Terminal,
    TerminalCreate,
    TerminalCreated,
)

ADMIN = staff_with(*ADMINS)
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
        account = await create_staff(
            conn, email=data.email, password_hash=await services.passwords.hash(data.password),
            role=data.role, display_name=data.display_name,
        )
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id,
                           action="staff.create", subject_kind="staff",
                           subject_id=account.staff_id, details={"role": data.role})
        return account


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
