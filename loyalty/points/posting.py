"""A member's ledger as read, and the posting built against it in memory: pure code, no I/O.

``loyalty.points.ledger`` reads a ``MemberLedger`` and writes a ``Posting`` in one statement;
what the posting does to the member's lots (settle, earn, draw first-to-expire-first, take back,
drain) is decided here, where it can be tested without a database
(docs/decisions/0005-ledger-concurrency.md, docs/decisions/0007-lots-returns-and-expiry.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import msgspec

from loyalty.core.errors import InsufficientPoints
from loyalty.core.idempotency import StoredResponse
from loyalty.core.ids import uuid7
from schemas.outbox import (
    EventBalance,
    PointsAdjustedData,
    PointsEarnedData,
    PointsExpiredData,
    PointsRedeemedData,
    PointsReversedData,
)
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
    """A member's balance row and open lots as one statement read them, with the stored
    response for the request's idempotency key if there is one."""

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
    tier: str | None = None
    tier_since: dt.datetime | None = None


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
        # The events of the use case (purchase.recorded, tier.changed, ...), written with the
        # posting in its statement; the points.* events follow from the entries (see
        # ``events``).
        self.business_events: list[tuple[str, msgspec.Struct]] = []
        self._settle()

    def emit(self, type_: str, data: msgspec.Struct) -> None:
        """An event written into the outbox by the posting's statement, so only if it
        commits."""
        self.business_events.append((type_, data))

    def events(self) -> list[tuple[str, msgspec.Struct]]:
        """Every event the posting writes: the use case's, then one points.* event per entry
        (transfers excepted: a merge says member.merged), each with the balance after the
        whole posting."""
        return self.business_events + [event for entry in self.entries
                                       if (event := self._entry_event(entry)) is not None]

    def _entry_event(self, entry: NewEntry) -> tuple[str, msgspec.Struct] | None:
        member = self.ledger.member_id, self.ledger.member_number
        balance = EventBalance(available=self.available, pending=self.pending)
        links = entry.links
        lot = next((lot for lot in self.new_lots if lot.entry_id == entry.entry_id), None)
        match entry.kind:
            case "earn":
                assert lot is not None
                return "points.earned", PointsEarnedData(
                    member_id=member[0], member_number=member[1], entry_id=entry.entry_id,
                    points=entry.amount, source=entry.source, reason=entry.reason,
                    purchase_id=links.purchase_id, action_id=links.action_id,
                    available_at=lot.available_at, expires_at=lot.expires_at, balance=balance)
            case "redeem":
                return "points.redeemed", PointsRedeemedData(
                    member_id=member[0], member_number=member[1], entry_id=entry.entry_id,
                    points=-entry.amount, reason=entry.reason, purchase_id=links.purchase_id,
                    balance=balance)
            case "reverse":
                return "points.reversed", PointsReversedData(
                    member_id=member[0], member_number=member[1], entry_id=entry.entry_id,
                    points=entry.amount, reason=entry.reason, purchase_id=links.purchase_id,
                    return_id=links.return_id, balance=balance)
            case "adjust":
                return "points.adjusted", PointsAdjustedData(
                    member_id=member[0], member_number=member[1], entry_id=entry.entry_id,
                    points=entry.amount, reason=entry.reason, staff_id=links.staff_id,
                    expires_at=lot.expires_at if lot is not None else None, balance=balance)
            case "expire":
                return "points.expired", PointsExpiredData(
                    member_id=member[0], member_number=member[1], entry_id=entry.entry_id,
                    points=-entry.amount, balance=balance)
            case _:
                return None

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
