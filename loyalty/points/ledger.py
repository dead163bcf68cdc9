"""The points ledger: a member's ledger read in one statement, a posting built by pure code, and
the posting applied exactly once in one more statement.

Every write to a member's points goes through ``post``. It reads the ledger (balance, open lots,
the version of the balance row, and any stored response for the idempotency key), lets the
caller build a ``Posting`` from it, and applies the posting in a single statement that checks
the version it read: if anything changed the member's ledger in between, the statement undoes
itself and ``post`` does it again under the balance row's lock, where nothing can change
(docs/decisions/0005-ledger-concurrency.md). One statement is one transaction, so a posting and
its idempotency record commit together or not at all, however the connection dies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import asyncpg

from loyalty.core.db import Connection
from loyalty.core.errors import InsufficientPoints, NotFound, ServiceUnavailable
from loyalty.core.idempotency import Idempotency, StoredResponse, check_same_request
from loyalty.core.ids import uuid7
from loyalty.core.metrics import count_entries
from schemas.rules import Trace

EntryKind = Literal["earn", "redeem", "expire", "adjust", "reverse", "transfer"]
Source = Literal["purchase", "return", "action", "staff", "system", "merge", "campaign"]


# -- what is read ----------------------------------------------------------------------------


@dataclass
class Lot:
    lot_id: UUID
    points: int
    remaining: int
    earned_at: dt.datetime
    available_at: dt.datetime
    released: bool
    expires_at: dt.datetime | None
    origin_lot_id: UUID | None = None

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass
class MemberLedger:
    member_id: UUID
    member_number: str
    name: str
    status: str
    birth_date: dt.date | None
    merged_into: UUID | None
    version: int
    available: int
    pending: int
    lifetime_earned: int
    lifetime_redeemed: int
    lifetime_expired: int
    purchase_count: int
    birthday_bonus_year: int | None
    rules_version: int
    lots: list[Lot]
    stored: StoredResponse | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tier: str | None = None
    tier_since: dt.datetime | None = None


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
       k.request_hash, k.response_status, k.response_body{extra}
  from members m
  join point_balances b on b.member_id = m.member_id
  left join idempotency_keys k on k.principal_id = $2 and k.idempotency_key = $3
"""


def ledger_query(by: Literal["id", "number"], extra: str = "") -> str:
    """The ledger read, by member id or member number; ``extra`` adds select-list columns that
    may use parameters from ``$4`` on."""
    column = "m.member_id = $1" if by == "id" else "m.member_number = $1"
    return _LEDGER_SELECT.format(extra=extra) + f" where {column}"


LEDGER_BY_ID = ledger_query("id")
LEDGER_BY_NUMBER = ledger_query("number")


async def read_ledger(
    conn: Connection, member: UUID | str, *, principal_id: UUID | None = None,
    idempotency_key: str | None = None, query: str | None = None, extra_args: tuple[Any, ...] = (),
) -> MemberLedger:
    """A member's ledger in one statement: balance, open lots, rules version, stored response."""
    sql = query or (LEDGER_BY_ID if isinstance(member, UUID) else LEDGER_BY_NUMBER)
    row = await conn.fetchrow(sql, member, principal_id, idempotency_key, *extra_args)
    if row is None:
        raise NotFound("no such member", field="member", code="member_not_found")
    return _ledger(row)


def _ledger(row: asyncpg.Record) -> MemberLedger:
    stored = None
    if row["request_hash"] is not None:
        stored = StoredResponse(row["request_hash"], row["response_status"], row["response_body"])
    known = set(_LEDGER_COLUMNS)
    return MemberLedger(
        **{name: row[name] for name in _LEDGER_COLUMNS},
        lots=[Lot(*lot) for lot in row["lots"] or ()],
        stored=stored,
        extra={k: v for k, v in row.items() if k not in known and k not in _OTHER_COLUMNS},
    )


_LEDGER_COLUMNS = (
    "member_id", "member_number", "name", "status", "birth_date", "merged_into", "version",
    "available", "pending", "lifetime_earned", "lifetime_redeemed", "lifetime_expired",
    "purchase_count", "birthday_bonus_year", "tier", "tier_since", "rules_version",
)
_OTHER_COLUMNS = {"lots", "request_hash", "response_status", "response_body"}


# -- what is written -------------------------------------------------------------------------


@dataclass(frozen=True)
class Links:
    """What an entry points to, besides its member."""

    purchase_id: UUID | None = None
    return_id: UUID | None = None
    action_id: UUID | None = None
    staff_id: UUID | None = None
    related_member_id: UUID | None = None


