"""Scale rehearsal (issue 18): the schema with every member-owned table hash-partitioned by
``member_id``, as Citus would distribute and co-locate it, and the earn, redeem, return, read and
action paths run through the real domain functions on it. Every statement they send must touch
one partition of each member-owned table it reads or writes, all of the same remainder (one
shard), except the known exceptions below, each one of docs/scaling.md's (section "Rehearsal:
hash-partitioned by member_id"). A statement that stops pruning fails here.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast
from uuid import UUID

import asyncpg
import msgspec
import pytest

from loyalty.access.principals import TerminalPrincipal
from loyalty.access.stores import create_terminal, ensure_store
from loyalty.core.db import Connection, init_connection, with_database
from loyalty.core.embedded import ServiceUrls
from loyalty.core.idempotency import Idempotency, request_hash
from loyalty.core.ids import uuid7
from loyalty.members.filter import MemberFilter
from loyalty.points.actions import record_action
from loyalty.points.history import points_history, points_summary, till_member
from loyalty.points.purchases import record_purchase
from loyalty.points.returns import record_return
from loyalty.points.rules import RuleBook, save_rules
from loyalty.points.summaries import member_points
from loyalty.promotions.coupon_templates import create_template, generate_code_batch
from loyalty.promotions.coupon_wallet import issue_to_members
from schemas.base import json_encoder
from schemas.coupons import CouponTemplateCreate, FixedAmount
from schemas.points import CouponRef, MemberRef, Purchase, PurchaseLine, ReturnRequest
from schemas.rules import EarningRules, Tier, TierProgramme
from tests.conftest import ROOT, clone_database
from tests.factories import PROGRAMME, insert_member, instant
from tests.scale.partitioning import (
    PARTITIONS,
    Observed,
    Partitioned,
    Scan,
    Touch,
    partition_by_member,
)

_receipts = itertools.count()


@dataclass(frozen=True)
class Known:
    """A scan that may touch every partition of ``table``: it looks rows up by ``column``, which
    is not the distribution key, for ``reason``."""

    table: str
    column: str
    reason: str

    def excuses(self, scan: Scan) -> bool:
        return scan.table == self.table and re.search(
            rf"\b{self.column}\b", scan.condition) is not None


KNOWN = (
    Known("members", "member_number",
          "a till that types the member number: members_member_number_key is a unique index "
          "without member_id"),
    Known("members", "merged_into",
          "the members merged into this one (tier measure, coupon limits, history) are found "
          "by members_merged_into, not by member_id"),
    Known("purchases", "receipt_id",
          "a receipt is recorded once per store, whoever's: purchases_receipt is a unique index "
          "without member_id, and the purchase's ledger read looks the receipt up"),
    Known("purchases", "purchase_id",
          "a return names its purchase by purchase_id and store alone (purchases_id)"),
    Known("member_coupons", "coupon_id",
          "the till names a wallet coupon by its id alone (member_coupons_id)"),
)

# What a unique index without member_id becomes: a plain index, the uniqueness unenforced.
UNENFORCED_UNIQUE = {
    "members.members_email", "members.members_phone", "members.members_member_number_key",
    "members.members_external_id", "purchases.purchases_receipt",
}


@dataclass(frozen=True)
class Verdict:
    """What the statements of one path touched, as the test judges it."""

    # Statements that touched two partitions of a table, or two shards, with no known reason.
    failures: list[str]
    # The known exceptions the path met.
    excused: set[str]
    # Member-owned tables written, and other tables written.
    written: set[str]
    other_written: set[str]


def judge(touches: Sequence[Touch], known: Sequence[Known] = KNOWN) -> Verdict:
    """Each statement on one shard: every scan of a member-owned table in one partition unless
    a known exception excuses it, every table written in one partition, one remainder."""
    failures: list[str] = []
    excused: set[str] = set()
    written: set[str] = set()
    other_written: set[str] = set()
    for touch in touches:
        shards: set[int] = set()
        problems = []
        for scan in touch.scans:
            if len(scan.partitions) > 1:
                reasons = [k for k in known if k.excuses(scan)]
                if reasons:
                    excused.update(f"{k.table}.{k.column}" for k in reasons)
                    continue
                problems.append(f"{scan.table} scanned in {len(scan.partitions)} partitions"
                                f" by {scan.condition or 'no condition'}")
            shards |= scan.partitions
        for table, partitions in touch.writes.items():
            written.add(table)
            if len(partitions) > 1:
                problems.append(f"{table} written in {len(partitions)} partitions")
            shards |= partitions
        other_written |= touch.other_writes
        if len(shards) > 1:
            problems.append(f"member-owned rows of {len(shards)} shards touched: "
                            + ", ".join(f"{s.table} {sorted(s.partitions)}"
                                        for s in touch.scans if s.partitions)
                            + "; written " + ", ".join(f"{t} {sorted(p)}"
                                                       for t, p in touch.writes.items()))
        if problems:
            first = " ".join(touch.sql.split())[:300]
            failures.append(f"{first}\n    " + "\n    ".join(problems))
    return Verdict(failures, excused, written, other_written)


# -- the rehearsal's database ----------------------------------------------------------------


@dataclass
class Rehearsal:
    url: str
    partitioned: Partitioned
    terminal: TerminalPrincipal
    wallet_template: UUID
    code_template: UUID
    now: dt.datetime

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[tuple[Connection, Observed]]:
        """A plain connection to arrange rows with, and the observed one the path runs on."""
        plain: Connection = await asyncpg.connect(self.url)
        watched: Connection = await asyncpg.connect(self.url)
        try:
            await init_connection(plain)
            await init_connection(watched)
            yield plain, Observed(watched, self.partitioned)
        finally:
            await plain.close()
            await watched.close()


@pytest.fixture(scope="module")
async def rehearsal(maintenance: asyncpg.Connection, template_db: str,
                    servers: ServiceUrls) -> AsyncIterator[Rehearsal]:
    """A migrated database of the module's own, partitioned, with a store and its till,
    earning rules with a tier programme (so a purchase measures the tier), and two coupon
    templates: one issued into wallets, one handed out as single-use codes."""
    name = await clone_database(maintenance, template_db)
    url = with_database(servers.database_url, name)
    now = dt.datetime.now(dt.UTC)
    conn: Connection = await asyncpg.connect(url)
    try:
        await init_connection(conn)
        partitioned = await partition_by_member(conn)
        await save_rules(conn, EarningRules(tiers=TierProgramme(
            levels=[Tier(code="silver", name="Silver", threshold=100_000)])), staff_id=None)
        store = await ensure_store(conn, code="SHARD-1")
        created = await create_terminal(conn, store=store)
        terminal = TerminalPrincipal(created.terminal.terminal_id, store.store_id, store.code)
        templates = [
            await create_template(conn, CouponTemplateCreate(
                name=title, discount=FixedAmount(amount=100), stackable=True), staff_id=None)
            for title in ("Wallet 100", "Code 100")]
        # A crowd in every partition, so that a statement that prunes has something to skip.
        for n in range(4 * PARTITIONS):
            await insert_member(conn, f"Crowd {n}")
        yield Rehearsal(url, partitioned, terminal, templates[0].template_id,
                        templates[1].template_id, now)
    finally:
        await conn.close()
        await maintenance.execute(f'drop database if exists "{name}" with (force)')


def _purchase(rehearsal: Rehearsal, member: MemberRef, total: int, *, redeem: int = 0,
              coupons: Sequence[CouponRef] = ()) -> Purchase:
    return Purchase(member=member, receipt_id=f"S-{next(_receipts)}",
                    occurred_at=instant(rehearsal.now - dt.timedelta(minutes=1)),
                    total=total, currency="JPY",
                    lines=[PurchaseLine(sku="TEA", unit_price=total // 2, quantity=2)],
                    redeem_points=redeem, coupons=list(coupons))


async def _buy(conn: Connection, rehearsal: Rehearsal, body: Purchase) -> UUID:
    terminal = rehearsal.terminal
    outcome = await record_purchase(
        conn, member=body.member.id or str(body.member.number), purchase=body,
        terminal=terminal,
        idempotency=Idempotency(terminal.terminal_id, f"k-{uuid7()}",
                                request_hash("POST", "/v1/pos/purchases", body)),
        rulebook=RuleBook(), programme=PROGRAMME, now=rehearsal.now)
    assert outcome.status == 201, outcome.body
    return UUID(msgspec.json.decode(outcome.body)["purchase_id"])


async def _wallet_coupon(conn: Connection, rehearsal: Rehearsal, member: UUID) -> UUID:
    """A coupon of the wallet template issued to ``member``."""
    await issue_to_members(conn, template_id=rehearsal.wallet_template,
                           member_filter=MemberFilter.members([member]), issue_id=uuid7(),
                           source="staff", campaign_id=None, now=rehearsal.now,
                           tz=PROGRAMME.timezone.key)
    coupon_id: UUID = await conn.fetchval(
        "select coupon_id from member_coupons where member_id = $1 and redeemed_at is null",
        member)
    return coupon_id


def _assert_one_shard(verdict: Verdict) -> None:
    assert not verdict.failures, (
        "statements that touch more than one partition or shard (docs/scaling.md, 'Rehearsal:"
        " hash-partitioned by member_id'): give them a member_id to prune by, or add a known"
        " exception with its reason to both:\n" + "\n".join(verdict.failures))


# -- the paths -------------------------------------------------------------------------------


async def test_the_member_owned_tables_are_partitioned_and_lose_only_the_documented_unique_indexes(
    rehearsal: Rehearsal,
) -> None:
    assert {"members", "point_balances", "point_entries", "point_lots", "point_allocations",
            "purchases", "purchase_returns", "member_actions", "member_coupons",
            "coupon_redemptions", "point_summaries"} <= rehearsal.partitioned.tables
    assert rehearsal.partitioned.not_unique == UNENFORCED_UNIQUE
    scaling = (ROOT / "docs" / "scaling.md").read_text("utf-8")
    for index in UNENFORCED_UNIQUE:
        assert index.partition(".")[2] in scaling


async def test_earning_by_card_touches_the_members_shard_only(rehearsal: Rehearsal) -> None:
    async with rehearsal.connect() as (plain, observed):
        member = await insert_member(plain, "Earner")
        await _buy(cast(Connection, observed), rehearsal,
                   _purchase(rehearsal, MemberRef(id=member), 3_000))

    verdict = judge(observed.touches)
    _assert_one_shard(verdict)
    assert {"point_balances", "point_entries", "point_lots", "purchases",
            "members"} <= verdict.written
    # The receipt is looked up whoever's it is; the tier measure counts the purchases of
    # members merged into this one.
    assert verdict.excused == {"purchases.receipt_id", "members.merged_into"}
    assert verdict.other_written == {"idempotency_keys", "outbox"}


async def test_earning_by_member_number_looks_the_number_up_in_every_partition(
    rehearsal: Rehearsal,
) -> None:
    async with rehearsal.connect() as (plain, observed):
        member = await insert_member(plain, "Typed")
        number = await plain.fetchval(
            "select member_number from members where member_id = $1", member)
        await _buy(cast(Connection, observed), rehearsal,
                   _purchase(rehearsal, MemberRef(number=number), 2_000))

    verdict = judge(observed.touches)
    _assert_one_shard(verdict)
    assert verdict.excused == {"members.member_number", "purchases.receipt_id",
                               "members.merged_into"}


async def test_redeeming_points_and_coupons_touches_the_members_shard_only(
    rehearsal: Rehearsal,
) -> None:
    async with rehearsal.connect() as (plain, observed):
        member = await insert_member(plain, "Redeemer")
        await _buy(plain, rehearsal, _purchase(rehearsal, MemberRef(id=member), 10_000))
        coupon_id = await _wallet_coupon(plain, rehearsal, member)
        async with plain.transaction():
            batch = await generate_code_batch(plain, rehearsal.code_template, count=1,
                                              prefix="", staff_id=None, now=rehearsal.now,
                                              tz=PROGRAMME.timezone.key)
        code = await plain.fetchval("select code from coupon_codes where batch_id = $1",
                                    batch.batch_id)
        body = _purchase(rehearsal, MemberRef(id=member), 4_000, redeem=50,
                         coupons=[CouponRef(coupon_id=coupon_id), CouponRef(code=code)])
        body = msgspec.structs.replace(body, total=4_000 - 200, lines=[
            PurchaseLine(sku="TEA", unit_price=2_000, quantity=2)])
        await _buy(cast(Connection, observed), rehearsal, body)

    verdict = judge(observed.touches)
    _assert_one_shard(verdict)
    assert {"point_allocations", "coupon_redemptions", "member_coupons"} <= verdict.written
    assert verdict.excused == {"member_coupons.coupon_id", "purchases.receipt_id",
                               "members.merged_into"}
    # The code is keyed by itself and the budget counter is the template's: other shards.
    assert verdict.other_written == {"idempotency_keys", "outbox", "coupon_codes",
                                     "coupon_templates"}


async def test_a_return_finds_its_purchase_everywhere_and_posts_on_the_members_shard(
    rehearsal: Rehearsal,
) -> None:
    async with rehearsal.connect() as (plain, observed):
        member = await insert_member(plain, "Returner")
        bought = _purchase(rehearsal, MemberRef(id=member), 6_000, coupons=[
            CouponRef(coupon_id=await _wallet_coupon(plain, rehearsal, member))])
        purchase_id = await _buy(plain, rehearsal, msgspec.structs.replace(
            bought, total=6_000 - 100, lines=[PurchaseLine(sku="TEA", unit_price=3_000,
                                                           quantity=2)]))
        # Returned in full: the points go back and the coupon comes back.
        request = ReturnRequest(amount=6_000 - 100)
        terminal = rehearsal.terminal
        outcome = await record_return(
            cast(Connection, observed), purchase_id=purchase_id, request=request,
            terminal=terminal,
            idempotency=Idempotency(terminal.terminal_id, f"r-{uuid7()}",
                                    request_hash("POST", "/returns", request)),
            now=rehearsal.now)
        assert outcome.status == 201

    verdict = judge(observed.touches)
    _assert_one_shard(verdict)
    assert {"purchase_returns", "purchases", "point_entries", "point_allocations",
            "coupon_redemptions", "member_coupons"} <= verdict.written
    assert verdict.excused == {"purchases.purchase_id"}
    assert verdict.other_written == {"idempotency_keys", "outbox", "coupon_templates"}


async def test_reading_points_and_history_touches_the_members_shard_only(
    rehearsal: Rehearsal,
) -> None:
    async with rehearsal.connect() as (plain, observed):
        member = await insert_member(plain, "Reader")
        await _buy(plain, rehearsal, _purchase(rehearsal, MemberRef(id=member), 5_000))
        conn = cast(Connection, observed)
        summary = await points_summary(conn, member, rulebook=RuleBook(), programme=PROGRAMME,
                                       now=rehearsal.now)
        page = await points_history(conn, member, limit=10)
        till = await till_member(conn, member, now=rehearsal.now)
        # The member app's read: computed and stored the first time, the stored one after.
        filled = await member_points(conn, member, rulebook=RuleBook(), programme=PROGRAMME,
                                     now=rehearsal.now)
        served = len(observed.touches)
        stored = await member_points(conn, member, rulebook=RuleBook(), programme=PROGRAMME,
                                     now=rehearsal.now)

    assert summary.available == till.available_points > 0
    assert page.items
    assert stored == filled == json_encoder.encode(summary)
    assert len(observed.touches) == served + 1
    verdict = judge(observed.touches)
    _assert_one_shard(verdict)
    assert verdict.written == {"point_summaries"}
    assert verdict.other_written == set()
    # The history includes the entries of members merged into this one.
    assert verdict.excused == {"members.merged_into"}


async def test_an_engagement_action_touches_the_members_shard_only(rehearsal: Rehearsal) -> None:
    async with rehearsal.connect() as (plain, observed):
        member = await insert_member(plain, "Sharer")
        outcome = await record_action(
            cast(Connection, observed), member_id=member, action="sns_share",
            target="https://example.com/tea", rulebook=RuleBook(), programme=PROGRAMME,
            now=rehearsal.now,
            # The app's key is the member's own: idempotency_keys by principal is by member.
            idempotency=Idempotency(member, f"a-{uuid7()}", b"\0" * 32))
        assert msgspec.json.decode(outcome.body)["points"] > 0

    verdict = judge(observed.touches)
    _assert_one_shard(verdict)
    assert {"member_actions", "point_entries", "point_lots", "members"} <= verdict.written
    assert verdict.excused == set()
    assert verdict.other_written == {"idempotency_keys", "outbox"}


async def test_a_statement_without_a_member_to_prune_by_fails_the_rehearsal(
    rehearsal: Rehearsal,
) -> None:
    async with rehearsal.connect() as (plain, observed):
        member = await insert_member(plain, "Anyone")
        purchase_id = await _buy(plain, rehearsal,
                                 _purchase(rehearsal, MemberRef(id=member), 1_000))
        # What a careless change to the return path could send: the purchase's entries by
        # purchase id alone, and a write to two members at once.
        await observed.fetch("select * from point_entries where purchase_id = $1", purchase_id)
        other = await insert_member(plain, "Someone else")
        await observed.execute(
            "update members set updated_at = now() where member_id = any($1::uuid[])",
            [member, *await _in_another_partition(plain, member, other)])

    verdict = judge(observed.touches)
    assert len(verdict.failures) == 2
    assert "point_entries scanned in 4 partitions" in verdict.failures[0]
    assert "members written in 2 partitions" in verdict.failures[1]


async def _in_another_partition(conn: Connection, member: UUID, fallback: UUID) -> list[UUID]:
    """A member whose rows are in another partition than ``member``'s."""
    found: UUID | None = await conn.fetchval(
        """
        select o.member_id from members o
         where o.tableoid <> (select tableoid from members where member_id = $1) limit 1
        """, member)
    return [found or fallback]


def test_every_known_exception_is_the_one_docs_scaling_names() -> None:
    scaling = (ROOT / "docs" / "scaling.md").read_text("utf-8")
    rehearsal = scaling.partition("## Rehearsal: hash-partitioned by member_id")[2]
    assert rehearsal, "docs/scaling.md has lost its rehearsal section"
    for known in KNOWN:
        assert f"`{known.column}`" in rehearsal, known
