"""The points ledger: a member's ledger read in one statement, a posting built by pure code
(``loyalty/points/posting.py``), and the posting applied exactly once in one more statement.

Every write to a member's points goes through ``post``. It reads the ledger (balance, open lots,
the version of the balance row, and any stored response for the idempotency key), lets the
caller build a ``Posting`` from it, and applies the posting in a single statement that checks
the version it read: if anything changed the member's ledger in between, the statement undoes
itself and ``post`` does it again under the balance row's lock, where nothing can change
(docs/decisions/0005-ledger-concurrency.md). One statement is one transaction, so a posting and
its idempotency record commit together or not at all, however the connection dies.

A use case adds to both statements by name: the columns it reads beside the ledger
(``ledger_read``) and the CTEs that write its business record with the posting
(``posting_statement``). Their SQL stays in the use case's module, their parameters are named
(``loyalty/core/sql.py``), and each is numbered once, at import.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

import asyncpg
import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, NotFound, ServiceUnavailable
from loyalty.core.idempotency import Idempotency, StoredResponse, check_same_request
from loyalty.core.metrics import count_entries
from loyalty.core.outbox import API_VERSION
from loyalty.core.sql import Statement, named
from loyalty.points.posting import Lot, MemberLedger, Posting

# What a use case reads beside the ledger: a Struct or dataclass whose fields name its columns.
Extra = TypeVar("Extra")
MERGE_HOPS = 5


# -- reading ---------------------------------------------------------------------------------

_LEDGER_SELECT = """
select m.member_id, m.member_number, m.name, m.status, m.birth_date, m.merged_into,
       b.version, b.available, b.pending, b.lifetime_earned, b.lifetime_redeemed,
       b.lifetime_expired, b.purchase_count, b.birthday_bonus_year, b.tier, b.tier_since,
       (select coalesce(max(version), 0) from earning_rule_versions) as rules_version,
       (select array_agg((l.lot_id, l.points, l.remaining, l.earned_at, l.available_at,
                          l.released_at is not null, l.expires_at, l.origin_lot_id)
                         order by l.expires_at nulls last, l.earned_at, l.lot_id)
          from point_lots l
         where l.member_id = m.member_id and l.remaining > 0) as lots,
       k.request_hash, k.response_status, k.response_body{columns}
  from members m
  join point_balances b on b.member_id = m.member_id
  left join idempotency_keys k on k.principal_id = :principal_id
                              and k.idempotency_key = :idempotency_key
 where {member} = :member
"""

_LEDGER_COLUMNS = (
    "member_id", "member_number", "name", "status", "birth_date", "merged_into", "version",
    "available", "pending", "lifetime_earned", "lifetime_redeemed", "lifetime_expired",
    "purchase_count", "birthday_bonus_year", "tier", "tier_since", "rules_version",
)


@dataclass(frozen=True)
class LedgerRead(Generic[Extra]):
    """The ledger read by member id and by member number, with a use case's columns beside it
    and how they become its ``Extra``."""

    by_id: Statement
    by_number: Statement
    decode: Callable[[asyncpg.Record], Extra]


def _statements(columns: str) -> tuple[Statement, Statement]:
    return (named(_LEDGER_SELECT.format(columns=columns, member="m.member_id")),
            named(_LEDGER_SELECT.format(columns=columns, member="m.member_number")))


def ledger_read(columns: str, into: type[Extra]) -> LedgerRead[Extra]:
    """The ledger read with more select-list ``columns`` (``, expression as name`` each, using
    ``m.member_id`` and named parameters of their own), decoded into ``into``, whose fields are
    the columns' names. Constant SQL only."""
    if dataclasses.is_dataclass(into):
        names = tuple(f.name for f in dataclasses.fields(into))
    else:
        # ``into`` is a Struct here; mypy cannot narrow a TypeVar's type by is_dataclass.
        names = tuple(f.name for f in msgspec.structs.fields(into))  # type: ignore[arg-type]

    def decode(row: asyncpg.Record) -> Extra:
        return msgspec.convert({name: _plain(row[name]) for name in names}, into)

    return LedgerRead(*_statements(columns), decode=decode)


