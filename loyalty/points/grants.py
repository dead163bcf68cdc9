"""Bulk points grants: the same points for every member of a list, a segment or a campaign's
treated group, once per member, written set-based in member-id batches that may stop and resume.

A grant is a ``point_grants`` row, made once (found again by its staff account's idempotency
key, so the retry of a request that died half-way resumes it), and its effect
is one ``earn`` entry per member carrying the grant's id: a unique index on (member_id, grant_id)
makes a second one impossible, whoever runs the grant and however often. Each batch is one
transaction: the grant's row is locked, so runners of one grant take turns and each batch starts
where the last committed one ended (``progress``); the batch's balance rows are locked in member
order, as every writer of many members does; then one statement writes every entry, lot and
balance of the batch and bumps each balance's version, so a purchase that read a member's ledger
before the grant writes again under the row lock (docs/decisions/0005-ledger-concurrency.md).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.access.audit import record_audit
from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput, NotFound
from loyalty.core.idempotency import Idempotency, check_same_request
from loyalty.core.ids import uuid7
from loyalty.core.normalize import normalize_text
from loyalty.core.outbox import API_VERSION
from loyalty.core.paging import newest_first
from loyalty.core.programme import Programme
from loyalty.members.filter import REACHABLE, MemberFilter
from loyalty.points.batches import credit_lots_and_balances, earned_events, lock_balances
from loyalty.points.earning import expires_at
from loyalty.points.rules import RuleBook
from loyalty.promotions.segments import segment_filter
from schemas.base import Page, decode_edge
from schemas.grants import (
    CampaignGrantTarget,
    GrantRequest,
    ListGrantTarget,
    PointsGrant,
    SegmentGrantTarget,
)

BATCH_SIZE = 5_000


@dataclass(frozen=True)
class MemberList:
    """Members named one by one, distinct and in id order: a batch is the next slice of it, so
    a long list is never sent to PostgreSQL whole for each batch."""

    member_ids: tuple[UUID, ...]

    @classmethod
    def of(cls, member_ids: Iterable[UUID]) -> MemberList:
        return cls(tuple(sorted(set(member_ids))))

    def after(self, member_id: UUID, limit: int) -> list[UUID]:
        """The next ``limit`` ids after ``member_id`` (PostgreSQL orders uuids as Python does:
        by their bytes)."""
        start = bisect.bisect_right(self.member_ids, member_id)
        return list(self.member_ids[start:start + limit])


# Who a grant goes to: a filter over ``members m`` (a segment, a campaign's treated group) or
# a list. Either way only REACHABLE members get anything.
Audience = MemberFilter | MemberList
Target = MemberList | SegmentGrantTarget | CampaignGrantTarget


class _StoredList(msgspec.Struct, tag="members", tag_field="kind"):
    member_ids: tuple[UUID, ...]


# -- making a grant --------------------------------------------------------------------------

_INSERT_GRANT = """
insert into point_grants (grant_id, idempotency_key, request_hash, points, reason, source,
                          staff_id, campaign_id, target, rule_version, expires_at,
                          members_listed, unknown_members, created_at)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
on conflict (staff_id, idempotency_key) do nothing
returning grant_id
"""

_UNKNOWN_MEMBERS = """
select count(*) from unnest($1::uuid[]) as listed(member_id)
 where not exists (select 1 from members m where m.member_id = listed.member_id)
"""


async def create_grant(
    conn: Connection, *, points: int, reason: str, target: Target, rulebook: RuleBook,
    programme: Programme, now: dt.datetime, staff_id: UUID | None = None,
    idempotency_key: str | None = None, request_hash: bytes | None = None,
) -> UUID | None:
    """Record a grant, not yet run; its lots will expire per the earning rules in force now.
    None when ``staff_id`` has already used ``idempotency_key``. A campaign's grant
    (``CampaignGrantTarget``) has no key: the campaign keeps the returned id and calls
    ``run_grant`` with it."""
    if points <= 0:
        raise ValueError("a grant needs a positive number of points")
    current = await conn.fetchval("select coalesce(max(version), 0) from earning_rule_versions")
    version, rules = await rulebook.at(conn, current)
    listed: int | None = None
    unknown = 0
    stored: Any = target
    if isinstance(target, MemberList):
        listed = len(target.member_ids)
        unknown = int(await conn.fetchval(_UNKNOWN_MEMBERS, list(target.member_ids)))
        stored = _StoredList(target.member_ids)
    campaign_id = target.campaign_id if isinstance(target, CampaignGrantTarget) else None
    grant_id: UUID | None = await conn.fetchval(
        _INSERT_GRANT,
        uuid7(), idempotency_key, request_hash, points, reason,
        "campaign" if campaign_id else "staff", staff_id, campaign_id, stored, version,
        expires_at(rules.expiry, now, programme.timezone), listed, unknown, now,
    )
    return grant_id


# -- running it ------------------------------------------------------------------------------

_LOCK_GRANT = """
select points, reason, source, staff_id, rule_version, expires_at, status, progress
  from point_grants where grant_id = $1
   for update
