"""Duplicate members: finding the likely ones, and merging one into another.

A merge moves points as transfers, never by rewriting history: the merged-away member's open
lots are drained by a transfer entry and re-created on the survivor with the same points,
expiry and release date; the survivor's history shows both members' entries. The merged-away
record stays as a pointer (status ``merged``, ``merged_into``).
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

import msgspec

from loyalty.access.audit import record_audit
from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InvalidInput, NotFound
from loyalty.core.ids import uuid7
from loyalty.members.profiles import MEMBER_COLUMNS, forget_scores_if_withdrawn, get_member
from loyalty.points.ledger import MERGE_HOPS, apply_posting, read_member_ledger
from loyalty.points.posting import Links, Posting
from schemas.members import DuplicateGroup, Member
from schemas.outbox import EventBalance, MemberMergedData

# Which members look like the same person, and why. Contacts are unique already; these catch
# the same person registered twice with different contacts.
_DUPLICATES = """
with candidates as (
    select 'same name and birth date' as reason, array_agg(member_id order by member_id) as ids
      from members
     where status in ('active', 'dormant', 'suspended') and birth_date is not null
     group by name_key, birth_date having count(*) > 1
    union all
    select 'same reading and birth date', array_agg(member_id order by member_id)
      from members
     where status in ('active', 'dormant', 'suspended') and birth_date is not null
       and kana_key <> ''
     group by kana_key, birth_date having count(*) > 1
    union all
    select 'same name and postal code', array_agg(member_id order by member_id)
      from members
     where status in ('active', 'dormant', 'suspended') and postal_code is not null
     group by name_key, postal_code having count(*) > 1
    union all
    -- taro+shop@example.com and taro@example.com reach the same mailbox.
    select 'same mailbox', array_agg(member_id order by member_id)
      from members
     where status in ('active', 'dormant', 'suspended') and email is not null
     group by regexp_replace(email, '\\+[^@]*@', '@') having count(*) > 1
    union all
    -- Different e-mails that look the same (Unicode TR39 skeletons, migration 0016):
    -- taro@demo.example, and the same with a Cyrillic а.
    select 'look-alike e-mail', array_agg(member_id order by member_id)
      from members
     where status in ('active', 'dormant', 'suspended') and email_skeleton is not null
     group by email_skeleton having count(*) > 1
    union all
    -- Names written differently that look the same: 田口 and 田ロ (katakana ro), Latin and
    -- Cyrillic letters mixed. Members who share one name are the rules above (with a birth date
    -- or a postal code), not this one.
    select 'look-alike name', array_agg(member_id order by member_id)
      from members
     where status in ('active', 'dormant', 'suspended') and name_skeleton is not null
     group by name_skeleton having count(distinct name_key) > 1
), firsts as (
    -- A page holds every group of the members it covers: the cursor is a member id.
    select distinct ids[1] as first from candidates
     where $1::uuid is null or ids[1] > $1
     order by first
     limit $2
)
select reason, ids from candidates
 where ids[1] in (select first from firsts)
 order by ids[1], reason
