"""Importing members from CSV (docs/importing.md): each row normalised as the API normalises a
registration, then checked against the file and the database and inserted set-based, in file
order, in batches. A member is found again by ``external_id``, so a second run adds nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.core.normalize import (
    normalize_email,
    normalize_kana,
    normalize_name,
    normalize_phone,
    normalize_profile_text,
    normalize_text,
    search_key,
)
from loyalty.members.profiles import fill_member_skeletons
from loyalty.members.status_history import rebuild_status_history
from loyalty.ops.import_files import (
    CLOCK_SKEW,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DORMANCY_DAYS,
    DEFAULT_TIMEZONE,
    ExternalId,
    ImportSummary,
    Progress,
    forget_snapshots,
    import_session,
    prepare_report,
    record_rejections,
    stage_file,
    write_report,
)
from schemas.base import (
    BirthDate,
    Email,
    Instant,
    Name,
    Phone,
    PostalCode,
    ShortText,
)


class MemberRow(msgspec.Struct, forbid_unknown_fields=True):
    """One row of a members file; fields without a default are required columns."""

    external_id: ExternalId
    name: Name
    joined_at: Instant
    email: Email | None = None
    phone: Phone | None = None
    name_kana: ShortText | None = None
    birth_date: BirthDate | None = None
    postal_code: PostalCode | None = None


# -- members ----------------------------------------------------------------------------------

_MEMBER_STAGING = """
create temporary table import_members (
    seq          int not null,
    line         int not null,
    external_id  text not null,
    email        text,
    phone        text,
    name         text not null,
    name_kana    text not null,
    name_key     text not null,
    kana_key     text not null,
    birth_date   date,
    postal_code  text,
    joined_at    timestamptz not null
);
create temporary table import_members_checked (
    like import_members,
    present  boolean not null,
    reason   text
);
"""
_MEMBER_COLUMNS = ("seq", "line", "external_id", "email", "phone", "name", "name_kana",
                   "name_key", "kana_key", "birth_date", "postal_code", "joined_at")

# Which staged rows may be inserted. In order: a row that repeats the external id, e-mail or
# phone of an earlier row of the file is rejected (whether or not that row goes in, so a second
# run decides the same); a row whose external id is already a member's is present; a row whose
# e-mail or phone is another member's is rejected, not merged.
_CHECK_MEMBERS = """
insert into import_members_checked
select s.seq, s.line, s.external_id, s.email, s.phone, s.name, s.name_kana, s.name_key,
       s.kana_key, s.birth_date, s.postal_code, s.joined_at,
       s.first_by_id = s.line
           and exists (select 1 from members m where m.external_id = s.external_id),
       case
           when s.first_by_id < s.line
               then format('external_id %s is also on line %s', s.external_id, s.first_by_id)
           when s.email is not null and s.first_by_email < s.line
               then format('email is also on line %s', s.first_by_email)
           when s.phone is not null and s.first_by_phone < s.line
               then format('phone is also on line %s', s.first_by_phone)
           when exists (select 1 from members m where m.external_id = s.external_id)
               then null
           else coalesce(
               (select 'email belongs to member ' || m.member_number
                  from members m where m.email = s.email),
               (select 'phone belongs to member ' || m.member_number
                  from members m where m.phone = s.phone))
       end
  from (select i.*,
               min(i.line) over (partition by i.external_id) as first_by_id,
               min(i.line) over (partition by i.email) as first_by_email,
               min(i.line) over (partition by i.phone) as first_by_phone
          from import_members i) s