def _plain(value: Any) -> Any:
    # A composite column arrives as a Record; msgspec reads it as the tuple it is.
    return tuple(value) if isinstance(value, asyncpg.Record) else value


def _nothing(row: asyncpg.Record) -> None:
    return None


LEDGER: LedgerRead[None] = LedgerRead(*_statements(""), decode=_nothing)


async def read_ledger(
    conn: Connection, member: UUID | str, read: LedgerRead[Extra],
    values: Mapping[str, Any] | None = None, *, idempotency: Idempotency | None = None,
) -> tuple[MemberLedger, Extra]:
    """A member's ledger in one statement (balance, open lots, rules version, stored response)
    and what ``read`` reads beside it, given ``values`` for its parameters."""
    statement = read.by_id if isinstance(member, UUID) else read.by_number
    given = {"member": member, "principal_id": idempotency.principal_id if idempotency else None,
             "idempotency_key": idempotency.key if idempotency else None}
    row = await conn.fetchrow(statement.text, *statement.args({**(values or {}), **given}))
    if row is None:
        raise NotFound("no such member", field="member", code="member_not_found")
    stored = None
    if row["request_hash"] is not None:
        stored = StoredResponse(row["request_hash"], row["response_status"], row["response_body"])
    ledger = MemberLedger(**{name: row[name] for name in _LEDGER_COLUMNS},
                          lots=[Lot(*lot) for lot in row["lots"] or ()], stored=stored)
    return ledger, read.decode(row)


async def read_member_ledger_with(
    conn: Connection, member: UUID | str, read: LedgerRead[Extra],
    values: Mapping[str, Any] | None = None, *, idempotency: Idempotency | None = None,
) -> tuple[MemberLedger, Extra]:
    """The ledger of ``member`` (id or number) and what ``read`` reads beside it, following
    merges to the surviving member."""
    ledger, extra = await read_ledger(conn, member, read, values, idempotency=idempotency)
    for _ in range(MERGE_HOPS):
        if ledger.status != "merged" or ledger.merged_into is None:
            break
        ledger, extra = await read_ledger(conn, ledger.merged_into, read, values,
                                          idempotency=idempotency)
    if ledger.status in ("erased", "merged"):
        raise NotFound("no such member", field="member", code="member_not_found")
    return ledger, extra


async def read_member_ledger(
    conn: Connection, member: UUID | str, *, idempotency: Idempotency | None = None,
) -> MemberLedger:
    """The ledger of ``member`` (id or number), following merges to the surviving member."""
    ledger, _ = await read_member_ledger_with(conn, member, LEDGER, idempotency=idempotency)
    return ledger


def check_can_transact(ledger: MemberLedger) -> None:
    """A suspended member keeps their points but may neither earn nor spend them."""
    if ledger.status == "suspended":
        raise Conflict("this member is suspended and cannot earn or spend points",
                       field="member", code="member_suspended")


# -- applying a posting ----------------------------------------------------------------------

