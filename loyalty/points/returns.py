"""Returns at the till: earned points taken back and redeemed points given back in proportion
to what is returned, in one statement through the ledger's ``post``, exactly once per key
(docs/decisions/0007-lots-returns-and-expiry.md)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

import msgspec

from loyalty.access.principals import TerminalPrincipal
from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput, NotFound
from loyalty.core.idempotency import Idempotency
from loyalty.core.ids import uuid7
from loyalty.points.earning import allocate
from loyalty.points.ledger import (
    Outcome,
    Planned,
    ledger_read,
    post,
    posting_statement,
    read_member_ledger_with,
)
from loyalty.points.posting import Links, MemberLedger, Posting
from loyalty.promotions.coupon_redemption import REINSTATABLE, REINSTATE_COUPONS
from schemas.base import json_encoder
from schemas.outbox import CouponReinstatedData, PurchaseReturnedData
from schemas.points import (
    Balance,
    PurchaseLine,
    ReinstatedCoupon,
    ReturnRecorded,
    ReturnRequest,
)

_encode = json_encoder.encode


@dataclass(frozen=True)
class _Bought:
    """The parts of a purchase that never change after it is recorded."""

    member_id: UUID
    purchase_id: UUID
    store_id: UUID
    receipt_id: str
    total: int
    lines: list[PurchaseLine]
    points_earned: int
    points_redeemed: int
    earn_lot_id: UUID | None
    redeemed_from: list[tuple[UUID, int, dt.datetime | None]]


async def _find_purchase(conn: Connection, purchase_id: UUID, store_id: UUID) -> _Bought:
    row = await conn.fetchrow(
        """
        select p.member_id, p.purchase_id, p.store_id, p.receipt_id, p.total, p.lines,
               p.points_earned, p.points_redeemed,
               (select l.lot_id from point_entries e
                  join point_lots l on l.member_id = e.member_id and l.entry_id = e.entry_id
                 where e.member_id = p.member_id and e.purchase_id = p.purchase_id
                   and e.kind = 'earn' limit 1) as earn_lot_id,
               (select array_agg((a.lot_id, -a.points, l.expires_at)
                                 order by l.expires_at nulls last, l.earned_at, l.lot_id)
                  from point_entries e
                  join point_allocations a on a.member_id = e.member_id
                                          and a.entry_id = e.entry_id
                  join point_lots l on l.member_id = a.member_id and l.lot_id = a.lot_id
                 where e.member_id = p.member_id and e.purchase_id = p.purchase_id
                   and e.kind = 'redeem') as redeemed_from
          from purchases p
         where p.purchase_id = $1 and p.store_id = $2
        """,
        purchase_id, store_id,
    )
    if row is None:
        # Another store's purchase is not this terminal's to see, so it is not found either.
        raise NotFound("no such purchase at this store", field="purchase_id",
                       code="purchase_not_found")
    return _Bought(
        row["member_id"], row["purchase_id"], row["store_id"], row["receipt_id"], row["total"],
        msgspec.convert(row["lines"], list[PurchaseLine]), row["points_earned"],
        row["points_redeemed"], row["earn_lot_id"],
        [tuple(r) for r in row["redeemed_from"] or ()],
    )


async def purchase_by_receipt(conn: Connection, store_id: UUID, receipt_id: str) -> UUID:
    """The purchase recorded at this store under ``receipt_id``: how a till that recorded it
    offline, and never learnt its id, names it for a return."""
    found: UUID | None = await conn.fetchval(
        "select purchase_id from purchases where store_id = $1 and receipt_id = $2",
        store_id, receipt_id)
    if found is None:
        raise NotFound(f"no purchase with receipt {receipt_id} at this store: record the "
                       "purchase first (earlier in the batch), or name it by purchase_id",
                       field="receipt_id", code="purchase_not_found")
    return found


class ReturnedLine(msgspec.Struct, frozen=True):
    line: int
    quantity: int


class Reinstatable(msgspec.Struct, frozen=True):
    """A coupon redeemed on the purchase that a full return gives back."""

    redemption_id: UUID
    template_id: UUID
    code: str | None
    coupon_id: UUID | None


class ReturnRead(msgspec.Struct, frozen=True):
    """What a return reads of its purchase beside the ledger it changes, in one statement."""

    returned_amount: int
    reversed_so_far: int
    restored_so_far: int
    returned_lines: list[list[ReturnedLine]]
    # The purchase's earn lot and the lots a merge moved it into.
    earn_lots: list[UUID] | None
    reinstatable: list[Reinstatable]


# ``:purchase_member_id`` bought the purchase ``:purchase_id``; the ledger read may be of the
# member they were merged into since.
RETURN_READ = ledger_read(""",
       (select returned_amount from purchases
         where member_id = :purchase_member_id and purchase_id = :purchase_id)
           as returned_amount,
       (select coalesce(sum(points_reversed + points_shortfall), 0)::bigint
          from purchase_returns
         where member_id = :purchase_member_id and purchase_id = :purchase_id)
           as reversed_so_far,
       (select coalesce(sum(points_restored + points_not_restored), 0)::bigint
          from purchase_returns
         where member_id = :purchase_member_id and purchase_id = :purchase_id)
           as restored_so_far,
       (select coalesce(jsonb_agg(lines), '[]') from purchase_returns
         where member_id = :purchase_member_id and purchase_id = :purchase_id)
           as returned_lines,
       (select array_agg(lot_id) from point_lots
         where member_id = m.member_id
           and (lot_id = :earn_lot_id or origin_lot_id = :earn_lot_id)) as earn_lots,
       """ + REINSTATABLE.strip(), ReturnRead)  # noqa: S608 - constant text from coupon_redemption (REINSTATABLE)

# The events a return adds to its posting: the return row and the purchase's returned amount,
# then the coupons a full return gives back.
RETURN_EVENT = """
, returned as (
    insert into purchase_returns (member_id, return_id, purchase_id, terminal_id, amount, lines,
                                  points_reversed, points_restored, points_shortfall,
                                  points_not_restored, recorded_at)
    select :purchase_member_id, :return_id, :purchase_id, :terminal_id, :amount, :lines,
           :points_reversed, :points_restored, :points_shortfall, :points_not_restored, :now
     where exists (select 1 from bal)
), purchase as (
    update purchases set returned_amount = returned_amount + :amount
     where member_id = :purchase_member_id and purchase_id = :purchase_id
       and exists (select 1 from bal)
)"""

RETURN_POSTING = posting_statement(RETURN_EVENT + REINSTATE_COUPONS)


def _returned_quantities(bought: _Bought, returned: list[list[ReturnedLine]]) -> list[int]:
    quantities = [0] * len(bought.lines)
    for lines in returned:
        for line in lines:
            quantities[line.line] += line.quantity
    return quantities


def _amount_of_lines(bought: _Bought, request: ReturnRequest, already: list[int]) -> int:
    """The share of the total paid for the returned units, exact to the last unit: the
    amount for the first q units of a line is share × q // quantity, cumulatively."""
    shares = allocate(bought.total, [li.quantity * li.unit_price for li in bought.lines])
    wanted = [0] * len(bought.lines)
    for returned in request.lines or ():
        if returned.line >= len(bought.lines):
            raise InvalidInput(f"the purchase has no line {returned.line}", field="lines",
                               code="no_such_line")
        wanted[returned.line] += returned.quantity
    amount = 0
    for index, line in enumerate(bought.lines):
        if not wanted[index]:
            continue
        if already[index] + wanted[index] > line.quantity:
            raise InvalidInput(
                f"line {index} ({line.sku}): {line.quantity} bought, {already[index]} already "
                f"returned, {wanted[index]} more asked", field="lines",
                code="return_exceeds_purchase")
        before = shares[index] * already[index] // line.quantity
        after = shares[index] * (already[index] + wanted[index]) // line.quantity
        amount += after - before
    return amount