"""


# Each member named, by id or number, and the member it stands for now: the last of its merges,
# followed as far as the ledger reads follow them.
_SURVIVORS = """
with recursive chain (named, number, member_id, merged_into, hops) as (
    select m.member_id, m.member_number, m.member_id, m.merged_into, 0 from members m
     where m.member_id = any($1::uuid[]) or m.member_number = any($2::text[])
    union all
    select c.named, c.number, m.member_id, m.merged_into, c.hops + 1
      from chain c join members m on m.member_id = c.merged_into
     where c.hops < $3
)
select distinct on (named) named, number, member_id from chain order by named, hops desc
"""


async def survivors(conn: Connection, *, ids: list[UUID],
                    numbers: list[str]) -> dict[UUID | str, UUID]:
    """The member each of ``ids`` and ``numbers`` stands for now, by the id or number: itself,
    or the member it was merged into. Ones that name no member are left out."""
    found: dict[UUID | str, UUID] = {}
    for row in await conn.fetch(_SURVIVORS, ids, numbers, MERGE_HOPS):
        found[row["named"]] = found[row["number"]] = row["member_id"]
    return found


async def find_duplicates(
    conn: Connection, *, limit: int = 50, after: UUID | None = None
) -> tuple[list[DuplicateGroup], UUID | None]:
    """Groups of members that may be one person, by the first member id of each group:
    ``limit`` such members a page, each with all of their groups."""
    rows = await conn.fetch(_DUPLICATES, after, limit + 1)
    firsts = list(dict.fromkeys(row["ids"][0] for row in rows))
    rows = [row for row in rows if row["ids"][0] in firsts[:limit]]
    ids = sorted({member_id for row in rows for member_id in row["ids"]})
    members = {
        row["member_id"]: msgspec.convert(dict(row), Member)
        for row in await conn.fetch(
            f"select {MEMBER_COLUMNS} from members where member_id = any($1::uuid[])", ids)  # noqa: S608 - a module constant column list
    }
    groups = [DuplicateGroup(reason=row["reason"], members=[members[i] for i in row["ids"]])
              for row in rows]
    next_after = firsts[limit - 1] if len(firsts) > limit else None
    return groups, next_after


# The rules of _DUPLICATES, for one member: who shares each with them. Each arm reads the
# member's own keys first, so it looks up equal keys rather than grouping every member; each
# condition is written as its index is (migrations 0016 and 0027), so each arm reads an index.
_DUPLICATES_OF = """
with me as (
    select * from members where member_id = $1
), alike as (
    select 'same name and birth date' as reason, m.member_id
      from members m, me
     where me.birth_date is not null and m.birth_date = me.birth_date
       and m.name_key = me.name_key
    union all
    select 'same reading and birth date', m.member_id
      from members m, me
     where me.birth_date is not null and me.kana_key <> '' and m.birth_date = me.birth_date
       and m.kana_key <> '' and m.kana_key = me.kana_key
    union all
    select 'same name and postal code', m.member_id
      from members m, me
     where me.postal_code is not null and m.postal_code = me.postal_code
       and m.name_key = me.name_key
    union all
    select 'same mailbox', m.member_id
      from members m, me
     where me.email is not null and m.email is not null
       and regexp_replace(m.email, '\\+[^@]*@', '@') = regexp_replace(me.email, '\\+[^@]*@', '@')
    union all
    select 'look-alike e-mail', m.member_id
      from members m, me
     where me.email_skeleton is not null and m.email_skeleton = me.email_skeleton
    union all
    select 'look-alike name', m.member_id
      from members m, me
     where me.name_skeleton is not null and m.name_skeleton = me.name_skeleton
       and m.name_key <> me.name_key
)
select a.reason, array_agg(a.member_id order by a.member_id) as ids
  from alike a join members m on m.member_id = a.member_id, me
 where a.member_id <> $1 and m.status in ('active', 'dormant', 'suspended')
   and me.status in ('active', 'dormant', 'suspended')
 group by a.reason
 order by a.reason
