"""The checkout terminal's API (terminal API key): who is paying, what a purchase earns,
recording purchases and returns. Every write takes an ``Idempotency-Key``."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Literal
from uuid import UUID

import asyncpg
import msgspec
from litestar import Controller, Response, get, post
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from api.auth import terminals_only
from api.deps import (
    TERMINAL_DEPENDENCIES,
    AnyRequest,
    Db,
    Ledger,
    Svc,
    Till,
    services_of,
    terminal_of,
    utc_now,
)
from api.errors import to_problem
from api.idempotency import idempotent, respond, stored_as
from api.params import CardParam, NumberParam, PhoneParam
from loyalty.access.audit import record_audit, record_till_lookup
from loyalty.access.stores import get_terminal
from loyalty.core.db import Connection, Pool
from loyalty.core.errors import (
    InsufficientPoints,
    InvalidInput,
    LoyaltyError,
    NotFound,
    RateLimited,
)
from loyalty.core.idempotency import Idempotency, record_refusal, request_hash
from loyalty.core.normalize import normalize_phone
from loyalty.members.cards import CardExpired, member_from_card
from loyalty.members.merge import survivors
from loyalty.members.profiles import find_member_at_till
from loyalty.points.history import till_member
from loyalty.points.lanes import lanes
from loyalty.points.ledger import Outcome, recorded_outcome
from loyalty.points.purchases import quote_purchase, record_purchase, validate_coupons
from loyalty.points.returns import purchase_by_receipt, record_return
from schemas.admin import WhoAmI
from schemas.coupons import CouponValidation, CouponValidationResult
from schemas.points import (
    BatchItem,
    BatchPurchase,
    BatchReturn,
    MemberRef,
    Purchase,
    PurchaseRecorded,
    Quote,
    ReturnRecorded,
    ReturnRequest,
    TillBatch,
    TillBatchResult,
    TillMember,
)


async def written_once(
    ref: MemberRef, services: Svc, ledger: Ledger, idempotency: Idempotency,
    write: Callable[[UUID | str], Awaitable[Outcome]],
) -> Response[bytes]:
    """A terminal's write for the member ``ref`` names, exactly once per key. A retry naming
    the member by a card that has expired since the first attempt still gets that first
    response back."""
    return respond(await _once_for(ref, services, ledger, idempotency, write))


async def _once_for(
    ref: MemberRef, services: Svc, ledger: Ledger, idempotency: Idempotency,
    write: Callable[[UUID | str], Awaitable[Outcome]],
) -> Outcome:
    try:
        member = _member(ref, services)
    except CardExpired:
        replay = await recorded_outcome(ledger, idempotency)
        if replay is None:
            raise
        return replay
    return await write(member)


async def _purchase_once(data: Purchase, terminal: Till, ledger: Ledger, services: Svc,
                         idempotency: Idempotency) -> Outcome:
    """``POST /v1/pos/purchases``, alone or as an item of a batch."""
    return await _once_for(
        data.member, services, ledger, idempotency,
        lambda member: record_purchase(
            ledger, member=member, purchase=data, terminal=terminal, idempotency=idempotency,
            rulebook=services.rulebook, programme=services.programme, now=utc_now(),
            group=services.purchase_groups))


async def _return_once(purchase_id: UUID, data: ReturnRequest, terminal: Till, ledger: Ledger,
                       idempotency: Idempotency) -> Outcome:
    """``POST /v1/pos/purchases/{purchase_id}/returns``, alone or as an item of a batch."""
    return await record_return(ledger, purchase_id=purchase_id, request=data,
                               terminal=terminal, idempotency=idempotency, now=utc_now())


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


# A batch of 1,000 purchases of a few lines each is about 500 KB of JSON: more than the API's
# usual body limit allows.
BATCH_BODY_LIMIT = 8 * 1024 * 1024

# What refuses one item of a batch and lets the next go on: what a single request is answered
# with a 4xx (or a retryable 503) for while its connection stays good. A lost connection ends
# the batch with 503: what was written stays written, and the batch sent again replays it.
_ITEM_REFUSALS = (LoyaltyError, asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                  asyncpg.QueryCanceledError)


class _Answer(msgspec.Struct, omit_defaults=True):
    """``BatchItemResult`` as it is sent: a written item's first answer as it was stored."""

    index: int
    idempotency_key: str
    outcome: str
    status: int
    purchase: msgspec.Raw | None = None
    returned: msgspec.Raw | None = None
    problem: msgspec.Raw | None = None


_encode = msgspec.json.Encoder().encode


def check_distinct_keys(batch: TillBatch) -> None:
    """Two items under one key would be one write answered twice: refused before anything
    is written."""
    seen: dict[str, int] = {}
    for index, item in enumerate(batch.items):
        first = seen.setdefault(item.idempotency_key, index)
        if first != index:
            raise InvalidInput(
                f"items {first} and {index} have the same idempotency_key "
                f"{item.idempotency_key!r}: give each sale or return a key of its own",
                field=f"items[{index}].idempotency_key", code="duplicate_idempotency_key")