"""

_PICK = """
select m.member_id from members m
 where m.member_id > $1 and ({filter})
 order by m.member_id limit $2
"""

# From a snapshot taken after the locks: a member merged, erased or suspended meanwhile gets
# nothing, and one who has this grant's entry already gets nothing more.
_GRANT_BATCH = f"""
with due as materialized (
    select m.member_id, uuid_v7() as entry_id, uuid_v7() as lot_id
      from members m
     where m.member_id = any($1::uuid[]) and ({REACHABLE.render(12)})
       and not exists (select 1 from point_entries e
                        where e.member_id = m.member_id and e.grant_id = $2)
), entries as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source, staff_id,
                               rule_version, grant_id, created_at)
    select member_id, entry_id, 'earn', $3, $4, $5, $6, $7, $2, $9 from due
){credit_lots_and_balances(due="due", members="$1::uuid[]", points="$3", now="$9",
                           expires="$8")}{earned_events(due="due", points="$3::int8", now="$9",
                                                        expires="$8::timestamptz",
                                                        source="$5::text", reason="$4::text",
                                                        api_version="$11")}, counted as (
    select count(*) as members from due
), progress as (
    update point_grants g
       set members_granted = g.members_granted + c.members,
           points_granted = g.points_granted + c.members * $3, progress = $10
      from counted c where g.grant_id = $2
)
select members from counted
"""  # noqa: S608 - constant member filter and batch SQL, values as parameters

_FINISH = """
update point_grants set status = 'done', finished_at = $2 where grant_id = $1
"""


async def _pick(conn: Connection, audience: Audience, after: UUID, limit: int) -> list[UUID]:
    match audience:
        case MemberList():
            return audience.after(after, limit)
        case MemberFilter():
            reachable = REACHABLE & audience
            rows = await conn.fetch(_PICK.format(filter=reachable.render(3)), after, limit,
                                    *reachable.params)
            return [row["member_id"] for row in rows]


async def run_grant(
    conn: Connection, grant_id: UUID, audience: Audience, *, now: dt.datetime,
    batch_size: int = BATCH_SIZE, max_batches: int | None = None,
) -> bool:
    """Credit the grant's points to every reachable member of ``audience`` who does not have
    them yet, batch after batch from where the grant got to; True once it is done, False when
    stopped by ``max_batches``. Each batch is a transaction of its own: ``conn`` should not be
    inside one (if it is, the batches commit with it)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    batches = 0
    while max_batches is None or batches < max_batches:
        async with conn.transaction():
            grant = await conn.fetchrow(_LOCK_GRANT, grant_id)
            if grant is None:
                raise NotFound("no such grant", field="grant_id", code="grant_not_found")
            if grant["status"] == "done":
                return True
            members = await _pick(conn, audience, grant["progress"] or UUID(int=0), batch_size)
            if not members:
                await conn.execute(_FINISH, grant_id, now)
                return True
            # Only members whose balance row is locked are written (a listed id may be no one's).
            locked = await lock_balances(conn, members)
            await conn.execute(
                _GRANT_BATCH, locked, grant_id, grant["points"], grant["reason"],
                grant["source"], grant["staff_id"], grant["rule_version"], grant["expires_at"],
                now, members[-1], API_VERSION, *REACHABLE.params)
        batches += 1
    return False


# -- what staff call -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    grant_id: UUID
    created_at: dt.datetime
    done: bool


async def _grant_by_key(conn: Connection, staff_id: UUID, key: str,
                        request_hash: bytes) -> _Found | None:
    row = await conn.fetchrow(
        """
        select grant_id, request_hash, created_at, status = 'done' as done
          from point_grants where staff_id = $1 and idempotency_key = $2
        """,
        staff_id, key)
    if row is None:
        return None
    check_same_request(row["request_hash"], request_hash)
    return _Found(row["grant_id"], row["created_at"], row["done"])


