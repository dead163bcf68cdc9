"""Coupon templates (what a coupon gives, when and where it is valid, its budget) and batches of
generated single-use codes for a template.

Issuing a template into members' wallets is ``loyalty.promotions.coupon_wallet``; whether a
coupon applies at the till is ``loyalty.promotions.coupon_checks``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InvalidInput, NotFound
from loyalty.core.ids import uuid7
from loyalty.core.paging import decode_cursor, encode_cursor
from loyalty.promotions.codes import display, generate_codes, normalize_code
from schemas.base import Page
from schemas.coupons import (
    CodeBatch,
    CodeBatchSummary,
    CouponTemplate,
    CouponTemplateCreate,
    CouponTemplateUpdate,
    DaysAfterIssue,
    Discount,
    FixedWindow,
    Validity,
)

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
                """,  # noqa: S608 - a module constant column list
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
        f"select {_TEMPLATE_COLUMNS} from coupon_templates t where t.template_id = $1",  # noqa: S608 - a module constant column list
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
        """,  # noqa: S608 - a module constant column list
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
            f"update coupon_templates set {assignments}, updated_at = now()"  # noqa: S608 - column names are the update Struct's field names; values as parameters
            " where template_id = $1", template_id, *given.values())
    return await get_template(conn, template_id)


# -- generated codes -------------------------------------------------------------------------

# Validity of a coupon issued at $now from template t, for codes and wallets alike.
VALID_FROM_SQL = "case when t.valid_days is null then t.valid_from else {now} end"
VALID_UNTIL_SQL = ("case when t.valid_days is null then t.valid_until"
                   " else coupon_valid_until({now}, t.valid_days, {tz}) end")


async def active_template(conn: Connection, template_id: UUID) -> Any:
    """The template's row, refused when it is missing or deactivated (it issues nothing more)."""
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
    await active_template(conn, template_id)
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
"""  # noqa: S608 - constant validity snippets filled with $n placeholders


async def list_code_batches(
    conn: Connection, template_id: UUID, *, limit: int, cursor: str | None,
) -> Page[CodeBatchSummary]:
    """The template's code batches, newest first, without their codes."""
    rows = await conn.fetch(
        """
        select batch_id, template_id, count, prefix, created_at from coupon_code_batches
         where template_id = $1 and ($2::uuid is null or batch_id < $2)
         order by batch_id desc limit $3
        """,
        template_id, decode_cursor(cursor) if cursor else None, limit + 1)
    items = [CodeBatchSummary(batch_id=r["batch_id"], template_id=r["template_id"],
                              count=r["count"], prefix=r["prefix"], created_at=r["created_at"])
             for r in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].batch_id)
                if len(rows) > limit else None)


async def code_batch(conn: Connection, template_id: UUID, batch_id: UUID) -> CodeBatch:
    """One batch of the template with its codes, as they were handed out when it was made."""
    found = await conn.fetchval(
        "select true from coupon_code_batches where batch_id = $1 and template_id = $2",
        batch_id, template_id)
    if not found:
        raise NotFound("this template has no code batch with this id", field="batch_id",
                       code="code_batch_not_found")
    return await _batch(conn, batch_id)


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