async def _batch_item(index: int, item: BatchItem, terminal: Till, ledger: Ledger,
                      services: Svc) -> _Answer:
    """One item of a batch through its single request's own path, hashed as that request
    is, so the same key sent alone or in a batch is the same write."""
    key = item.idempotency_key
    idempotency: Idempotency | None = None
    try:
        match item:
            case BatchPurchase(purchase=purchase):
                idempotency = Idempotency(terminal.terminal_id, key, request_hash(
                    "POST", "/v1/pos/purchases", purchase))
                outcome = await _purchase_once(purchase, terminal, ledger, services,
                                               idempotency)
            case BatchReturn(purchase_id=purchase_id, receipt_id=receipt_id):
                if purchase_id is None:
                    assert receipt_id is not None  # one of the two: BatchReturn is a OneOf
                    purchase_id = await purchase_by_receipt(ledger, terminal.store_id,
                                                            receipt_id)
                idempotency = Idempotency(terminal.terminal_id, key, request_hash(
                    "POST", f"/v1/pos/purchases/{purchase_id}/returns", item.returned))
                outcome = await _return_once(purchase_id, item.returned, terminal, ledger,
                                             idempotency)
    except _ITEM_REFUSALS as refused:
        return await _refused(index, key, _for_the_till(refused), ledger, idempotency)
    raw = msgspec.Raw(outcome.body)
    if outcome.status >= 400:  # refused before, and kept under its key: refused again
        return _Answer(index, key, "refused", outcome.status, problem=raw)
    return _Answer(index, key, "replayed" if outcome.replayed else "created", outcome.status,
                   purchase=raw if isinstance(item, BatchPurchase) else None,
                   returned=raw if isinstance(item, BatchReturn) else None)


def _for_the_till(refusal: Exception) -> Exception:
    """The overdraft policy's refusal says what the till does next (decision 0016)."""
    if not isinstance(refusal, InsufficientPoints):
        return refusal
    return InsufficientPoints(
        f"the member's points do not cover this redemption now ({refusal.detail}): spent "
        "elsewhere since the sale, or never there; nothing of this purchase is recorded. "
        "Settle the difference with the member, then send the purchase again without "
        "redeem_points under a new key to record what it earns",
        field="purchase.redeem_points")


# Refusals that a later try may see otherwise: the key is another request's or in use, the
# service was busy (every 5xx passes too).
_PASSING = {"idempotency_key_reused", "idempotency_key_in_flight", "rate_limited"}


async def _refused(index: int, key: str, refusal: Exception, ledger: Ledger,
                   idempotency: Idempotency | None) -> _Answer:
    """The item's problem, kept under its key when it is final: the batch sent again is
    answered the same, even where the member's balance has changed since."""
    problem = to_problem(refusal)
    status = problem.status_code
    body = _encode({
        "type": problem.type_, "title": problem.title, "status": status,
        "detail": problem.detail,
        **(problem.extra if isinstance(problem.extra, dict) else {})})
    if (idempotency is not None and 400 <= status < 500
            and getattr(refusal, "code", None) not in _PASSING):
        # False: the key was written meanwhile (the item sent alone at the same moment); its
        # answer stands, and is what the batch sent again gets.
        await record_refusal(ledger, idempotency, status, body)
    return _Answer(index, key, "refused", status, problem=msgspec.Raw(body))


# A batch's lanes written side by side: on the batch's own connection and at most this many
# less one from the pool, so that one till's upload shares group commits with itself without
# taking a worker's pool from the live tills.
BATCH_LANES = 4


async def _write_batch(items: list[BatchItem], terminal: Till, ledger: Ledger,
                       services: Svc) -> list[_Answer]:
    """Every item's answer, in till order. The purchases between two returns go in lanes
    (loyalty/points/lanes.py) written side by side; a return waits for everything before it
    (its purchase may be in the batch) and everything after it waits for the return."""
    answers: list[_Answer | None] = [None] * len(items)
    touched = await _touches(items, ledger, services)
    returns = [n for n, item in enumerate(items) if isinstance(item, BatchReturn)]
    start = 0
    for end in [*returns, len(items)]:
        if end > start:
            indices = list(range(start, end))
            await _purchases_side_by_side(indices, [touched[n] for n in indices], items,
                                          answers, terminal, ledger, services)
        if end < len(items):
            answers[end] = await _batch_item(end, items[end], terminal, ledger, services)
        start = end + 1
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