_POSTING_SQL = """
with idem as (
    {idempotency}
), gate as (
    select :key_principal_id::uuid is null or exists (select 1 from idem) as open
), bal as (
    update point_balances
       set version = version + 1,
           available = available + :available_change,
           pending = pending + :pending_change,
           lifetime_earned = lifetime_earned + :earned,
           lifetime_redeemed = lifetime_redeemed + :redeemed,
           lifetime_expired = lifetime_expired + :expired,
           purchase_count = purchase_count + :purchases,
           birthday_bonus_year = coalesce(:birthday_bonus_year, birthday_bonus_year),
           tier = coalesce(:new_tier, tier),
           tier_since = case when :new_tier is not null then :now else tier_since end,
           updated_at = :now
     where member_id = :member and version = :version and (select open from gate)
    returning version
), entries as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source, purchase_id,
                               return_id, action_id, staff_id, related_member_id, rule_version,
                               trace, created_at)
    select :member, e.*, :now
      from unnest(:entry_ids::uuid[], :entry_kinds::text[], :entry_amounts::int8[],
                  :entry_reasons::text[], :entry_sources::text[], :entry_purchase_ids::uuid[],
                  :entry_return_ids::uuid[], :entry_action_ids::uuid[],
                  :entry_staff_ids::uuid[], :entry_related_member_ids::uuid[],
                  :entry_rule_versions::int4[], :entry_traces::jsonb[]) as e
     where exists (select 1 from bal)
), new_lots as (
    insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at,
                            available_at, released_at, expires_at, origin_lot_id)
    select :member, l.lot_id, l.entry_id, l.points, l.points, l.earned_at, l.available_at,
           case when l.released then :now end, l.expires_at, l.origin_lot_id
      from unnest(:lot_ids::uuid[], :lot_entry_ids::uuid[], :lot_points::int8[],
                  :lot_earned_at::timestamptz[], :lot_available_at::timestamptz[],
                  :lot_released::bool[], :lot_expires_at::timestamptz[],
                  :lot_origin_lot_ids::uuid[])
           as l(lot_id, entry_id, points, earned_at, available_at, released, expires_at,
                origin_lot_id)
     where exists (select 1 from bal)
), changed_lots as (
    update point_lots p
       set remaining = p.remaining + c.delta,
           released_at = case when c.release then :now else p.released_at end
      from unnest(:changed_lot_ids::uuid[], :changed_deltas::int8[], :changed_releases::bool[])
           as c(lot_id, delta, release)
     where p.member_id = :member and p.lot_id = c.lot_id and exists (select 1 from bal)
), allocations as (
    insert into point_allocations (member_id, entry_id, lot_id, points)
    select :member, a.*
      from unnest(:drawn_entry_ids::uuid[], :drawn_lot_ids::uuid[], :drawn_points::int8[]) as a
     where exists (select 1 from bal)
){event}, outbox_events as (
    -- The posting's events, in the order of writing (the order a receiver gets them in).
    insert into outbox (type, occurred_at, api_version, member_id, data)
    select o.type, :now, :api_version, :member, o.data
      from (select e.n, e.type, e.data
              from unnest(:outbox_types::text[], :outbox_data::jsonb[]) with ordinality
                   as e(type, data, n){events}) o
     where exists (select 1 from bal)
     order by o.n
)
select (select open from gate) as keyed,
       (select version from bal) as version,
       case when (select open from gate) and not exists (select 1 from bal)
            then ledger_conflict('the balance changed since it was read') end as conflict,
       {check} as event_check
"""

_INSERT_KEY = """
    insert into idempotency_keys (principal_id, idempotency_key, request_hash, response_status,
                                  response_body, created_at)
    select :key_principal_id, :key, :key_request_hash, :response_status, :response_body, :now
     where :key_principal_id::uuid is not null
    on conflict do nothing
    returning 1"""

# Under the row lock the key was claimed first (see ``post``); here it gets its response.
_COMPLETE_KEY = """
    update idempotency_keys
       set request_hash = :key_request_hash, response_status = :response_status,
           response_body = :response_body
     where principal_id = :key_principal_id and idempotency_key = :key
    returning 1"""


@dataclass(frozen=True)
class PostingStatement:
    """The posting statement with one use case's event in it, numbered once: as the optimistic
    write runs it (recording the key) and as the locked retry does (completing the key it
    claimed first)."""

    optimistic: Statement
    locked: Statement


