"""A member's data export (GDPR art. 15 and 20, APPI art. 33): everything held about them, as
one JSON document written section by section (schemas.members.MemberExport).

The document is produced as bytes while it is read: each section's rows come from a server-side
cursor, encoded a batch at a time, so a member with 100,000 ledger entries never has them all
in memory at once. Every section is read in one REPEATABLE READ, read-only transaction, so the
document is one consistent snapshot: a purchase recorded meanwhile is in all of its sections
or in none.

``EXPORTED_TABLES`` says which section holds each table with a ``member_id`` column;
docs/privacy.md gives the reason for each one left out, and tests/api/test_member_export.py
holds the two against the database's catalogue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from loyalty.core.db import Connection
from loyalty.promotions.segments import segment_filter
from schemas.base import json_encoder
from schemas.members import EXPORT_FORMAT, EXPORT_FORMAT_VERSION

# Rows fetched from the server at a time, and bytes gathered before they are handed on.
PREFETCH = 1_000
CHUNK_BYTES = 64 * 1024

RowSource = Callable[[Connection, UUID, dt.datetime], AsyncIterator[dict[str, Any]]]


@dataclass(frozen=True)
class Part:
    """One section of the document: ``key`` in its parent, the tables it reads (those with a
    ``member_id``), and its rows: ``sql`` with the member as ``$1``, or ``rows`` computed.
    ``single``: an object (or null) rather than a list."""

    key: str
    tables: tuple[str, ...] = ()
    sql: str = ""
    single: bool = False
    rows: RowSource | None = None


@dataclass(frozen=True)
class Group:
    """A section made of parts: an object with one key per part."""

    key: str
    parts: tuple[Part, ...]


async def _segments(conn: Connection, member_id: UUID,
                    now: dt.datetime) -> AsyncIterator[dict[str, Any]]:
    """The saved segments the member is in now: each definition evaluated for them alone."""
    async for segment in conn.cursor(
            "select segment_id, name from segments order by name, segment_id",
            prefetch=PREFETCH):
        member_filter = await segment_filter(conn, segment["segment_id"], now=now)
        inside = await conn.fetchval(
            f"""
            select exists (select from members m where m.member_id = $1
                                                   and ({member_filter.render(2)}))
            """,  # noqa: S608 - a MemberFilter rendered with $n slots
            member_id, *member_filter.params)
        if inside:
            yield {"segment_id": segment["segment_id"], "name": segment["name"]}


_PROFILE = """
    member_id, member_number, name, name_kana, email, phone, birth_date, postal_code, attributes,
    external_id, status, status_changed_at, joined_at, last_activity_at, updated_at, merged_into,
    password_hash is not null as has_password
