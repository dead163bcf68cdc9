"""Erasure of a member's personal data (GDPR art. 17, APPI art. 35), on request after a grace
period, and of members inactive for years (retention). docs/decisions/0015-erasure.md.

An erasure is one transaction per member: the profile's personal fields are removed and the
member row keeps its id, its member number (a random pseudonym, printed nowhere but the app's
card) and status ``erased``; purchases, the ledger, lots and coupons stay for accounting,
linked only to that id. Copies of the profile elsewhere go too: the payloads of the member's
``member.registered`` and ``member.updated`` events (and the contact and secret of its
``member.password_reset_requested`` and ``member.verification_requested``), what webhook
receivers answered to the member's events, idempotent replays that echo the profile, and any
audit row text holding one of the member's values (through the database's one narrow door,
migration 0031). Sessions and refresh tokens end. ``member.erased`` goes out through the outbox
in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, Literal
from uuid import UUID

import msgspec

from loyalty.core.db import Connection, Pool
from loyalty.core.errors import Conflict, NotFound
from loyalty.core.outbox import emit
from schemas.members import Erasure
from schemas.outbox import MemberErasedData

Requester = Literal["member", "staff", "retention"]
# Statuses whose members hold personal data and may be erased. A merged member's record is a
# pointer to the survivor, but still holds the profile it had.
ERASABLE = ("active", "dormant", "suspended", "merged")
# Values this short are left in audit text: replacing one letter everywhere would erase far
# more than the member (a one-letter attribute, a name of one character).
_SHORTEST_SCRUBBED = 2

_ERASURE_COLUMNS = "member_id, requested_at, due_at, cancelled_at, erased_at"


def _erasure(row: Any) -> Erasure:
    if row["erased_at"] is not None:
        state = "erased"
    elif row["cancelled_at"] is not None:
        state = "cancelled"
    else:
        state = "pending"
    return msgspec.convert({**dict(row), "state": state}, Erasure)


async def erasure_status(conn: Connection, member_id: UUID) -> Erasure:
    """The member's latest erasure request and where it stands (``none`` if never asked)."""
    row = await conn.fetchrow(
        f"""
        select {_ERASURE_COLUMNS} from member_erasures where member_id = $1
         order by requested_at desc, erasure_id desc limit 1
        """,  # noqa: S608 - a module constant column list
        member_id)
    return _erasure(row) if row is not None else Erasure(member_id=member_id, state="none")


async def request_erasure(
    conn: Connection, member_id: UUID, *, by: Requester, by_id: UUID | None,
    grace: dt.timedelta, now: dt.datetime,
) -> Erasure:
    """Schedule the member's erasure ``grace`` from ``now``, or erase at once when ``grace`` is
    zero. Asking again while one is pending answers that one, unchanged."""
    async with conn.transaction():
        status = await conn.fetchval(
            "select status from members where member_id = $1 for update", member_id)
        if status is None:
            raise NotFound("no such member", field="member_id", code="member_not_found")
        if status not in ERASABLE:
            raise Conflict("this member's data is already erased", code="already_erased")
        pending = await conn.fetchrow(
            f"""
            select {_ERASURE_COLUMNS} from member_erasures
             where member_id = $1 and cancelled_at is null and erased_at is null
            """,  # noqa: S608 - a module constant column list
            member_id)
        if pending is not None:
            return _erasure(pending)
        row = await conn.fetchrow(
            f"""
            insert into member_erasures (member_id, requested_at, due_at, requested_by_kind,
                                         requested_by)
            values ($1, $2, $3, $4, $5)
            returning {_ERASURE_COLUMNS}
            """,  # noqa: S608 - a module constant column list
            member_id, now, now + grace, by, by_id)
        if grace <= dt.timedelta(0):
            await erase_member(conn, member_id, now=now, reason=_REASONS[by])
            row = await _mark_erased(conn, member_id, now)
        return _erasure(row)


async def cancel_erasure(
    conn: Connection, member_id: UUID, *, by: Literal["member", "staff"], by_id: UUID | None,
    now: dt.datetime,
) -> Erasure:
    """Cancel the member's pending erasure; with none pending, where the latest stands (so a
    second cancel answers as the first did)."""
    row = await conn.fetchrow(
        f"""
        update member_erasures set cancelled_at = $2, cancelled_by_kind = $3, cancelled_by = $4
         where member_id = $1 and cancelled_at is null and erased_at is null
        returning {_ERASURE_COLUMNS}
        """,  # noqa: S608 - a module constant column list
        member_id, now, by, by_id)
    if row is not None:
        return _erasure(row)
    if not await conn.fetchval("select exists (select 1 from members where member_id = $1)",
                               member_id):
        raise NotFound("no such member", field="member_id", code="member_not_found")
    return await erasure_status(conn, member_id)