@dataclass(frozen=True)
class NewEntry:
    entry_id: UUID
    kind: EntryKind
    amount: int
    reason: str
    source: Source
    links: Links
    rule_version: int | None
    trace: Trace | None


@dataclass(frozen=True)
class NewLot:
    lot_id: UUID
    entry_id: UUID
    points: int
    earned_at: dt.datetime
    available_at: dt.datetime
    released: bool
    expires_at: dt.datetime | None
    origin_lot_id: UUID | None


@dataclass(frozen=True)
class Drawn:
    """Points an entry took from (negative) or gave back to (positive) an existing lot."""

    entry_id: UUID
    lot_id: UUID
    points: int


class Posting:
    """The changes to one member's ledger, built in memory against the ledger as read.

    It starts by settling the ledger as of ``now``: lots whose return window has passed are
    released, lots past their expiry are expired (with an entry), so a member never spends or
    sees points that are no longer theirs, whether or not the nightly jobs have run.
    """

    def __init__(self, ledger: MemberLedger, now: dt.datetime) -> None:
        self.ledger = ledger
        self.now = now
        self.lots = {lot.lot_id: Lot(**vars(lot)) for lot in ledger.lots}
        self.available = ledger.available
        self.pending = ledger.pending
        self.earned = 0
        self.redeemed = 0
        self.expired = 0
        self.purchases = 0
        self.birthday_bonus_year: int | None = None
        # Set when this posting moves the member up a tier (downgrades are batch work).
        self.new_tier: str | None = None
        self.entries: list[NewEntry] = []
        self.new_lots: list[NewLot] = []
        self.drawn: list[Drawn] = []
        self.released: set[UUID] = set()
        self._settle()

    def _settle(self) -> None:
        due = [lot for lot in self.lots.values() if lot.remaining > 0 and lot.expired(self.now)]
        if due:
            entry_id = uuid7()
            total = 0
            for lot in due:
                total += lot.remaining
                self._take(entry_id, lot, lot.remaining)
            self.expired += total
            self.entries.append(NewEntry(entry_id, "expire", -total, "points expired", "system",
                                         Links(), None, None))
        for lot in self.lots.values():
            if not lot.released and lot.available_at <= self.now and lot.remaining > 0:
                lot.released = True
                self.released.add(lot.lot_id)
                self.pending -= lot.remaining
                self.available += lot.remaining

    def _take(self, entry_id: UUID, lot: Lot, points: int) -> None:
        lot.remaining -= points
        if lot.released:
            self.available -= points
        else:
            self.pending -= points
        self.drawn.append(Drawn(entry_id, lot.lot_id, -points))

    def spendable(self) -> list[Lot]:
        """Released, unexpired lots with points left, earliest expiry first."""
        lots = [lot for lot in self.lots.values()
                if lot.remaining > 0 and lot.released and not lot.expired(self.now)]
        return sorted(lots, key=_expiry_order)

    def earn(
        self, *, kind: EntryKind, points: int, reason: str, source: Source, links: Links,
        earned_at: dt.datetime, available_at: dt.datetime, expires_at: dt.datetime | None,
        rule_version: int | None = None, trace: Trace | None = None,
        origin_lot_id: UUID | None = None, entry_id: UUID | None = None,
    ) -> UUID:
        """A positive entry and the lot that holds its points; returns the entry id."""
        if points <= 0:
            raise ValueError("earn needs a positive amount")
        entry_id = entry_id or uuid7()
        if not any(e.entry_id == entry_id for e in self.entries):
            self.entries.append(NewEntry(entry_id, kind, points, reason, source, links,
                                         rule_version, trace))
        else:
            self._grow_entry(entry_id, points)
        released = available_at <= self.now
        lot = Lot(uuid7(), points, points, earned_at, available_at, released, expires_at,
                  origin_lot_id)
        self.lots[lot.lot_id] = lot
        self.new_lots.append(NewLot(lot.lot_id, entry_id, points, earned_at, available_at,
                                    released, expires_at, origin_lot_id))
        if released:
            self.available += points
        else:
            self.pending += points
        if kind in ("earn", "adjust"):
            self.earned += points
        return entry_id

    def draw(
        self, *, kind: EntryKind, points: int, reason: str, source: Source, links: Links,
        rule_version: int | None = None, trace: Trace | None = None,
    ) -> UUID:
        """A negative entry taking ``points`` from spendable lots, earliest expiry first."""
        if points <= 0:
            raise ValueError("draw needs a positive amount")
        if points > self.available:
            raise InsufficientPoints(
                f"{points} points asked for, {self.available} available", field="points")
        entry_id = uuid7()
        left = points
        for lot in self.spendable():
            take = min(left, lot.remaining)
            self._take(entry_id, lot, take)
            left -= take
            if left == 0:
                break
        assert left == 0, "available balance and spendable lots disagree"
        self.entries.append(NewEntry(entry_id, kind, -points, reason, source, links,
                                     rule_version, trace))
        if kind == "redeem":
            self.redeemed += points
        return entry_id

    def take_back(
        self, *, points: int, first_from: list[UUID], reason: str, source: Source, links: Links,
    ) -> tuple[int, int]:
        """Reverse up to ``points`` earned points: from the lots in ``first_from`` (pending or
        not), then from spendable lots; what cannot be covered without going below zero is the
        shortfall. Returns (reversed, shortfall)."""
        if points <= 0:
            return 0, 0
        entry_id = uuid7()
        left = points
        preferred = [self.lots[i] for i in first_from if i in self.lots]
        others = [lot for lot in self.spendable() if lot.lot_id not in set(first_from)]
        for lot in preferred + others:
            if left == 0:
                break
            if lot.remaining <= 0 or lot.expired(self.now):
                continue
            take = min(left, lot.remaining)
            self._take(entry_id, lot, take)
            left -= take
        taken = points - left
        if taken:
            self.entries.append(NewEntry(entry_id, "reverse", -taken, reason, source, links,
                                         None, None))
            self.earned -= taken
        return taken, left

    def drain(self, *, kind: EntryKind, reason: str, source: Source,
              links: Links) -> list[Lot]:
        """Take every point left, pending or not, in one entry; returns the lots as they were
        (for a transfer to re-create them elsewhere)."""
        open_lots = [Lot(**vars(lot)) for lot in self.lots.values() if lot.remaining > 0]
        total = sum(lot.remaining for lot in open_lots)
        if total:
            entry_id = uuid7()
            for lot in open_lots:
                self._take(entry_id, self.lots[lot.lot_id], lot.remaining)
            self.entries.append(NewEntry(entry_id, kind, -total, reason, source, links,
                                         None, None))
        return open_lots

    def _grow_entry(self, entry_id: UUID, points: int) -> None:
        for index, entry in enumerate(self.entries):
            if entry.entry_id == entry_id:
                self.entries[index] = NewEntry(
                    entry.entry_id, entry.kind, entry.amount + points, entry.reason,
                    entry.source, entry.links, entry.rule_version, entry.trace)
                return

    def balance(self) -> tuple[int, int]:
        return self.available, self.pending


