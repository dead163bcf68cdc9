"""Coupons: templates, generated codes, issuing into wallets, the wallet, and the till's
questions (does this coupon apply, and what does it take off).

Whether a coupon applies to a basket is decided by pure code (``check_coupons``). Redeeming is
part of recording the purchase: ``loyalty.promotions.coupon_redemption``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InvalidInput, NotFound
from loyalty.core.ids import uuid7
from loyalty.members.filter import REACHABLE, MemberFilter
from loyalty.members.profiles import decode_cursor, encode_cursor
from loyalty.promotions.codes import display, generate_codes, is_well_formed, normalize_code
from schemas.base import Page
from schemas.coupons import (
    CodeBatch,
    CouponTemplate,
    CouponTemplateCreate,
    CouponTemplateUpdate,
    DaysAfterIssue,
    Discount,
    FixedAmount,
    FixedWindow,
    FreeItem,
    IssueResult,
    PercentOff,
    PointsMultiplierDiscount,
    Validity,
    WalletCoupon,
    WalletStatus,
)
from schemas.points import CouponCheck, CouponReason, CouponRef, PurchaseLine

# -- templates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """What deciding about a coupon needs to know of its template."""

    template_id: UUID
    name: str
    discount: Discount
    min_spend: int
    stores: tuple[str, ...]
    categories: tuple[str, ...]
    per_member_limit: int | None
    total_limit: int | None
    redeemed_count: int
    stackable: bool
    active: bool
    on_return: str


_TEMPLATE_COLUMNS = """
    t.template_id, t.name, t.description, t.discount, t.valid_from, t.valid_until, t.valid_days,
    t.min_spend, t.stores, t.categories, t.per_member_limit, t.total_limit, t.stackable,
    t.on_return, t.public_code, t.active, t.redeemed_count, t.created_at, t.updated_at,
    (select count(*) from member_coupons mc where mc.template_id = t.template_id)
      + (select count(*) from coupon_codes cc where cc.template_id = t.template_id) as issued