async def _purchases_side_by_side(
    indices: list[int], touched: list[list[Hashable]], items: list[BatchItem],
    answers: list[_Answer | None], terminal: Till, ledger: Ledger, services: Svc,
) -> None:
    queue = deque([[indices[n] for n in lane] for lane in lanes(touched)])

    async def work(conn: Connection) -> None:
        while queue:
            for index in queue.popleft():
                answers[index] = await _batch_item(index, items[index], terminal, conn,
                                                   services)

    holding: set[asyncio.Task[None]] = set()

    async def pooled(pool: Pool) -> None:
        async with pool.acquire() as conn:
            task = asyncio.current_task()
            assert task is not None
            holding.add(task)
            await work(conn)

    helpers = [asyncio.create_task(pooled(services.pool))
               for _ in range(min(BATCH_LANES, len(queue)) - 1)]
    try:
        await work(ledger)
    except BaseException:
        queue.clear()  # the helpers end with the lane they are writing
        raise
    finally:
        # The helpers writing a lane finish it; one still waiting for a connection is let go
        # (it takes one, finds no lane left and gives it back) rather than cancelled: a
        # cancelled wait may be opening a connection, and asyncpg leaves that handshake's
        # failure unobserved, logged as an error. A helper's failure (a lost connection)
        # fails the batch, as one on the request's own connection does.
        for helper in helpers:
            if helper not in holding:
                _let_go(helper)
        ended = await asyncio.gather(*(h for h in helpers if h in holding),
                                     return_exceptions=True)
    failed = [e for e in ended if isinstance(e, BaseException)]
    if failed:
        raise failed[0]


# Helpers let go by batches that have answered, held until they have given their connection
# back (the event loop holds tasks weakly).
_LET_GO: set[asyncio.Task[None]] = set()


def _let_go(helper: asyncio.Task[None]) -> None:
    _LET_GO.add(helper)
    helper.add_done_callback(_gone)


def _gone(helper: asyncio.Task[None]) -> None:
    _LET_GO.discard(helper)
    if not helper.cancelled():
        helper.exception()  # it had nothing to write: a failure to connect is no one's news


async def _touches(items: list[BatchItem], ledger: Ledger,
                   services: Svc) -> list[list[Hashable]]:
    """What each purchase writes to in common with others: its member (the one a merge left,
    whether named by id, number or card), its receipt, and the coupons if it uses any; one
    read for the whole batch. A return touches nothing here: it is written alone."""
    named: list[UUID | str | None] = []
    for item in items:
        member = None
        # A card expired or forged names no one here: the item is refused, or answered as
        # recorded.
        if isinstance(item, BatchPurchase):
            with contextlib.suppress(LoyaltyError):
                member = _member(item.purchase.member, services)
        named.append(member)
    found = await survivors(ledger, ids=[m for m in named if isinstance(m, UUID)],
                            numbers=[m for m in named if isinstance(m, str)])
    touched: list[list[Hashable]] = []
    for item, member in zip(items, named, strict=True):
        keys: list[Hashable] = []
        if isinstance(item, BatchPurchase):
            keys.append(("receipt", item.purchase.receipt_id))
            if member is not None:
                keys.append(("member", found.get(member, member)))
            if item.purchase.coupons:
                keys.append(("coupons",))
        touched.append(keys)
    return touched


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
        self, data: JSONBody[Purchase], request: AnyRequest, ledger: Ledger,
        idempotency: Idempotency,
    ) -> Response[bytes]:
        """Record a purchase: earn and redeem in one transaction, exactly once per key."""
        # The till and the services from the request: one provider (api/deps.py).
        return respond(await _purchase_once(data, terminal_of(request), ledger,
                                            services_of(request.app.state), idempotency))

    @post("/purchases/{purchase_id:uuid}/returns", operation_id="posRecordReturn",
          status_code=201, responses={201: stored_as(ReturnRecorded)})
    @idempotent(required=True, in_ledger=True)
    async def return_(
        self, purchase_id: FromPath[UUID], data: JSONBody[ReturnRequest], terminal: Till,
        ledger: Ledger, idempotency: Idempotency,
    ) -> Response[bytes]:
        """Return lines or an amount of a purchase made at this store, exactly once per key."""
        return respond(await _return_once(purchase_id, data, terminal, ledger, idempotency))

    @post("/batches", operation_id="posRecordBatch", status_code=200,
          request_max_body_size=BATCH_BODY_LIMIT,
          responses={200: ResponseSpec(data_container=TillBatchResult,
                                       description="Each item's own answer, in order")})
    async def batch(self, data: JSONBody[TillBatch], terminal: Till, ledger: Ledger,
                    services: Svc) -> Response[bytes]:
        """An offline till's queue, uploaded when it is back: up to 1,000 purchases and
        returns in the order they were rung up, each written exactly as its single request
        would be, once by its own ``idempotency_key``, with its own answer (``created``,
        ``replayed`` or ``refused`` with its problem), each member's items in till order
        (items that share no member, receipt or coupon are written side by side). A refused
        item stops nothing after it, and its refusal is final under its key: the whole batch
        sent again writes nothing more and answers every item as it did. A redemption the
        balance no longer covers is refused with ``insufficient_points``
        (docs/offline-tills.md, docs/decisions/0016 and 0023)."""
        check_distinct_keys(data)
        answers: list[bytes] = []
        counts = {"created": 0, "replayed": 0, "refused": 0}
        for answer in await _write_batch(data.items, terminal, ledger, services):
            counts[answer.outcome] += 1
            answers.append(_encode(answer))
        body = b'{"created":%d,"replayed":%d,"refused":%d,"items":[%b]}' % (
            counts["created"], counts["replayed"], counts["refused"], b",".join(answers))
        return Response(body, status_code=200, media_type=MediaType.JSON)