def _expiry_order(lot: Lot) -> tuple[bool, dt.datetime, dt.datetime, UUID]:
    never = lot.expires_at is None
    return (never, lot.expires_at or lot.earned_at, lot.earned_at, lot.lot_id)


def settled_balance(ledger: MemberLedger, now: dt.datetime) -> tuple[int, int]:
    """(available, pending) as of ``now``, counting releases and expiries not yet written."""
    return Posting(ledger, now).balance()


# -- applying a posting ----------------------------------------------------------------------

# Parameters $1..$42 are the posting's; an event's own parameters follow from $43.
EVENT_PARAMETERS_START = 43


def event_statement(text: str, parameters: int) -> str:
    """An event's CTEs with its ``{0}``, ``{1}``... placeholders numbered after the posting's.
    ``$1`` (the member) and ``$2`` (now) may be used as they are."""
    return text.format(*(f"${EVENT_PARAMETERS_START + i}" for i in range(parameters)))

_POSTING_SQL = """
with idem as (
    {idempotency}
), gate as (
    select $37::uuid is null or exists (select 1 from idem) as open
), bal as (
    update point_balances
       set version = version + 1,
           available = available + $4,
           pending = pending + $5,
           lifetime_earned = lifetime_earned + $6,
           lifetime_redeemed = lifetime_redeemed + $7,
           lifetime_expired = lifetime_expired + $8,
           purchase_count = purchase_count + $9,
           birthday_bonus_year = coalesce($10, birthday_bonus_year),
           tier = coalesce($42, tier),
           tier_since = case when $42 is not null then $2 else tier_since end,
           updated_at = $2
     where member_id = $1 and version = $3 and (select open from gate)
    returning version
), entries as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source, purchase_id,
                               return_id, action_id, staff_id, related_member_id, rule_version,
                               trace, created_at)
    select $1, e.*, $2
      from unnest($11::uuid[], $12::text[], $13::int8[], $14::text[], $15::text[],
                  $16::uuid[], $17::uuid[], $18::uuid[], $19::uuid[], $20::uuid[],
                  $21::int4[], $22::jsonb[]) as e
     where exists (select 1 from bal)
), new_lots as (
    insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at,
                            available_at, released_at, expires_at, origin_lot_id)
    select $1, l.lot_id, l.entry_id, l.points, l.points, l.earned_at, l.available_at,
           case when l.released then $2 end, l.expires_at, l.origin_lot_id
      from unnest($23::uuid[], $24::uuid[], $25::int8[], $26::timestamptz[],
                  $27::timestamptz[], $28::bool[], $29::timestamptz[], $30::uuid[])
           as l(lot_id, entry_id, points, earned_at, available_at, released, expires_at,
                origin_lot_id)
     where exists (select 1 from bal)
), changed_lots as (
    update point_lots p
       set remaining = p.remaining + c.delta,
           released_at = case when c.release then $2 else p.released_at end
      from unnest($31::uuid[], $32::int8[], $33::bool[]) as c(lot_id, delta, release)
     where p.member_id = $1 and p.lot_id = c.lot_id and exists (select 1 from bal)
), allocations as (
    insert into point_allocations (member_id, entry_id, lot_id, points)
    select $1, a.* from unnest($34::uuid[], $35::uuid[], $36::int8[]) as a
     where exists (select 1 from bal)
){event}
select (select open from gate) as keyed,
       (select version from bal) as version,
       case when (select open from gate) and not exists (select 1 from bal)
            then ledger_conflict('the balance changed since it was read') end as conflict,
       {check} as event_check
"""