"""


def _validity(row: Any) -> Validity:
    if row["valid_days"] is not None:
        return DaysAfterIssue(days=row["valid_days"])
    return FixedWindow(valid_from=row["valid_from"], valid_until=row["valid_until"])


def _template_view(row: Any) -> CouponTemplate:
    return CouponTemplate(
        template_id=row["template_id"], name=row["name"], description=row["description"],
        discount=msgspec.convert(row["discount"], Discount), validity=_validity(row),
        min_spend=row["min_spend"], stores=list(row["stores"]),
        categories=list(row["categories"]), per_member_limit=row["per_member_limit"],
        total_limit=row["total_limit"], stackable=row["stackable"], on_return=row["on_return"],
        public_code=row["public_code"], active=row["active"], issued=row["issued"],
        redeemed=row["redeemed_count"], created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _template_facts(row: Any, prefix: str = "") -> Template:
    return Template(
        template_id=row[prefix + "template_id"], name=row[prefix + "name"],
        discount=msgspec.convert(row[prefix + "discount"], Discount),
        min_spend=row[prefix + "min_spend"], stores=tuple(row[prefix + "stores"]),
        categories=tuple(row[prefix + "categories"]),
        per_member_limit=row[prefix + "per_member_limit"],
        total_limit=row[prefix + "total_limit"],
        redeemed_count=row[prefix + "redeemed_count"], stackable=row[prefix + "stackable"],
        active=row[prefix + "active"], on_return=row[prefix + "on_return"],
    )


def _public_code(code: str | None) -> str | None:
    if code is None:
        return None
    normalized = normalize_code(code)
    if len(normalized) < 4:
        raise InvalidInput("a public code needs at least 4 letters or digits",
                           field="public_code")
    return normalized


async def create_template(
    conn: Connection, data: CouponTemplateCreate, *, staff_id: UUID | None,
) -> CouponTemplate:
    """A new coupon template; its public code, if any, must be free."""
    public_code = _public_code(data.public_code)
    valid_from = valid_until = None
    valid_days = None
    match data.validity:
        case FixedWindow(valid_from=start, valid_until=end):
            valid_from, valid_until = start, end
        case DaysAfterIssue(days=days):
            valid_days = days
            if public_code is not None:
                raise InvalidInput(
                    "a shared public code is never issued, so it needs a fixed validity "
                    "window, not days after issue", field="validity")
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                f"""
                with t as (
                    insert into coupon_templates (name, description, discount, valid_from,
                        valid_until, valid_days, min_spend, stores, categories,
                        per_member_limit, total_limit, stackable, on_return, public_code,
                        created_by)
                    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                    returning *
                )
                select {_TEMPLATE_COLUMNS} from t
                """,
                data.name.strip(), data.description.strip(), msgspec.to_builtins(data.discount),
                valid_from, valid_until, valid_days, data.min_spend, sorted(set(data.stores)),
                sorted(set(data.categories)), data.per_member_limit, data.total_limit,
                data.stackable, data.on_return, public_code, staff_id,
            )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"the public code {public_code} is already in use",
                       field="public_code", code="public_code_taken") from None
    assert row is not None
    return _template_view(row)


async def get_template(conn: Connection, template_id: UUID) -> CouponTemplate:
    row = await conn.fetchrow(
        f"select {_TEMPLATE_COLUMNS} from coupon_templates t where t.template_id = $1",
        template_id)
    if row is None:
        raise NotFound("no coupon template has this id: GET /v1/coupon-templates lists them",
                       field="template_id", code="coupon_template_not_found")
    return _template_view(row)


async def list_templates(
    conn: Connection, *, active: bool | None, limit: int, cursor: str | None,
) -> Page[CouponTemplate]:
    """Templates, newest first."""
    rows = await conn.fetch(
        f"""
        select {_TEMPLATE_COLUMNS} from coupon_templates t
         where ($1::bool is null or t.active = $1)
           and ($2::uuid is null or t.template_id < $2)
         order by t.template_id desc limit $3
        """,
        active, decode_cursor(cursor) if cursor else None, limit + 1)
    items = [_template_view(row) for row in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].template_id)
                if len(rows) > limit else None)


_UPDATABLE = ("name", "description", "active", "min_spend", "stores", "categories",
              "per_member_limit", "total_limit", "stackable", "on_return")


async def update_template(
    conn: Connection, template_id: UUID, changes: CouponTemplateUpdate,
) -> CouponTemplate:
    """Change what may change; a budget below what is already redeemed is refused."""
    given = {name: getattr(changes, name) for name in _UPDATABLE
             if getattr(changes, name) is not msgspec.UNSET}
    for name in ("stores", "categories"):
        if name in given:
            given[name] = sorted(set(given[name]))
    for name in ("name", "description"):
        if name in given:
            given[name] = given[name].strip()
    # The row is locked first, so a redemption cannot slip between the check and the update.
    current = await conn.fetchrow(
        "select redeemed_count from coupon_templates where template_id = $1 for update",
        template_id)
    if current is None:
        raise NotFound("no such coupon template", field="template_id",
                       code="coupon_template_not_found")
    limit = given.get("total_limit")
    if limit is not None and limit < current["redeemed_count"]:
        raise InvalidInput(
            f"{current['redeemed_count']} coupons are already redeemed: the budget cannot be "
            "lower", field="total_limit", code="total_limit_below_redeemed")
    if given:
        assignments = ", ".join(f"{name} = ${index}"
                                for index, name in enumerate(given, start=2))
        await conn.execute(
            f"update coupon_templates set {assignments}, updated_at = now()"
            " where template_id = $1", template_id, *given.values())
    return await get_template(conn, template_id)


# -- generated codes -------------------------------------------------------------------------

# Validity of a coupon issued at $now from template t, for codes and wallets alike.
VALID_FROM_SQL = "case when t.valid_days is null then t.valid_from else {now} end"
VALID_UNTIL_SQL = ("case when t.valid_days is null then t.valid_until"
                   " else coupon_valid_until({now}, t.valid_days, {tz}) end")


async def _active_template(conn: Connection, template_id: UUID) -> Any:
    row = await conn.fetchrow(
        "select template_id, active from coupon_templates where template_id = $1",
        template_id)
    if row is None:
        raise NotFound("no coupon template has this id: GET /v1/coupon-templates lists them",
                       field="template_id", code="coupon_template_not_found")
    if not row["active"]:
        raise Conflict("this template is deactivated: it issues nothing more",
                       field="template_id", code="coupon_template_inactive")
    return row


async def generate_code_batch(
    conn: Connection, template_id: UUID, *, count: int, prefix: str, staff_id: UUID | None,
    now: dt.datetime, tz: str,
) -> CodeBatch:
    """``count`` new single-use codes, written set-based (COPY into a temporary table, one
    insert). Runs in the caller's transaction (a request's key makes it once)."""
    prefix = normalize_code(prefix)
    await _active_template(conn, template_id)
    batch_id = uuid7()
    await conn.execute(
        """
        insert into coupon_code_batches (batch_id, template_id, count, prefix, created_by,
                                         created_at)
        values ($1, $2, $3, $4, $5, $6)
        """,
        batch_id, template_id, count, prefix, staff_id, now)
    await conn.execute("create temporary table new_codes (code text collate \"C\")"
                       " on commit drop")
    made = 0
    while made < count:
        await conn.execute("truncate new_codes")
        await conn.copy_records_to_table(
            "new_codes", records=((code,) for code in generate_codes(count - made, prefix)))
        try:
            # A savepoint: a code another batch wrote at the same moment undoes this round
            # only, and the round is drawn again. Codes already taken are left out up front.
            async with conn.transaction():
                made += int(await conn.fetchval(_ADD_CODES, template_id, batch_id, now, tz))
        except asyncpg.UniqueViolationError:
            continue
    await conn.execute("drop table new_codes")
    return await _batch(conn, batch_id)


_ADD_CODES = f"""
with added as (
    insert into coupon_codes (code, template_id, batch_id, created_at, valid_from, valid_until)
    select n.code, t.template_id, $2, $3, {VALID_FROM_SQL.format(now="$3")},
           {VALID_UNTIL_SQL.format(now="$3", tz="$4")}
      from (select distinct code from new_codes) n cross join coupon_templates t
     where t.template_id = $1
       and not exists (select 1 from coupon_codes c where c.code = n.code)
    returning 1
)
select count(*) from added
"""


async def _batch(conn: Connection, batch_id: UUID) -> CodeBatch:
    batch = await conn.fetchrow(
        "select batch_id, template_id, prefix, created_at from coupon_code_batches"
        " where batch_id = $1", batch_id)
    assert batch is not None
    codes = await conn.fetch(
        "select code from coupon_codes where template_id = $1 and batch_id = $2 order by code",
        batch["template_id"], batch_id)
    return CodeBatch(batch_id=batch_id, template_id=batch["template_id"], count=len(codes),
                     codes=[display(r["code"], batch["prefix"]) for r in codes],
                     created_at=batch["created_at"])


# -- issuing into wallets --------------------------------------------------------------------

# One wallet coupon per member of the filter: reachable members only, none for a member who
# already holds as many of this template as they may ever use, one per member per issue.
_ISSUE = """
with t as (
    select * from coupon_templates where template_id = $1 and active
), candidates as (
    select m.member_id from members m
     where ({filter})
), added as (
    insert into member_coupons (member_id, coupon_id, template_id, issue_id, source,
                                campaign_id, issued_at, valid_from, valid_until)
    select c.member_id, uuid_v7(), t.template_id, $2, $3, $4, $5,
           {valid_from}, {valid_until}
      from candidates c cross join t
     where t.per_member_limit is null
        or (select count(*) from member_coupons h
             where h.member_id = c.member_id and h.template_id = t.template_id)
           < t.per_member_limit
     order by c.member_id
    on conflict (member_id, issue_id) do nothing
    returning 1
)
select (select count(*) from added) as issued, (select count(*) from candidates) as matched
"""


async def issue_to_members(
    conn: Connection, *, template_id: UUID, member_filter: MemberFilter, issue_id: UUID,
    source: Literal["staff", "campaign", "tier", "birthday"], campaign_id: UUID | None,
    now: dt.datetime, tz: str,
) -> tuple[int, int]:
    """Issue the template to every reachable member of ``member_filter`` in one statement:
    (issued, matched). Issuing again under the same ``issue_id`` adds nothing."""
    await _active_template(conn, template_id)
    target = member_filter & REACHABLE
    sql = _ISSUE.format(filter=target.render(7),
                        valid_from=VALID_FROM_SQL.format(now="$5"),
                        valid_until=VALID_UNTIL_SQL.format(now="$5", tz="$6"))
    row = await conn.fetchrow(sql, template_id, issue_id, source, campaign_id, now, tz,
                              *target.params)
    assert row is not None
    return int(row["issued"]), int(row["matched"])


async def issue_coupons(
    conn: Connection, *, template_id: UUID, member_filter: MemberFilter, target: dict[str, Any],
    staff_id: UUID | None, now: dt.datetime, tz: str, requested: int | None = None,
) -> IssueResult:
    """A staff issue, recorded with what it did, in the caller's transaction (a request's key
    makes it once). ``requested`` is the length of a member list (so unknown ids count as
    skipped)."""
    await _active_template(conn, template_id)
    issue_id = uuid7()
    await conn.execute(
        """
        insert into coupon_issues (issue_id, template_id, target, created_by, created_at)
        values ($1, $2, $3, $4, $5)
        """,
        issue_id, template_id, target, staff_id, now)
    issued, matched = await issue_to_members(
        conn, template_id=template_id, member_filter=member_filter, issue_id=issue_id,
        source="staff", campaign_id=None, now=now, tz=tz)
    skipped = (requested if requested is not None else matched) - issued
    await conn.execute("update coupon_issues set issued = $2, skipped = $3 where issue_id = $1",
                       issue_id, issued, skipped)
    return IssueResult(issue_id=issue_id, template_id=template_id, issued=issued,
                       skipped=skipped, created_at=now)


# -- the wallet ------------------------------------------------------------------------------

_WALLET_STATUS = """
case when mc.redeemed_at is not null then 'used'
     when not t.active or (mc.valid_until is not null and mc.valid_until <= $2) then 'expired'
     when mc.valid_from is not null and mc.valid_from > $2 then 'upcoming'
     else 'usable' end