async def _mark_erased(conn: Connection, member_id: UUID, now: dt.datetime) -> Any:
    return await conn.fetchrow(
        f"""
        update member_erasures set erased_at = $2
         where member_id = $1 and cancelled_at is null and erased_at is null
        returning {_ERASURE_COLUMNS}
        """,  # noqa: S608 - a module constant column list
        member_id, now)


# What member_status_changes says of each kind of erasure (never the staff's free-text reason,
# which is in the audit log).
_REASONS: dict[Requester, str] = {
    "member": "erasure requested by the member",
    "staff": "erasure requested through support",
    "retention": "erasure after years of inactivity",
}


def _strings(value: object) -> Iterator[str]:
    """Every string and number held in an attributes value, as text."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield str(value)


_PROFILE = """
select email, phone, name, name_kana, postal_code, external_id, birth_date, attributes, status
  from members where member_id = $1 for update
"""

_BLANK_PROFILE = """
update members
   set email = null, phone = null, password_hash = null, name = '', name_kana = '',
       name_key = '', kana_key = '', birth_date = null, postal_code = null,
       attributes = '{}', external_id = null, email_skeleton = null, name_skeleton = '',
       status = 'erased', status_changed_at = $2, updated_at = $2
 where member_id = $1
"""

# The profile fields of member.registered and member.updated, blanked in the payloads kept in
# the outbox (the payloads still decode into their Structs).
_BLANK_EVENTS = """
update outbox
   set data = data || jsonb_build_object('name', '', 'name_kana', '', 'email', null,
                                         'phone', null, 'birth_date', null,
                                         'postal_code', null, 'attributes', '{}'::jsonb)
 where member_id = $1 and type in ('member.registered', 'member.updated')
"""

# The contact a reset link or a verification code was sent to, and the secret itself.
_BLANK_MESSAGES = """
update outbox
   set data = data || jsonb_build_object('contact', '', 'token', '', 'code', '')
         - (case when type = 'member.password_reset_requested' then 'code' else 'token' end)
 where member_id = $1
   and type in ('member.password_reset_requested', 'member.verification_requested')
"""

# What receivers answered to the member's events may echo them.
_FORGET_ANSWERS = """
with deliveries as (
    update webhook_deliveries
       set last_error = null,
           delivered_head = case when delivered_head is not null then '' end
     where member_id = $1
    returning delivery_id
)
update webhook_attempts set response_head = '', error = null
 where delivery_id in (select delivery_id from deliveries)
"""

# Stored answers that echo the profile: the member's own keys, and staff's (correcting the
# profile) whose stored body holds one of the values. Tills' answers name a member by id and
# number only, and are most of the keys: they are not read.
_FORGET_REPLAYS = """
delete from idempotency_keys
 where principal_id = $1
    or (principal_id in (select staff_id from staff)
        and exists (select 1 from unnest($2::text[]) v
                     where position(convert_to(v, 'UTF8') in response_body) > 0))