def posting_statement(event: str = "", *, check: str = "", events: str = "") -> PostingStatement:
    """The posting statement with an optional ``event``: more CTEs (``, name as (...)``) that
    write the business record in the same statement, gated on ``exists (select 1 from bal)``;
    and an optional ``check``, an expression over those CTEs evaluated last that may raise
    SQLSTATE LY410 (``coupon_refused``: a coupon taken in the meantime) to undo everything.

    The event may use the posting's ``:member`` and ``:now``; its other parameters are its own,
    named apart from the posting's. ``events``: more outbox events known only in the statement
    (``union all select n, type, data ...`` over the event's CTEs, ``n`` ordering them after
    the posting's own, which are numbered from 1), written with the posting's. Built once,
    from constant text only."""
    def build(idempotency: str) -> Statement:
        return named(_POSTING_SQL.format(idempotency=idempotency, event=event,
                                          check=check or "null", events=events))

    return PostingStatement(optimistic=build(_INSERT_KEY), locked=build(_COMPLETE_KEY))


# The posting with no business record of its own (adjustments' audit aside, merges).
POSTING = posting_statement()


@dataclass(frozen=True)
class Planned:
    """What building a posting gives ``post``: the posting, the business record written with
    it (``statement`` and the ``values`` of its event's parameters), and the response the
    caller will send (stored with the key for replays)."""

    posting: Posting | None
    status: int
    body: bytes
    statement: PostingStatement = POSTING
    values: Mapping[str, Any] = field(default_factory=dict)
    # The posting may be written in a group with other requests' (``post``'s ``group``).
    groupable: bool = False


@dataclass(frozen=True)
class Outcome:
    status: int
    body: bytes
    replayed: bool


class StaleLedger(Exception):
    """The member's ledger changed between the read and the write."""


class ClaimRefused(Exception):
    """An event's check failed at write time: something outside the member's ledger (a coupon,
    a template's budget) was taken since it was read. ``reason`` is the check's reason code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def posting_values(
    posting: Posting, idempotency: Idempotency | None, status: int, body: bytes,
) -> dict[str, Any]:
    """The values of the posting statement's own parameters."""
    p, key = posting, idempotency
    entries, lots, drawn = p.entries, p.new_lots, p.drawn
    events = p.events()
    changes: dict[UUID, list[Any]] = {}
    for d in drawn:
        changes.setdefault(d.lot_id, [0, False])[0] += d.points
    for lot_id in p.released:
        changes.setdefault(lot_id, [0, False])[1] = True
    if {lot.lot_id for lot in lots} & changes.keys():
        raise AssertionError("a posting may not draw on a lot it creates")
    return {
        "member": p.ledger.member_id, "now": p.now, "version": p.ledger.version,
        "available_change": p.available - p.ledger.available,
        "pending_change": p.pending - p.ledger.pending,
        "earned": p.earned, "redeemed": p.redeemed, "expired": p.expired,
        "purchases": p.purchases, "birthday_bonus_year": p.birthday_bonus_year,
        "new_tier": p.new_tier,
        "entry_ids": [e.entry_id for e in entries], "entry_kinds": [e.kind for e in entries],
        "entry_amounts": [e.amount for e in entries],
        "entry_reasons": [e.reason for e in entries],
        "entry_sources": [e.source for e in entries],
        "entry_purchase_ids": [e.links.purchase_id for e in entries],
        "entry_return_ids": [e.links.return_id for e in entries],
        "entry_action_ids": [e.links.action_id for e in entries],
        "entry_staff_ids": [e.links.staff_id for e in entries],
        "entry_related_member_ids": [e.links.related_member_id for e in entries],
        "entry_rule_versions": [e.rule_version for e in entries],
        "entry_traces": [e.trace for e in entries],
        "lot_ids": [lot.lot_id for lot in lots], "lot_entry_ids": [lot.entry_id for lot in lots],
        "lot_points": [lot.points for lot in lots],
        "lot_earned_at": [lot.earned_at for lot in lots],
        "lot_available_at": [lot.available_at for lot in lots],
        "lot_released": [lot.released for lot in lots],
        "lot_expires_at": [lot.expires_at for lot in lots],
        "lot_origin_lot_ids": [lot.origin_lot_id for lot in lots],
        "changed_lot_ids": list(changes), "changed_deltas": [c[0] for c in changes.values()],
        "changed_releases": [c[1] for c in changes.values()],
        "drawn_entry_ids": [d.entry_id for d in drawn], "drawn_lot_ids": [d.lot_id for d in drawn],
        "drawn_points": [d.points for d in drawn],
        "key_principal_id": key.principal_id if key else None, "key": key.key if key else None,
        "key_request_hash": key.request_hash if key else None,
        "response_status": status, "response_body": body,
        # The posting's events, written by the same statement: only if the posting is.
        "outbox_types": [type_ for type_, _ in events],
        "outbox_data": [data for _, data in events],
        "api_version": API_VERSION,
    }