"""

# One batch, in file order. Any unique index may still refuse a row (a member signing up with
# that e-mail since the check): the row is left out, not the batch, and reported.
_INSERT_MEMBERS = """
with batch as (
    select * from import_members_checked where seq > $1 and seq <= $2
), inserted as (
    insert into members (external_id, email, phone, name, name_kana, name_key, kana_key,
                         birth_date, postal_code, joined_at, last_activity_at)
    select external_id, email, phone, name, name_kana, name_key, kana_key, birth_date,
           postal_code, joined_at, joined_at
      from batch
     where reason is null and not present
     order by seq
    on conflict do nothing
    returning member_id, external_id, joined_at
), balances as (
    insert into point_balances (member_id) select member_id from inserted
), raced as (
    insert into import_rejections (line, reason)
    select b.line, 'its external id, email or phone was taken during the import'
      from batch b
     where b.reason is null and not b.present
       and not exists (select 1 from inserted i where i.external_id = b.external_id)
    returning line
)
select (select count(*) from inserted) as inserted,
       (select coalesce(array_agg(member_id order by member_id), '{}') from inserted)
           as member_ids,
       (select coalesce(array_agg(joined_at order by member_id), '{}') from inserted)
           as joined,
       (select count(*) from batch where present) as present,
       (select count(*) from raced) as raced
"""


def _member_record(region: str, now: dt.datetime) -> Callable[[MemberRow], tuple[Any, ...]]:
    def record(row: MemberRow) -> tuple[Any, ...]:
        external_id = normalize_text(row.external_id)
        if not external_id:
            raise InvalidInput("required", field="external_id")
        if row.email is None and row.phone is None:
            raise InvalidInput("an email or a phone is required")
        email = normalize_email(row.email) if row.email is not None else None
        phone = normalize_phone(row.phone, region) if row.phone is not None else None
        name = normalize_name(row.name)
        kana = normalize_kana(row.name_kana or "")
        if row.joined_at > now + CLOCK_SKEW:
            raise InvalidInput("is in the future", field="joined_at")
        postal_code = (normalize_profile_text(row.postal_code, field="postal_code", max_length=16)
                       if row.postal_code else None)
        return (external_id, email, phone, name, kana, search_key(name), search_key(kana),
                row.birth_date, postal_code or None, row.joined_at)

    return record


async def import_members(
    conn: Connection, source: Path, *, report: Path | None = None, region: str = "JP",
    now: dt.datetime | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
    progress: TextIO | None = None, tz: ZoneInfo = DEFAULT_TIMEZONE,
    dormancy_days: int = DEFAULT_DORMANCY_DAYS,
) -> ImportSummary:
    """Add the members of a CSV file (docs/importing.md) not imported before, each with the
    status history their join date gives (dormant ``dormancy_days`` business days in ``tz``
    later, until a purchase is imported); report the rest."""
    now = now or dt.datetime.now(dt.UTC)
    report = prepare_report(source, report)
    async with import_session(conn, _MEMBER_STAGING):
        staged = await stage_file(conn, source, row_type=MemberRow, table="import_members",
                              table_columns=_MEMBER_COLUMNS,
                              to_record=_member_record(region, now),
                              batch_size=batch_size, progress=progress)
        checking = Progress("checking", staged.staged, progress)
        async with conn.transaction():
            await conn.execute(_CHECK_MEMBERS)
            await conn.execute("create index on import_members_checked (seq)")
            await conn.execute("analyze import_members_checked")
            rejected = await record_rejections(conn, "import_members_checked")
        checking.advance(staged.staged)
        checking.finish()
        inserted = present = raced = 0
        bar = Progress("writing", staged.staged, progress)
        for start in range(0, staged.staged, batch_size):
            async with conn.transaction():
                row = await conn.fetchrow(_INSERT_MEMBERS, start, start + batch_size)
                assert row is not None
                # Members who joined long ago went dormant long ago, unless their purchases
                # (imported next) say otherwise; the KPIs of the days since change.
                joined = dict(zip(row["member_ids"], row["joined"], strict=True))
                await rebuild_status_history(conn, joined, now=now, tz=tz,
                                             days=dormancy_days, reason="import")
                await forget_snapshots(conn, min(joined.values(), default=None), tz)
            inserted += row["inserted"]
            present += row["present"]
            raced += row["raced"]
            bar.advance(min(batch_size, staged.staged - start))
        bar.finish()
        await write_report(conn, source, report, staged.header)
    # The set-based insert leaves the look-alike keys (migration 0016) to the one function
    # that computes them.
    await fill_member_skeletons(conn, batch_size=batch_size)
    return ImportSummary(kind="members", read=staged.read, inserted=inserted, present=present,
                         rejected=staged.rejected + rejected + raced, report=report)