"""


async def erase_member(conn: Connection, member_id: UUID, *, now: dt.datetime,
                       reason: str) -> None:
    """Erase the member's personal data now (the caller's transaction; see the module)."""
    async with conn.transaction():
        profile = await conn.fetchrow(_PROFILE, member_id)
        if profile is None:
            raise NotFound("no such member", field="member_id", code="member_not_found")
        if profile["status"] not in ERASABLE:
            raise Conflict("this member's data is already erased", code="already_erased")
        values = sorted({
            value for value in (
                profile["email"], profile["phone"], profile["name"], profile["name_kana"],
                profile["postal_code"], profile["external_id"],
                profile["birth_date"].isoformat() if profile["birth_date"] else None,
                *_strings(profile["attributes"]),
            ) if value and len(value) >= _SHORTEST_SCRUBBED})
        # The status history (migration 0010) records the change, and its trigger writes
        # member.status_changed and tells every API process to refuse the member's tokens.
        await conn.execute("select set_config('loyalty.status_reason', $1, true)", reason)
        await conn.execute(_BLANK_PROFILE, member_id, now)
        await conn.execute("select set_config('loyalty.status_reason', '', true)")
        await conn.execute("delete from refresh_tokens where member_id = $1", member_id)
        # Targets of engagement actions are what the member shared (a URL, a post).
        await conn.execute(
            "update member_actions set target = null where member_id = $1 and target is not null",
            member_id)
        # Scores about the person, kept for nothing once they are gone; and the read model of
        # their points (derived from the ledger, which stays): nobody reads it again.
        for table in ("member_rfm", "member_at_risk", "member_churn_scores",
                      "point_summaries"):
            await conn.execute(f"delete from {table} where member_id = $1", member_id)  # noqa: S608 - a constant table name
        await conn.execute(_BLANK_EVENTS, member_id)
        await conn.execute(_BLANK_MESSAGES, member_id)
        await conn.execute(_FORGET_ANSWERS, member_id)
        await conn.execute(_FORGET_REPLAYS, member_id, values)
        await conn.fetchval("select erase_from_audit_log($1, $2::text[])", member_id, values)
        await emit(conn, "member.erased", MemberErasedData(member_id=member_id, erased_at=now),
                   member_id=member_id, occurred_at=now)
        # Records merged into this one are the same person's earlier profiles.
        for merged in await conn.fetch(
                "select member_id from members where merged_into = $1 and status = 'merged'"
                " order by member_id", member_id):
            await erase_member(conn, merged["member_id"], now=now, reason=reason)


async def erase_due_members(pool: Pool, *, now: dt.datetime, batch_size: int = 100
                            ) -> dict[str, int]:
    """The erasure job: every pending erasure due by ``now``, one transaction per member; a
    member another run is erasing meanwhile is left to it."""
    erased = 0
    after: tuple[dt.datetime, UUID] | None = None
    while True:
        async with pool.acquire() as conn:
            due = await conn.fetch(
                """
                select due_at, member_id from member_erasures
                 where cancelled_at is null and erased_at is null and due_at <= $1
                   and ($2::timestamptz is null or (due_at, member_id) > ($2, $3::uuid))
                 order by due_at, member_id limit $4
                """, now, *(after or (None, None)), batch_size)
            for row in due:
                async with conn.transaction():
                    claimed = await conn.fetchrow(
                        """
                        select requested_by_kind from member_erasures
                         where member_id = $1 and cancelled_at is null and erased_at is null
                           and due_at <= $2
                           for update skip locked
                        """, row["member_id"], now)
                    if claimed is None:
                        continue  # cancelled, or another run has it
                    await erase_member(conn, row["member_id"], now=now,
                                       reason=_REASONS[claimed["requested_by_kind"]])
                    await _mark_erased(conn, row["member_id"], now)
                    erased += 1
        if len(due) < batch_size:
            return {"erased": erased}
        after = (due[-1]["due_at"], due[-1]["member_id"])


async def erase_inactive_members(pool: Pool, *, years: int, now: dt.datetime,
                                 batch_size: int = 100) -> dict[str, int]:
    """The retention job: members with no purchase or engagement for ``years`` years are
    erased, one transaction each; ``years`` 0 erases nobody."""
    if years <= 0:
        return {"erased": 0}
    before = _years_before(now, years)
    erased = 0
    after: UUID | None = None
    while True:
        async with pool.acquire() as conn:
            # In member-id order along the primary key: last_activity_at has no index (every
            # purchase writes it; migration 0031), and one walk of the table is what a daily
            # job may take.
            found = await conn.fetch(
                """
                select member_id from members
                 where status in ('active', 'dormant', 'suspended', 'merged')
                   and last_activity_at < $1
                   and ($2::uuid is null or member_id > $2)
                 order by member_id limit $3
                """, before, after, batch_size)
            for row in found:
                async with conn.transaction():
                    # Read again under the row lock: a purchase may have come meanwhile.
                    still = await conn.fetchval(
                        """
                        select true from members
                         where member_id = $1 and last_activity_at < $2
                           and status in ('active', 'dormant', 'suspended', 'merged')
                           for update skip locked
                        """, row["member_id"], before)
                    if not still:
                        continue
                    # A request pending for this member is done by this erasure.
                    if await _mark_erased(conn, row["member_id"], now) is None:
                        await conn.execute(
                            """
                            insert into member_erasures (member_id, requested_at, due_at,
                                                         requested_by_kind, erased_at)
                            values ($1, $2, $2, 'retention', $2)
                            """, row["member_id"], now)
                    await erase_member(conn, row["member_id"], now=now,
                                       reason=_REASONS["retention"])
                    erased += 1
        if len(found) < batch_size:
            return {"erased": erased}
        after = found[-1]["member_id"]


def _years_before(moment: dt.datetime, years: int) -> dt.datetime:
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year - years, day=28)