_INSERT_KEY = """
    insert into idempotency_keys (principal_id, idempotency_key, request_hash, response_status,
                                  response_body, created_at)
    select $37, $38, $39, $40, $41, $2 where $37::uuid is not null
    on conflict do nothing
    returning 1"""

# Under the row lock the key was claimed first (see ``post``); here it gets its response.
_COMPLETE_KEY = """
    update idempotency_keys
       set request_hash = $39, response_status = $40, response_body = $41
     where principal_id = $37 and idempotency_key = $38
    returning 1"""


def posting_statement(event: str = "", *, claimed: bool = False, check: str = "") -> str:
    """The posting statement with an optional ``event``: more CTEs (``, name as (...)``) that
    write the business record in the same statement, gated on ``exists (select 1 from bal)``;
    and an optional ``check``, an expression over those CTEs evaluated last that may raise
    ``claim_refused`` (a coupon taken by someone else in the meantime) to undo everything.
    Built from constant text only."""
    return _POSTING_SQL.format(idempotency=_COMPLETE_KEY if claimed else _INSERT_KEY,
                               event=event, check=check or "null")


@dataclass(frozen=True)
class Planned:
    """What building a posting gives ``post``: the posting, the business record written with
    it, and the response the caller will send (stored with the key for replays)."""

    posting: Posting | None
    status: int
    body: bytes
    event_sql: str = ""
    event_args: tuple[Any, ...] = ()
    event_check: str = ""


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


async def apply_posting(
    conn: Connection, posting: Posting, *, idempotency: Idempotency | None = None,
    status: int = 0, body: bytes = b"", event_sql: str = "", event_args: tuple[Any, ...] = (),
    event_check: str = "", claimed: bool = False,
) -> bool:
    """Write ``posting`` if the ledger is still at the version it was read at. False when the
    idempotency key was already taken (nothing written); StaleLedger when the version moved
    (or the statement lost a deadlock, which undid it the same way); ClaimRefused when the
    event's check failed."""
    p = posting
    entries, lots, drawn = p.entries, p.new_lots, p.drawn
    changes: dict[UUID, list[Any]] = {}
    for d in drawn:
        changes.setdefault(d.lot_id, [0, False])[0] += d.points
    for lot_id in p.released:
        changes.setdefault(lot_id, [0, False])[1] = True
    new_lot_ids = {lot.lot_id for lot in lots}
    if new_lot_ids & changes.keys():
        raise AssertionError("a posting may not draw on a lot it creates")
    key = idempotency
    args: tuple[Any, ...] = (
        p.ledger.member_id, p.now, p.ledger.version,
        p.available - p.ledger.available, p.pending - p.ledger.pending,
        p.earned, p.redeemed, p.expired, p.purchases, p.birthday_bonus_year,
        [e.entry_id for e in entries], [e.kind for e in entries], [e.amount for e in entries],
        [e.reason for e in entries], [e.source for e in entries],
        [e.links.purchase_id for e in entries], [e.links.return_id for e in entries],
        [e.links.action_id for e in entries], [e.links.staff_id for e in entries],
        [e.links.related_member_id for e in entries], [e.rule_version for e in entries],
        [e.trace for e in entries],
        [lot.lot_id for lot in lots], [lot.entry_id for lot in lots],
        [lot.points for lot in lots], [lot.earned_at for lot in lots],
        [lot.available_at for lot in lots], [lot.released for lot in lots],
        [lot.expires_at for lot in lots], [lot.origin_lot_id for lot in lots],
        list(changes), [c[0] for c in changes.values()], [c[1] for c in changes.values()],
        [d.entry_id for d in drawn], [d.lot_id for d in drawn], [d.points for d in drawn],
        key.principal_id if key else None, key.key if key else None,
        key.request_hash if key else None, status, body, p.new_tier,
    )
    sql = posting_statement(event_sql, claimed=claimed, check=event_check)
    try:
        row = await conn.fetchrow(sql, *args, *event_args)
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