"""


async def duplicates_of(conn: Connection, member_id: UUID) -> list[DuplicateGroup]:
    """The groups of ``find_duplicates`` this member belongs to, by the same rules: each
    reason with the member first, then the others who share it."""
    rows = await conn.fetch(_DUPLICATES_OF, member_id)
    ids = sorted({member_id} | {other for row in rows for other in row["ids"]})
    members = {
        row["member_id"]: msgspec.convert(dict(row), Member)
        for row in await conn.fetch(
            f"select {MEMBER_COLUMNS} from members where member_id = any($1::uuid[])", ids)  # noqa: S608 - a module constant column list
    }
    return [DuplicateGroup(reason=row["reason"],
                           members=[members[member_id], *(members[i] for i in row["ids"])])
            for row in rows]


async def merge_members(
    conn: Connection, *, survivor_id: UUID, merged_id: UUID, staff_id: UUID, now: dt.datetime,
) -> Member:
    """Merge ``merged_id`` into ``survivor_id``: points, lifetime totals and consents move; the
    merged member can no longer sign in and answers with a pointer to the survivor."""
    if survivor_id == merged_id:
        raise InvalidInput("a member cannot be merged into themselves", field="from_member_id")
    async with conn.transaction():
        # Both balance rows locked in member order, as every multi-member writer does.
        locked = await conn.fetch(
            "select member_id from point_balances where member_id = any($1::uuid[])"
            " order by member_id for update",
            [survivor_id, merged_id])
        if len(locked) != 2:
            raise NotFound("no such member", field="member_id", code="member_not_found")
        survivor = await read_member_ledger(conn, survivor_id)
        merged = await read_member_ledger(conn, merged_id)
        if survivor.member_id != survivor_id or merged.member_id != merged_id:
            raise Conflict("one of these members is already merged", code="already_merged")

        outgoing = Posting(merged, now)
        incoming = Posting(survivor, now)
        moved = outgoing.drain(
            kind="transfer", reason=f"Points moved to member {survivor.member_number}",
            source="merge", links=Links(related_member_id=survivor_id, staff_id=staff_id))
        total = sum(lot.remaining for lot in moved)
        in_entry = uuid7()
        for lot in moved:
            incoming.earn(kind="transfer", points=lot.remaining,
                          reason=f"Points of merged member {merged.member_number}",
                          source="merge", links=Links(related_member_id=merged_id,
                                                      staff_id=staff_id),
                          earned_at=lot.earned_at, available_at=lot.available_at,
                          expires_at=lot.expires_at,
                          origin_lot_id=lot.origin_lot_id or lot.lot_id, entry_id=in_entry)
        # Lifetime totals and purchase count follow the person, so bonuses stay right.
        incoming.earned += merged.lifetime_earned
        incoming.redeemed += merged.lifetime_redeemed
        incoming.expired += merged.lifetime_expired + outgoing.expired
        incoming.purchases += merged.purchase_count
        incoming.emit("member.merged", MemberMergedData(
            member_id=survivor_id, member_number=survivor.member_number,
            merged_member_id=merged_id, merged_member_number=merged.member_number,
            points_moved=total,
            balance=EventBalance(available=incoming.available, pending=incoming.pending)))
        await apply_posting(conn, outgoing)
        await apply_posting(conn, incoming)

        # The status history (migration 0010) records the change; this says why.
        await conn.execute("select set_config('loyalty.status_reason', 'merge', true)")
        await conn.execute(
            """
            update members set status = 'merged', merged_into = $2, status_changed_at = $3,
                               updated_at = $3
             where member_id = $1
            """,
            merged_id, survivor_id, now)
        # A consent the survivor was never asked about takes the merged member's answer.
        await conn.execute(
            """
            insert into member_consents (member_id, purpose, granted, text_version, channel,
                                         actor_kind, actor_id, recorded_at)
            select $1, c.purpose, c.granted, c.text_version, 'staff', 'staff', $3, $4
              from (select distinct on (purpose) purpose, granted, text_version
                      from member_consents where member_id = $2
                     order by purpose, recorded_at desc, consent_id desc) c
             where not exists (select 1 from member_consents s
                                where s.member_id = $1 and s.purpose = c.purpose)
            """,
            survivor_id, merged_id, staff_id, now)
        # A withdrawal of data_analysis taken over so is the survivor's now, scores and all.
        await forget_scores_if_withdrawn(conn, survivor_id)
        # Unused wallet coupons move too, except a second one from an issue the survivor
        # already had a coupon of: one person, one coupon per issue.
        await conn.execute(
            """
            update member_coupons c set member_id = $1
             where c.member_id = $2 and c.redeemed_at is null
               and not exists (select 1 from member_coupons s
                                where s.member_id = $1 and s.issue_id = c.issue_id)
            """,
            survivor_id, merged_id)
        await conn.execute(
            "update refresh_tokens set revoked_at = $2 where member_id = $1 and revoked_at is null",
            merged_id, now)
        await record_audit(conn, actor_kind="staff", actor_id=staff_id, action="members.merge",
                           subject_kind="member", subject_id=survivor_id,
                           details={"merged": str(merged_id), "points": total})
    return await get_member(conn, survivor_id)

