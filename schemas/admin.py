"""Stores, staff accounts and terminals."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from uuid import UUID

from schemas.base import Code, Email, Input, Name, Output, Password, ShortText

StaffRole = Literal["admin", "marketer", "analyst", "support"]


class StoreCreate(Input):
    code: Code
    name: Name


class Store(Output):
    store_id: UUID
    code: str
    name: str
    created_at: dt.datetime


class StaffCreate(Input):
    email: Email
    password: Password
    role: StaffRole
    display_name: ShortText = ""


class StaffAccount(Output):
    staff_id: UUID
    email: str
    role: StaffRole
    display_name: str
    active: bool
    created_at: dt.datetime


class StaffUpdate(Input):
    """What changes; a field left out stays as it is. ``active: false`` deactivates the
    account, ``true`` reactivates it; a new role or deactivation ends its sessions at once."""

    role: StaffRole | None = None
    display_name: ShortText | None = None
    active: bool | None = None


class TerminalCreate(Input):
    store_code: Code
    name: ShortText = ""


class Terminal(Output):
    terminal_id: UUID
    name: str
    key_prefix: str
    store: Store
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class TerminalCreated(Output):
    """The only time the key is shown: it is stored hashed."""

    terminal: Terminal
    api_key: str


class WhoAmI(Output):
    terminal_id: UUID
    name: str
    store: Store


class AuditEntry(Output):
    """One audit row: who (a staff account, a terminal, a member, or the system) did or read
    what, to whom, when, with what the action recorded in ``details``."""

    audit_id: UUID
    recorded_at: dt.datetime
    actor_kind: str
    actor_id: UUID | None
    action: str
    subject_kind: str
    subject_id: UUID | None
    details: dict[str, Any]
    actor_email: str | None = None  # a staff actor's sign-in address
    address: str | None = None  # where the request came from; none for jobs and the CLI