"""

EXPORT: tuple[Part | Group, ...] = (
    Part("profile", ("members",), f"select {_PROFILE} from members where member_id = $1",  # noqa: S608 - a module constant column list
         single=True),
    # The same person's records merged into this one (and those merged into them), which keep
    # their own contact details as a redirect does.
    Part("merged_records", ("members",), f"""
        with recursive merged as (
            select member_id from members where merged_into = $1
            union
            select m.member_id from members m join merged on m.merged_into = merged.member_id
        )
        select {_PROFILE} from members where member_id in (select member_id from merged)
         order by status_changed_at, member_id
        """),  # noqa: S608 - a module constant column list
    Group("consents", (
        Part("current", ("member_consents",), """
            select distinct on (purpose) purpose, granted, text_version, channel, actor_kind,
                   actor_id, recorded_at
              from member_consents where member_id = $1
             order by purpose, recorded_at desc, consent_id desc
            """),
        Part("history", ("member_consents",), """
            select consent_id, purpose, granted, text_version, channel, actor_kind, actor_id,
                   recorded_at
              from member_consents where member_id = $1 order by recorded_at, consent_id
            """),
    )),
    Group("points", (
        Part("balance", ("point_balances",), """
            select available, pending, lifetime_earned, lifetime_redeemed, lifetime_expired,
                   purchase_count, tier, tier_since, birthday_bonus_year, updated_at
              from point_balances where member_id = $1
            """, single=True),
        Part("entries", ("point_entries",), """
            select entry_id, created_at, kind, amount, reason, source, purchase_id, return_id,
                   action_id, grant_id, staff_id, related_member_id, rule_version, trace
              from point_entries where member_id = $1 order by created_at, entry_id
            """),
        Part("lots", ("point_lots",), """
            select lot_id, entry_id, points, remaining, earned_at, available_at, released_at,
                   expires_at, origin_lot_id
              from point_lots where member_id = $1 order by earned_at, lot_id
            """),
        Part("allocations", ("point_allocations",), """
            select entry_id, lot_id, points
              from point_allocations where member_id = $1 order by entry_id, lot_id
            """),
        Part("expiry_reminders", ("expiry_reminders",), """
            select expires_on, sent_at from expiry_reminders where member_id = $1
             order by expires_on
            """),
    )),
    Part("purchases", ("purchases",), """
        select p.purchase_id, p.occurred_at, s.code as store_code, s.name as store_name,
               p.receipt_id, p.currency, p.total, p.lines, p.points_earned, p.points_redeemed,
               p.returned_amount, p.rule_version, p.recorded_at
          from purchases p join stores s using (store_id)
         where p.member_id = $1 order by p.occurred_at, p.purchase_id
        """),
    Part("returns", ("purchase_returns",), """
        select return_id, purchase_id, recorded_at, amount, lines, points_reversed,
               points_restored, points_shortfall, points_not_restored
          from purchase_returns where member_id = $1 order by recorded_at, return_id
        """),
    Part("actions", ("member_actions",), """
        select action_id, action, target, business_date, points, recorded_at
          from member_actions where member_id = $1 order by recorded_at, action_id
        """),
    Group("coupons", (
        Part("wallet", ("member_coupons",), """
            select c.coupon_id, c.template_id, t.name, c.source, c.campaign_id, c.issued_at,
                   c.valid_from, c.valid_until, c.redeemed_at, c.purchase_id
              from member_coupons c join coupon_templates t using (template_id)
             where c.member_id = $1 order by c.issued_at, c.coupon_id
            """),
        Part("redemptions", ("coupon_redemptions",), """
            select r.redemption_id, r.template_id, t.name, r.code, r.coupon_id, r.purchase_id,
                   r.discount, r.campaign_id, r.redeemed_at, r.reinstated_at
              from coupon_redemptions r join coupon_templates t using (template_id)
             where r.member_id = $1 order by r.redeemed_at, r.redemption_id
            """),
        Part("codes", ("coupon_codes",), """
            select c.code, c.template_id, t.name, c.redeemed_at, c.purchase_id
              from coupon_codes c join coupon_templates t using (template_id)
             where c.member_id = $1 order by c.redeemed_at, c.code
            """),
    )),
    Part("tier_history", ("member_tiers",), """
        select change_id, changed_at, from_tier, to_tier, reason, measure, purchase_id, coupon_id
          from member_tiers where member_id = $1 order by changed_at, change_id
        """),
    Group("events", (
        Part("invitations", ("event_invitations",), """
            select i.event_id, e.name, e.starts_at, i.campaign_id, i.invited_at
              from event_invitations i join events e using (event_id)
             where i.member_id = $1 order by i.invited_at, i.event_id
            """),
        Part("reservations", ("event_reservations",), """
            select r.event_id, e.name, e.starts_at, r.reserved_at, r.cancelled_at
              from event_reservations r join events e using (event_id)
             where r.member_id = $1 order by r.reserved_at, r.event_id
            """),
        Part("checkins", ("event_checkins",), """
            select c.event_id, e.name, s.code as store_code, c.points, c.checked_in_at
              from event_checkins c join events e using (event_id) join stores s
                on s.store_id = c.store_id
             where c.member_id = $1 order by c.checked_in_at, c.event_id
            """),
    )),
    Part("segments", rows=_segments),
    Part("campaigns", ("campaign_members",), """
        select cm.campaign_id, c.name, cm.arm, cm.status_at_launch, cm.messaged, c.launched_at
          from campaign_members cm join campaigns c using (campaign_id)
         where cm.member_id = $1 order by c.launched_at, cm.campaign_id
        """),
    Group("scores", (
        Part("rfm", ("member_rfm",), """
            select last_purchase_at, recency_days, frequency, monetary, recency_score,
                   frequency_score, monetary_score, window_days, computed_at
              from member_rfm where member_id = $1
            """, single=True),
        Part("at_risk", ("member_at_risk",), """
            select flagged_at, last_purchase_at, purchases, typical_interval_days, days_since,
                   as_of
              from member_at_risk where member_id = $1
            """, single=True),
        Part("churn", ("member_churn_scores",), """
            select method, p_alive, expected_purchases_90d, predicted_value_12m, scored_at
              from member_churn_scores where member_id = $1
            """, single=True),
    )),
    Part("birthday_rewards", ("birthday_rewards",), """
        select year, birthday, rewarded_at, points, entry_id, coupon_id
          from birthday_rewards where member_id = $1 order by year
        """),
    Part("status_history", ("member_status_changes",), """
        select changed_at, from_status, to_status, reason, campaign_id
          from member_status_changes where member_id = $1 order by changed_at, change_id
        """),
    # Never the token's hash: a session is described, not handed over.
    Part("sessions", ("refresh_tokens",), """
        select family_id as session_id, session_started_at, issued_at, expires_at, used_at,
               revoked_at
          from refresh_tokens where member_id = $1 order by issued_at, family_id
        """),
    # Never a token's or a code's hash: what was asked and when, not the secret.
    Part("password_resets", ("member_password_resets",), """
        select reset_id, channel, requested_at, expires_at, used_at
          from member_password_resets where member_id = $1 order by requested_at, reset_id
        """),
    Part("verification_codes", ("member_verification_codes",), """
        select channel, attempts, created_at, expires_at
          from member_verification_codes where member_id = $1 order by channel
        """),
    Part("erasure_requests", ("member_erasures",), """
        select erasure_id, requested_at, due_at, requested_by_kind, cancelled_at,
               cancelled_by_kind, erased_at
          from member_erasures where member_id = $1 order by requested_at, erasure_id
        """),
    Part("integration_events", ("outbox",), """
        select event_id, type, occurred_at, data from outbox
         where member_id = $1 order by seq
        """),
    # Who acted, never where from (a staff member's address is theirs, not the member's), and
    # no details (a row's details may hold what a search was for).
    Part("staff_access", (), """
        select a.recorded_at, a.actor_kind, a.actor_id, s.role, st.code as store_code, a.action
          from audit_log a
          left join staff s on a.actor_kind = 'staff' and s.staff_id = a.actor_id
          left join terminals t on a.actor_kind = 'terminal' and t.terminal_id = a.actor_id
          left join stores st on st.store_id = t.store_id
         where a.subject_kind = 'member' and a.subject_id = $1
           and a.actor_kind in ('staff', 'terminal')
         order by a.recorded_at, a.audit_id
        """),
)


def _tables(sections: tuple[Part | Group, ...]) -> dict[str, tuple[str, ...]]:
    where: dict[str, tuple[str, ...]] = {}
    for section in sections:
        parts = section.parts if isinstance(section, Group) else (section,)
        for part in parts:
            path = part.key if part is section else f"{section.key}.{part.key}"
            for table in part.tables:
                where[table] = (*where.get(table, ()), path)
    return where


# Each table with a member_id column that the export reads, and the sections (dotted paths in
# the document: ``points.entries``) that hold its rows.
EXPORTED_TABLES: dict[str, tuple[str, ...]] = _tables(EXPORT)


def _key(name: str) -> bytes:
    return json_encoder.encode(name) + b":"


async def _rows(conn: Connection, part: Part, member_id: UUID,
                now: dt.datetime) -> AsyncIterator[dict[str, Any]]:
    if part.rows is not None:
        async for row in part.rows(conn, member_id, now):
            yield row
        return
    async for record in conn.cursor(part.sql, member_id, prefetch=PREFETCH):
        yield dict(record)


async def _write_part(conn: Connection, part: Part, member_id: UUID,
                      now: dt.datetime) -> AsyncIterator[bytes]:
    if part.single:
        record = await conn.fetchrow(part.sql, member_id)
        yield json_encoder.encode(dict(record) if record is not None else None)
        return
    yield b"["
    separator = b""
    async for row in _rows(conn, part, member_id, now):
        yield separator + json_encoder.encode(row)
        separator = b","
    yield b"]"


async def _document(conn: Connection, member_id: UUID,
                    now: dt.datetime) -> AsyncIterator[bytes]:
    header = {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION,
              "exported_at": now, "member_id": member_id}
    yield json_encoder.encode(header)[:-1]
    for section in EXPORT:
        yield b"," + _key(section.key)
        if isinstance(section, Part):
            async for piece in _write_part(conn, section, member_id, now):
                yield piece
            continue
        yield b"{"
        for n, part in enumerate(section.parts):
            yield (b"," if n else b"") + _key(part.key)
            async for piece in _write_part(conn, part, member_id, now):
                yield piece
        yield b"}"
    yield b"}"


async def export_member(conn: Connection, member_id: UUID, *,
                        now: dt.datetime) -> AsyncGenerator[bytes, None]:
    """The member's export document as consecutive pieces of UTF-8 JSON of about
    ``CHUNK_BYTES`` each, read in one snapshot on ``conn`` (which must not be in a transaction:
    this opens its own). A caller that stops early closes it (``contextlib.aclosing``) before
    it lets the connection go, so that the transaction ends there and then."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        chunk = bytearray()
        async for piece in _document(conn, member_id, now):
            chunk += piece
            if len(chunk) >= CHUNK_BYTES:
                yield bytes(chunk)
                chunk.clear()
        yield bytes(chunk)