async def apply_posting(
    conn: Connection, posting: Posting, *, idempotency: Idempotency | None = None,
    status: int = 0, body: bytes = b"", statement: PostingStatement = POSTING,
    values: Mapping[str, Any] | None = None, claimed: bool = False,
) -> bool:
    """Write ``posting`` if the ledger is still at the version it was read at. False when the
    idempotency key was already taken (nothing written); StaleLedger when the version moved
    (or the statement lost a deadlock, which undid it the same way); ClaimRefused when the
    event's check failed."""
    own = posting_values(posting, idempotency, status, body)
    event = values or {}
    if not own.keys().isdisjoint(event):
        raise AssertionError(f"an event may not set the posting's {own.keys() & event.keys()}")
    sql = statement.locked if claimed else statement.optimistic
    try:
        row = await conn.fetchrow(sql.text, *sql.args({**event, **own}))
    except asyncpg.PostgresError as exc:
        state = getattr(exc, "sqlstate", None)
        # A deadlock is possible only where an event locks shared rows (several coupon
        # templates in one purchase); the loser was undone whole and may simply go again.
        if state in ("LY409", "40P01"):
            raise StaleLedger from None
        if state == "LY410":
            raise ClaimRefused(str(getattr(exc, "message", "") or exc)) from None
        raise
    assert row is not None
    return bool(row["keyed"])


# -- exactly once ----------------------------------------------------------------------------

# A use case's read gives the ledger and what it read beside it; its build gets both.
Reader = Callable[[Connection], Awaitable[tuple[MemberLedger, Extra]]]
Builder = Callable[[MemberLedger, Extra], Awaitable[Planned]]


class Grouped(enum.Enum):
    """What became of a posting written in a group (docs/decisions/0022-group-commit.md)."""

    WRITTEN = "written"
    # The idempotency key was recorded by another request: its response is the answer.
    TAKEN = "taken"
    # The ledger moved since it was read: nothing was written; again under the row's lock.
    STALE = "stale"
    # The group could not decide this posting (the group failed as a whole): written alone.
    ALONE = "alone"


# Writes a groupable plan with other requests' in one statement: ``loyalty.points.groups``.
GroupWrite = Callable[[Connection, Planned, Idempotency], Awaitable[Grouped]]


async def post(
    conn: Connection, *, read: Reader[Extra], build: Builder[Extra],
    idempotency: Idempotency | None = None, group: GroupWrite | None = None,
) -> Outcome:
    """Read, build, write: optimistically in two statements, and if the ledger moved in
    between, again inside a transaction holding the member's balance row.

    ``conn`` must not be inside a transaction: the optimistic write is its own transaction.
    A request whose idempotency key is already recorded gets the recorded response back.
    With ``group``, a plan that says it is groupable is written by one statement with other
    requests' plans; whatever the group cannot decide goes on as if there were none.
    """
    ledger, extra = await read(conn)
    if idempotency is not None and ledger.stored is not None:
        return _replay(ledger.stored, idempotency)
    plan = await build(ledger, extra)
    if plan.posting is None:
        return Outcome(plan.status, plan.body, replayed=False)
    if group is not None and plan.groupable and idempotency is not None:
        match await group(conn, plan, idempotency):
            case Grouped.WRITTEN:
                count_entries([(e.kind, e.amount) for e in plan.posting.entries])
                return Outcome(plan.status, plan.body, replayed=False)
            case Grouped.TAKEN:
                return _replay(await stored_response(conn, idempotency), idempotency)
            case Grouped.STALE:
                return await _post_locked(conn, read=read, build=build,
                                          idempotency=idempotency, member_id=ledger.member_id)
            case Grouped.ALONE:
                # Written alone, below; if the group's statement did commit it (a connection
                # lost at the commit), the key is found taken and its answer replayed.
                pass
    try:
        fresh = await apply_posting(conn, plan.posting, idempotency=idempotency,
                                    status=plan.status, body=plan.body,
                                    statement=plan.statement, values=plan.values)
    except StaleLedger:
        return await _post_locked(conn, read=read, build=build, idempotency=idempotency,
                                  member_id=ledger.member_id)
    if fresh:
        count_entries([(e.kind, e.amount) for e in plan.posting.entries])
        return Outcome(plan.status, plan.body, replayed=False)
    assert idempotency is not None
    return _replay(await stored_response(conn, idempotency), idempotency)