async def _segment(conn: Connection, segment_id: UUID, created_at: dt.datetime) -> MemberFilter:
    # A segment's relative windows ("active in the last 30 days") are read as of the grant's
    # creation, on the first run and on any resumed one.
    return await segment_filter(conn, segment_id, now=created_at)


async def grant_points(
    conn: Connection, *, request: GrantRequest, idempotency: Idempotency, staff_id: UUID,
    rulebook: RuleBook, programme: Programme, now: dt.datetime, batch_size: int = BATCH_SIZE,
) -> tuple[PointsGrant, bool]:
    """Record the grant (audited) or find it by the staff account's key, then run it to the
    end: the same key and request again resume or replay it, never doubling. True when it
    existed already."""
    idempotency_key, request_hash = idempotency.key, idempotency.request_hash
    reason = normalize_text(request.reason)
    # The wire type counts characters before trimming: "   " must not pass as a reason.
    if len(reason) < 3:
        raise InvalidInput("give the reason in at least 3 characters", field="reason")
    listed = MemberList.of(request.members) if request.members is not None else None
    found = await _grant_by_key(conn, staff_id, idempotency_key, request_hash)
    existed = found is not None
    segment: MemberFilter | None = None
    if found is None:
        target: Target
        if listed is not None:
            target = listed
        else:
            assert request.segment_id is not None
            segment = await _segment(conn, request.segment_id, now)  # unknown: 404, nothing kept
            target = SegmentGrantTarget(segment_id=request.segment_id)
        async with conn.transaction():
            grant_id = await create_grant(
                conn, points=request.points, reason=reason, target=target, rulebook=rulebook,
                programme=programme, now=now, staff_id=staff_id,
                idempotency_key=idempotency_key, request_hash=request_hash)
            if grant_id is not None:
                await record_audit(
                    conn, actor_kind="staff", actor_id=staff_id, action="points.grant",
                    subject_kind="point_grant", subject_id=grant_id,
                    details={"points": request.points, "reason": reason,
                             "members": len(listed.member_ids) if listed else None,
                             "segment_id": request.segment_id})
        if grant_id is not None:
            found = _Found(grant_id, now, done=False)
        else:
            # An identical request recorded it first (the insert waited for it to commit).
            found = await _grant_by_key(conn, staff_id, idempotency_key, request_hash)
            assert found is not None
            existed, segment = True, None
    if not found.done:
        audience: Audience
        if listed is not None:
            audience = listed
        else:
            assert request.segment_id is not None
            audience = segment or await _segment(conn, request.segment_id, found.created_at)
        await run_grant(conn, found.grant_id, audience, now=now, batch_size=batch_size)
    return await get_grant(conn, found.grant_id), existed


# -- reading ---------------------------------------------------------------------------------

# A list's ids stay unread (up to 100,000 of them): its target is rebuilt from the counts.
_GRANT_COLUMNS = """
grant_id, status, points, reason, source, staff_id, expires_at, created_at, finished_at,
members_listed, unknown_members, members_granted, points_granted,
case when members_listed is null then target end as target
"""


def _grant(row: asyncpg.Record) -> PointsGrant:
    listed = row["members_listed"]
    skipped = None
    if listed is not None and row["status"] == "done":
        skipped = listed - row["unknown_members"] - row["members_granted"]
    target = ListGrantTarget(listed=listed) if listed is not None else msgspec.convert(
        row["target"], SegmentGrantTarget | CampaignGrantTarget, dec_hook=decode_edge)
    return PointsGrant(
        grant_id=row["grant_id"], status=row["status"], points=row["points"],
        reason=row["reason"], source=row["source"], target=target,
        members_granted=row["members_granted"], points_granted=row["points_granted"],
        unknown_members=row["unknown_members"], members_skipped=skipped,
        expires_at=row["expires_at"], created_at=row["created_at"],
        finished_at=row["finished_at"], staff_id=row["staff_id"],
    )


async def get_grant(conn: Connection, grant_id: UUID) -> PointsGrant:
    """One grant and how far it got."""
    row = await conn.fetchrow(
        f"select {_GRANT_COLUMNS} from point_grants where grant_id = $1", grant_id)  # noqa: S608 - a module constant column list
    if row is None:
        raise NotFound("no such grant", field="grant_id", code="grant_not_found")
    return _grant(row)


async def list_grants(
    conn: Connection, *, limit: int = 50, cursor: str | None = None,
) -> Page[PointsGrant]:
    """Grants newest first, one keyset page at a time."""
    return await newest_first(conn, table="point_grants", key="grant_id",
                              columns=_GRANT_COLUMNS, item=_grant, limit=limit, cursor=cursor)