"""


async def wallet(
    conn: Connection, member_id: UUID, *, status: WalletStatus | None, now: dt.datetime,
    limit: int, cursor: str | None,
) -> Page[WalletCoupon]:
    """The member's coupons, newest first; ``status`` narrows to usable, upcoming, used or
    expired (a coupon of a deactivated template counts as expired)."""
    rows = await conn.fetch(
        f"""
        select * from (
            select mc.coupon_id, mc.template_id, t.name, t.description, t.discount,
                   {_WALLET_STATUS} as status, mc.valid_from, mc.valid_until, t.min_spend,
                   t.stores, t.categories, t.stackable, mc.issued_at, mc.redeemed_at
              from member_coupons mc join coupon_templates t using (template_id)
             where mc.member_id = $1 and ($4::uuid is null or mc.coupon_id < $4)
        ) w
         where $3::text is null or w.status = $3
         order by w.coupon_id desc limit $5
        """,
        member_id, now, status, decode_cursor(cursor) if cursor else None, limit + 1)
    items = [msgspec.convert(dict(row), WalletCoupon) for row in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].coupon_id)
                if len(rows) > limit else None)


# -- at the till: which coupon is it, and does it apply --------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A coupon the till named, as found: a shared public code, a single-use code, or a
    wallet coupon, with its template."""

    kind: Literal["public", "code", "wallet"]
    code: str | None
    coupon_id: UUID | None
    template: Template
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    redeemed: bool
    owner: UUID | None
    campaign_id: UUID | None