def _fill(amount: int, capacities: list[int]) -> list[int]:
    """``amount`` poured into ``capacities`` in order."""
    out = []
    for capacity in capacities:
        take = min(amount, capacity)
        out.append(take)
        amount -= take
    return out


async def record_return(
    conn: Connection, *, purchase_id: UUID, request: ReturnRequest, terminal: TerminalPrincipal,
    idempotency: Idempotency, now: dt.datetime,
) -> Outcome:
    """Reverse earned points and give back redeemed ones in proportion to what is returned.

    Earned points come back first from the purchase's own lot, then from the member's other
    spendable points; what is already spent beyond that is a shortfall, written off and
    reported. Redeemed points are given back with the expiry they had; points whose expiry
    has passed are not given back, and the response says so.
    """
    bought: _Bought | None = None

    async def read(conn: Connection) -> tuple[MemberLedger, ReturnRead]:
        nonlocal bought
        bought = await _find_purchase(conn, purchase_id, terminal.store_id)
        return await read_member_ledger_with(
            conn, bought.member_id, RETURN_READ,
            {"purchase_member_id": bought.member_id, "purchase_id": bought.purchase_id,
             "earn_lot_id": bought.earn_lot_id}, idempotency=idempotency)

    async def build(ledger: MemberLedger, extra: ReturnRead) -> Planned:
        assert bought is not None
        already = _returned_quantities(bought, extra.returned_lines)
        if request.lines is not None:
            amount = _amount_of_lines(bought, request, already)
        else:
            amount = request.amount or 0
        returned_before = extra.returned_amount
        if amount <= 0 or returned_before + amount > bought.total:
            raise InvalidInput(
                f"{bought.total} was paid and {returned_before} already returned: "
                f"{amount} more is more than was bought", field="amount",
                code="return_exceeds_purchase")
        cumulative = returned_before + amount
        reverse = bought.points_earned * cumulative // bought.total - extra.reversed_so_far \
            if bought.total else 0
        restore_target = bought.points_redeemed * cumulative // bought.total if bought.total \
            else 0
        restore = restore_target - extra.restored_so_far

        return_id = uuid7()
        links = Links(purchase_id=bought.purchase_id, return_id=return_id)
        posting = Posting(ledger, now)
        what = f"Return at {terminal.store_code}, receipt {bought.receipt_id}"
        reversed_points, shortfall = posting.take_back(
            points=reverse, first_from=extra.earn_lots or [], reason=what,
            source="return", links=links)
        restored = not_restored = 0
        previous = _fill(extra.restored_so_far, [p for _, p, _ in bought.redeemed_from])
        now_filled = _fill(restore_target, [p for _, p, _ in bought.redeemed_from])
        restore_entry = uuid7()
        for (_, _, lot_expiry), before, after in zip(
                bought.redeemed_from, previous, now_filled, strict=True):
            points = after - before
            if points <= 0:
                continue
            if lot_expiry is not None and lot_expiry <= now:
                not_restored += points
                continue
            posting.earn(kind="reverse", points=points, reason=f"Points given back: {what}",
                         source="return", links=links, earned_at=now, available_at=now,
                         expires_at=lot_expiry, entry_id=restore_entry)
            restored += points
        posting.redeemed -= restored
        assert restored + not_restored == restore
        notes = []
        if shortfall:
            notes.append(f"{shortfall} of the points to reverse were already spent: written off")
        if not_restored:
            notes.append(f"{not_restored} points used on this purchase had expired and were "
                         "not given back")
        # A purchase returned in full gives back the coupons used on it, where their
        # templates say so (a coupon past its validity comes back expired, and stays so).
        reinstated = extra.reinstatable if cumulative == bought.total else []
        body = ReturnRecorded(
            return_id=return_id, purchase_id=bought.purchase_id, member_id=ledger.member_id,
            amount=amount, points_reversed=reversed_points, points_restored=restored,
            points_shortfall=shortfall, points_not_restored=not_restored,
            balance=Balance(available=posting.available, pending=posting.pending), notes=notes,
            coupons_reinstated=[ReinstatedCoupon(template_id=c.template_id, code=c.code,
                                                 coupon_id=c.coupon_id) for c in reinstated],
        )
        posting.emit("purchase.returned", PurchaseReturnedData(
            member_id=ledger.member_id, member_number=ledger.member_number,
            purchase_id=bought.purchase_id, return_id=return_id, amount=amount,
            points_reversed=reversed_points, points_restored=restored,
            coupons_reinstated=len(reinstated)))
        for coupon in reinstated:
            posting.emit("coupon.reinstated", CouponReinstatedData(
                member_id=ledger.member_id, member_number=ledger.member_number,
                redemption_id=coupon.redemption_id, template_id=coupon.template_id,
                coupon_id=coupon.coupon_id, code=coupon.code, purchase_id=bought.purchase_id,
                return_id=return_id))
        returned = [{"line": li.line, "quantity": li.quantity} for li in request.lines or ()]
        return Planned(posting, 201, _encode(body), RETURN_POSTING, {
            "purchase_member_id": bought.member_id, "return_id": return_id,
            "purchase_id": bought.purchase_id, "terminal_id": terminal.terminal_id,
            "amount": amount, "lines": returned, "points_reversed": reversed_points,
            "points_restored": restored, "points_shortfall": shortfall,
            "points_not_restored": not_restored,
            "reinstated_ids": [c.redemption_id for c in reinstated]})

    return await post(conn, read=read, build=build, idempotency=idempotency)