async def _post_locked(
    conn: Connection, *, read: Reader[Extra], build: Builder[Extra],
    idempotency: Idempotency | None, member_id: UUID,
) -> Outcome:
    try:
        async with conn.transaction():
            if idempotency is not None:
                # Claim the key before the member's row, the order the optimistic write takes
                # them in, so the two paths cannot deadlock. Waits while another holds it.
                claimed = await conn.fetchval(
                    """
                    insert into idempotency_keys (principal_id, idempotency_key, request_hash,
                                                  response_status, response_body)
                    values ($1, $2, $3, 0, '') on conflict do nothing returning true
                    """,
                    idempotency.principal_id, idempotency.key, idempotency.request_hash,
                )
                if not claimed:
                    return _replay(await stored_response(conn, idempotency), idempotency)
            await conn.execute(
                "select 1 from point_balances where member_id = $1 for update", member_id)
            ledger, extra = await read(conn)
            plan = await build(ledger, extra)
            if plan.posting is None:
                raise _NothingToWrite(plan)
            try:
                await apply_posting(conn, plan.posting, idempotency=idempotency,
                                    status=plan.status, body=plan.body,
                                    statement=plan.statement, values=plan.values,
                                    claimed=True)
            except StaleLedger:
                # Under the row lock the version cannot move: this was a deadlock over rows an
                # event shares with other members' postings. Nothing was written; retry.
                raise ServiceUnavailable(
                    "the write met a concurrent one; retry the request") from None
        count_entries([(e.kind, e.amount) for e in plan.posting.entries])
        return Outcome(plan.status, plan.body, replayed=False)
    except _NothingToWrite as nothing:
        # Rolled back with the transaction, the key claim included: nothing happened.
        return Outcome(nothing.plan.status, nothing.plan.body, replayed=False)


class _NothingToWrite(Exception):
    def __init__(self, plan: Planned) -> None:
        self.plan = plan


async def stored_response(conn: Connection, idempotency: Idempotency) -> StoredResponse:
    row = await conn.fetchrow(
        """
        select request_hash, response_status, response_body from idempotency_keys
         where principal_id = $1 and idempotency_key = $2
        """,
        idempotency.principal_id, idempotency.key,
    )
    if row is None:
        raise AssertionError("idempotency key vanished")
    return StoredResponse(row["request_hash"], row["response_status"], row["response_body"])


def _replay(stored: StoredResponse, idempotency: Idempotency) -> Outcome:
    check_same_request(stored.request_hash, idempotency.request_hash)
    return Outcome(stored.status, stored.body, replayed=True)


async def recorded_outcome(conn: Connection, idempotency: Idempotency) -> Outcome | None:
    """The stored response for this key if there is one (for requests that can no longer be
    evaluated, such as one identifying the member by a card that has since expired)."""
    row = await conn.fetchrow(
        """
        select request_hash, response_status, response_body from idempotency_keys
         where principal_id = $1 and idempotency_key = $2 and response_status <> 0
        """,
        idempotency.principal_id, idempotency.key,
    )
    if row is None:
        return None
    return _replay(StoredResponse(row["request_hash"], row["response_status"],
                                  row["response_body"]), idempotency)