_FIND = """
with wanted as (
    select * from unnest($1::int[], $2::text[], $3::uuid[]) as w(position, code, coupon_id)
), found as (
    select w.position,
           case when pub.template_id is not null then 'public'
                when c.code is not null then 'code'
                when mc.coupon_id is not null then 'wallet' end as kind,
           coalesce(pub.template_id, c.template_id, mc.template_id) as template_id,
           case when pub.template_id is not null then pub.valid_from
                when c.code is not null then c.valid_from else mc.valid_from end as valid_from,
           case when pub.template_id is not null then pub.valid_until
                when c.code is not null then c.valid_until else mc.valid_until end
               as valid_until,
           coalesce(c.redeemed_at, mc.redeemed_at) is not null as redeemed,
           mc.member_id as owner, mc.campaign_id
      from wanted w
      left join coupon_templates pub on pub.public_code = w.code
      left join coupon_codes c on c.code = w.code and pub.template_id is null
                               and ($4::bool[])[w.position + 1]
      left join member_coupons mc on mc.coupon_id = w.coupon_id
)
select f.*, t.template_id as t_template_id, t.name as t_name, t.discount as t_discount,
       t.min_spend as t_min_spend, t.stores as t_stores, t.categories as t_categories,
       t.per_member_limit as t_per_member_limit, t.total_limit as t_total_limit,
       t.redeemed_count as t_redeemed_count, t.stackable as t_stackable, t.active as t_active,
       t.on_return as t_on_return
  from found f join coupon_templates t on t.template_id = f.template_id
"""