Reader = Callable[[Connection], Awaitable[MemberLedger]]
Builder = Callable[[MemberLedger], Awaitable[Planned]]


async def post(
    conn: Connection, *, read: Reader, build: Builder, idempotency: Idempotency | None = None,
) -> Outcome:
    """Read, build, write: optimistically in two statements, and if the ledger moved in
    between, again inside a transaction holding the member's balance row.

    ``conn`` must not be inside a transaction: the optimistic write is its own transaction.
    A request whose idempotency key is already recorded gets the recorded response back.
    """
    ledger = await read(conn)
    if idempotency is not None and ledger.stored is not None:
        return _replay(ledger.stored, idempotency)
    plan = await build(ledger)
    if plan.posting is None:
        return Outcome(plan.status, plan.body, replayed=False)
    try:
        fresh = await apply_posting(conn, plan.posting, idempotency=idempotency,
                                    status=plan.status, body=plan.body,
                                    event_sql=plan.event_sql, event_args=plan.event_args,
                                    event_check=plan.event_check)
    except StaleLedger:
        return await _post_locked(conn, read=read, build=build, idempotency=idempotency,
                                  member_id=ledger.member_id)
    if fresh:
        count_entries([(e.kind, e.amount) for e in plan.posting.entries])
        return Outcome(plan.status, plan.body, replayed=False)
    assert idempotency is not None
    return _replay(await stored_response(conn, idempotency), idempotency)


async def _post_locked(
    conn: Connection, *, read: Reader, build: Builder, idempotency: Idempotency | None,
    member_id: UUID,
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
            ledger = await read(conn)
            plan = await build(ledger)
            if plan.posting is None:
                raise _NothingToWrite(plan)
            try:
                await apply_posting(conn, plan.posting, idempotency=idempotency,
                                    status=plan.status, body=plan.body,
                                    event_sql=plan.event_sql, event_args=plan.event_args,
                                    event_check=plan.event_check, claimed=True)
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


# -- batch writers ----------------------------------------------------------------------------

_LOCK_BALANCES = """
select member_id from point_balances where member_id = any($1::uuid[])
 order by member_id for update
"""


async def lock_balances(conn: Connection, members: list[UUID]) -> list[UUID]:
    """Within the caller's transaction: lock these members' balances in member order (the
    order every batch writer takes them in, so two never deadlock, and racing purchases wait
    and then re-read); the members whose balance exists."""
    return [row["member_id"] for row in await conn.fetch(_LOCK_BALANCES, members)]


def credit_lots_and_balances(*, due: str, members: str, points: str, now: str,
                             expires: str) -> str:
    """The CTEs ``lots`` and ``balances`` of a batch credit: ``points`` for every row of the
    CTE ``due`` (member_id, entry_id, lot_id), a lot available at once and the balance moved
    (version + 1). ``members`` is the batch's locked ids. The caller writes the entries. The
    arguments are SQL (parameter placeholders and CTE names), never values."""
    return f"""
, lots as (
    insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at,
                            available_at, released_at, expires_at)
    select member_id, lot_id, entry_id, {points}, {points}, {now}, {now}, {now}, {expires}
      from {due}
), balances as (
    update point_balances b
       set available = b.available + {points}, lifetime_earned = b.lifetime_earned + {points},
           version = b.version + 1, updated_at = {now}
      from {due} d where b.member_id = d.member_id and b.member_id = any({members})
)"""
