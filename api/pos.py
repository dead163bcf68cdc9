"""The checkout terminal's API (terminal API key): who is paying, what a purchase earns,
recording purchases and returns. Every write takes an ``Idempotency-Key``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.params import FromPath, JSONBody

from api.auth import terminals_only
from api.deps import TERMINAL_DEPENDENCIES, Db, Ledger, Svc, Till, utc_now
from api.idempotency import idempotent, respond, stored_as
from api.params import CardParam, NumberParam, PhoneParam
from loyalty.access.audit import record_audit, record_till_lookup
from loyalty.access.stores import get_terminal
from loyalty.core.errors import InvalidInput, NotFound, RateLimited
from loyalty.core.idempotency import Idempotency
from loyalty.core.normalize import normalize_phone
from loyalty.members.cards import CardExpired, member_from_card
from loyalty.members.profiles import find_member_at_till
from loyalty.points.history import till_member
from loyalty.points.ledger import Outcome, recorded_outcome
from loyalty.points.purchases import quote_purchase, record_purchase, validate_coupons
from loyalty.points.returns import record_return
from schemas.admin import WhoAmI
from schemas.coupons import CouponValidation, CouponValidationResult
from schemas.points import (
    MemberRef,
    Purchase,
    PurchaseRecorded,
    Quote,
    ReturnRecorded,
    ReturnRequest,
    TillMember,
)


async def written_once(
    ref: MemberRef, services: Svc, ledger: Ledger, idempotency: Idempotency,
    write: Callable[[UUID | str], Awaitable[Outcome]],
) -> Response[bytes]:
    """A terminal's write for the member ``ref`` names, exactly once per key. A retry naming
    the member by a card that has expired since the first attempt still gets that first
    response back."""
    try:
        member = _member(ref, services)
    except CardExpired:
        replay = await recorded_outcome(ledger, idempotency)
        if replay is None:
            raise
        return respond(replay)
    return respond(await write(member))


def _member(ref: MemberRef, services: Svc) -> UUID | str:
    """The member id, or the number to look up; ``MemberRef`` holds exactly one of the three."""
    if ref.card is not None:
        return member_from_card(services.signer, ref.card)
    return ref.id if ref.id is not None else str(ref.number)


async def _limit_lookups(terminal: Till, services: Svc) -> None:
    """A till may name members by number or phone only so fast: more is reading the member
    directory, not serving customers."""
    wait = await services.limiter.hit(
        f"till-lookup:{terminal.terminal_id}",
        limit=services.settings.terminal_lookups_per_minute, period_seconds=60)
    if wait:
        raise RateLimited("this till has looked up too many members by number or phone in the"
                          " last minute; scan the member's card, or try again after the time in"
                          " Retry-After", retry_after=wait)


class PosController(Controller):
    path = "/v1/pos"
    tags = ["point of sale"]
    guards = [terminals_only]
    dependencies = TERMINAL_DEPENDENCIES

    @get("/whoami", operation_id="posWhoAmI")
    async def whoami(self, terminal: Till, conn: Db) -> WhoAmI:
        """The terminal this key belongs to, and its store."""
        found = await get_terminal(conn, terminal.terminal_id)
        return WhoAmI(terminal_id=found.terminal_id, name=found.name, store=found.store)

    @get("/members/lookup", operation_id="posLookupMember")
    async def lookup(
        self, terminal: Till, ledger: Ledger, services: Svc,
        card: CardParam = None, number: NumberParam = None, phone: PhoneParam = None,
    ) -> TillMember:
        """Who is paying, by scanned card, member number or phone: name, tier and points.
        Lookups by number or phone are limited per till (429 with Retry-After past
        ``LOYALTY_TERMINAL_LOOKUPS_PER_MINUTE``); every lookup is in the audit log."""
        given = [v for v in (card, number, phone) if v is not None]
        if len(given) != 1:
            raise InvalidInput("look up by exactly one of card, number or phone", field="card")
        # Outside a transaction: the audit row of a lookup that finds nobody stays too.
        if card is not None:
            by: Literal["card", "number", "phone"] = "card"
            member_id: UUID | None = member_from_card(services.signer, card)
        else:
            await _limit_lookups(terminal, services)
            by = "number" if number is not None else "phone"
            member_id = await find_member_at_till(
                ledger, number=number, phone=None if phone is None else normalize_phone(
                    phone, services.settings.default_region))
        await record_till_lookup(ledger, terminal_id=terminal.terminal_id, member_id=member_id,
                                 by=by)
        if member_id is None:
            raise NotFound("no such member", field=by, code="member_not_found")
        return await till_member(ledger, member_id, now=utc_now())

    @post("/quotes", operation_id="posQuote", status_code=200)
    async def quote(self, data: JSONBody[Purchase], terminal: Till, conn: Db,
                    services: Svc) -> Quote:
        """What the purchase would earn and may redeem, with the trace; nothing is written but
        the audit row of the till's read of the member's points."""
        quote = await quote_purchase(
            conn, member=_member(data.member, services), purchase=data, terminal=terminal,
            rulebook=services.rulebook, programme=services.programme, now=utc_now())
        await record_audit(conn, actor_kind="terminal", actor_id=terminal.terminal_id,
                           action="pos.quote", subject_kind="member", subject_id=quote.member_id)
        return quote

    @post("/coupons/validate", operation_id="posValidateCoupons", status_code=200)
    async def validate_coupons(self, data: JSONBody[CouponValidation], terminal: Till,
                               conn: Db, services: Svc) -> CouponValidationResult:
        """Would these coupons apply to this basket here? Each valid with its discount, or
        invalid with a reason code; nothing is written."""
        member = _member(data.member, services) if data.member is not None else None
        result = await validate_coupons(conn, data, member=member, terminal=terminal,
                                        now=utc_now())
        if member is not None:  # the till read that member's wallet
            await record_audit(conn, actor_kind="terminal", actor_id=terminal.terminal_id,
                               action="pos.coupons.validate", subject_kind="member",
                               subject_id=member if isinstance(member, UUID) else None,
                               details={} if isinstance(member, UUID) else {"by": "number"})
        return result

    @post("/purchases", operation_id="posRecordPurchase", status_code=201,
          responses={201: stored_as(PurchaseRecorded)})
    @idempotent(required=True, in_ledger=True)
    async def purchase(
        self, data: JSONBody[Purchase], terminal: Till, ledger: Ledger, services: Svc,
        idempotency: Idempotency,
    ) -> Response[bytes]:
        """Record a purchase: earn and redeem in one transaction, exactly once per key."""
        return await written_once(
            data.member, services, ledger, idempotency,
            lambda member: record_purchase(
                ledger, member=member, purchase=data, terminal=terminal,
                idempotency=idempotency, rulebook=services.rulebook,
                programme=services.programme, now=utc_now()))

    @post("/purchases/{purchase_id:uuid}/returns", operation_id="posRecordReturn",
          status_code=201, responses={201: stored_as(ReturnRecorded)})
    @idempotent(required=True, in_ledger=True)
    async def return_(
        self, purchase_id: FromPath[UUID], data: JSONBody[ReturnRequest], terminal: Till,
        ledger: Ledger, idempotency: Idempotency,
    ) -> Response[bytes]:
        """Return lines or an amount of a purchase made at this store, exactly once per key."""
        outcome = await record_return(ledger, purchase_id=purchase_id, request=data,
                                      terminal=terminal, idempotency=idempotency, now=utc_now())
        return respond(outcome)