def normalized_refs(refs: Sequence[CouponRef]) -> list[CouponRef]:
    """The refs as looked up: codes normalised (``CouponRef`` holds a code or a coupon id)."""
    out = []
    for ref in refs:
        out.append(CouponRef(code=normalize_code(ref.code)) if ref.code is not None else ref)
    return out


async def find_coupons(conn: Connection, refs: Sequence[CouponRef]) -> list[Candidate | None]:
    """What each (normalised) ref names, in one statement; None where nothing is found. A
    code whose check character fails is not looked up as a generated code: it was mistyped
    (it may still be a shared public code)."""
    if not refs:
        return []
    rows = await conn.fetch(
        _FIND, list(range(len(refs))), [r.code for r in refs], [r.coupon_id for r in refs],
        [r.code is not None and is_well_formed(r.code) for r in refs])
    found: list[Candidate | None] = [None] * len(refs)
    for row in rows:
        ref = refs[row["position"]]
        found[row["position"]] = Candidate(
            kind=row["kind"], code=ref.code, coupon_id=ref.coupon_id,
            template=_template_facts(row, "t_"), valid_from=row["valid_from"],
            valid_until=row["valid_until"], redeemed=row["redeemed"], owner=row["owner"],
            campaign_id=row["campaign_id"])
    return found


@dataclass(frozen=True)
class Checked:
    """A coupon's check against the basket, and what redeeming it would write."""

    check: CouponCheck
    candidate: Candidate | None

    @property
    def valid(self) -> bool:
        return self.check.valid


def _amount(line: PurchaseLine) -> int:
    return line.quantity * line.unit_price


def _money_off(template: Template, lines: list[PurchaseLine]) -> tuple[int | None, str]:
    """(discount, why) on the lines the template applies to; None with the reason when it
    cannot apply at all."""
    eligible = [line for line in lines
                if not template.categories or line.category in template.categories]
    base = sum(_amount(line) for line in eligible)
    match template.discount:
        case FreeItem(sku=sku):
            item = next((line for line in eligible if line.sku == sku), None)
            if item is None:
                return None, f"the basket holds no {sku}"
            return item.unit_price, f"one {sku} free"
        case PointsMultiplierDiscount(percent=percent):
            if not eligible:
                return None, "no line of the basket is in the coupon's categories"
            return 0, f"the purchase earns {percent}% of its base points"
        case FixedAmount(amount=amount):
            if base == 0:
                return None, "no line of the basket is in the coupon's categories"
            return min(amount, base), f"{amount} off"
        case PercentOff(percent=percent, cap=cap):
            if base == 0:
                return None, "no line of the basket is in the coupon's categories"
            off = base * percent // 100
            return (min(off, cap) if cap is not None else off), f"{percent}% off"
    raise AssertionError(f"unknown discount {template.discount!r}")


def check_coupons(
    refs: Sequence[CouponRef], candidates: Sequence[Candidate | None], *,
    lines: list[PurchaseLine], store_code: str, now: dt.datetime, member_id: UUID | None,
    usage: dict[UUID, int] | None,
) -> list[Checked]:
    """Each coupon against the basket, in order: valid with its discount, or the first
    reason it is not. ``usage`` counts the member's redemptions per template (None: the
    member is unknown, so per-member limits are not checked). Discounts together never
    exceed the basket."""
    verdicts: list[tuple[CouponReason | None, str]] = []
    seen: set[tuple[str | None, UUID | None]] = set()
    offs: list[int] = []
    for ref, candidate in zip(refs, candidates, strict=True):
        off = 0
        reason: CouponReason | None
        reason, detail = None, ""
        key = (ref.code, ref.coupon_id)
        if candidate is None:
            reason, detail = "unknown", (
                "no such coupon" if ref.coupon_id is not None or (ref.code and is_well_formed(
                    ref.code)) else "no such code: check it for a typo")
        elif candidate.kind == "wallet" and (member_id is None or candidate.owner != member_id):
            reason, detail = "unknown", ("identify the member to use a wallet coupon"
                                         if member_id is None else "no such coupon")
        elif key in seen and candidate.kind != "public":
            reason, detail = "already_used", "this coupon is listed twice"
        else:
            template = candidate.template
            if not template.active:
                reason, detail = "inactive", "this coupon has been withdrawn"
            elif candidate.valid_from is not None and now < candidate.valid_from:
                reason, detail = "not_yet_valid", \
                    f"usable from {candidate.valid_from.isoformat()}"
            elif candidate.valid_until is not None and now >= candidate.valid_until:
                reason, detail = "expired", f"expired at {candidate.valid_until.isoformat()}"
            elif candidate.redeemed:
                reason, detail = "already_used", "this coupon has been used"
            elif template.stores and store_code not in template.stores:
                reason, detail = "wrong_store", "not usable at this store"
            else:
                money, detail = _money_off(template, lines)
                eligible = sum(_amount(line) for line in lines if not template.categories
                               or line.category in template.categories)
                if money is None:
                    reason = "not_applicable"
                elif eligible < template.min_spend:
                    reason, detail = "below_minimum", (
                        f"needs a spend of {template.min_spend}; the basket has {eligible}")
                else:
                    off = money
        seen.add(key)
        verdicts.append((reason, detail))
        offs.append(off)

    # Combinations: a coupon that does not stack cannot go with any other valid one.
    valid = [i for i, (reason, _) in enumerate(verdicts) if reason is None]
    if len(valid) > 1:
        for i in valid:
            candidate = candidates[i]
            assert candidate is not None
            if not candidate.template.stackable:
                verdicts[i] = ("not_stackable", "cannot be combined with other coupons")

    # Limits count the coupons of a template this basket would redeem, in order.
    in_basket: Counter[UUID] = Counter()
    for i, (reason, _) in enumerate(verdicts):
        candidate = candidates[i]
        if reason is not None or candidate is None:
            continue
        template = candidate.template
        in_basket[template.template_id] += 1
        n = in_basket[template.template_id]
        if template.total_limit is not None and template.redeemed_count + n > \
                template.total_limit:
            verdicts[i] = ("limit_reached", "this coupon's budget is used up")
            in_basket[template.template_id] -= 1
        elif usage is not None and template.per_member_limit is not None and \
                usage.get(template.template_id, 0) + n > template.per_member_limit:
            verdicts[i] = ("limit_reached",
                           f"usable {template.per_member_limit} time(s) per member")
            in_basket[template.template_id] -= 1

    subtotal = sum(_amount(line) for line in lines)
    out = []
    for (ref, candidate), (reason, detail), off in zip(
            zip(refs, candidates, strict=True), verdicts, offs, strict=True):
        percent = None
        if reason is None:
            off = min(off, subtotal)
            subtotal -= off
            assert candidate is not None
            if isinstance(candidate.template.discount, PointsMultiplierDiscount):
                percent = candidate.template.discount.percent
        else:
            off = 0
        out.append(Checked(CouponCheck(
            valid=reason is None, reason=reason, detail=detail,
            code=ref.code, coupon_id=ref.coupon_id,
            template_id=candidate.template.template_id if candidate else None,
            name=candidate.template.name if candidate else None, discount=off,
            points_percent=percent), candidate))
    return out
