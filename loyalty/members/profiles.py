"""Members: registration, profile, consents and staff search."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import Conflict, InvalidInput, LoyaltyError, NotFound
from loyalty.core.normalize import (
    looks_like_phone,
    normalize_email,
    normalize_kana,
    normalize_name,
    normalize_phone,
    normalize_profile_text,
    normalize_text,
    search_key,
    skeleton,
)
from loyalty.core.outbox import emit
from loyalty.core.paging import decode_cursor, encode_cursor
from loyalty.members.filter import analysis_allowed
from schemas.base import Page
from schemas.members import (
    Consent,
    ConsentChoice,
    Consents,
    Member,
    MemberProfileUpdate,
    MemberRegistration,
)
from schemas.outbox import MemberRegisteredData, MemberUpdatedData

MEMBER_COLUMNS = """
    member_id, member_number, name, name_kana, email, phone, birth_date, postal_code,
    attributes, status, joined_at, last_activity_at, merged_into,
    email_verified_at is not null as email_verified, phone_verified_at is not null as phone_verified
"""
# Unique indexes whose violation means "someone already has this".
_TAKEN = {"members_email": ("email", "email_taken"), "members_phone": ("phone", "phone_taken")}


def _member(row: Any) -> Member:
    return msgspec.convert(dict(row), Member, from_attributes=False)


def _raise_taken(exc: asyncpg.UniqueViolationError) -> None:
    field, code = _TAKEN.get(exc.constraint_name or "", (None, None))
    if code is None:
        raise exc
    raise Conflict(f"this {field} belongs to another member", field=field, code=code) from None


def _postal_code(value: str) -> str:
    return normalize_profile_text(value, field="postal_code", max_length=16)


def _normalized_contact(email: str | None, phone: str | None, region: str) -> tuple[
    str | None, str | None
]:
    return (
        normalize_email(email) if email is not None else None,
        normalize_phone(phone, region) if phone is not None else None,
    )


def check_member_attributes(attributes: Mapping[str, object], editable: Collection[str]) -> None:
    """Refuse an attribute a member may not set on themselves: segments select on attributes,
    so only the keys the programme declares (``LOYALTY_MEMBER_ATTRIBUTES``) are theirs."""
    for key in sorted(attributes):
        if key not in editable:
            allowed = ", ".join(sorted(editable)) or "none"
            raise InvalidInput(
                f"the attribute {key!r} can only be set by staff (attributes you may set:"
                f" {allowed}); leave it out", field="attributes", code="attribute_not_editable")


_REGISTER = f"""
with member as (
    insert into members (email, phone, password_hash, name, name_kana, name_key, kana_key,
                         birth_date, postal_code, attributes, email_skeleton, name_skeleton)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    returning {MEMBER_COLUMNS}
), balance as (
    insert into point_balances (member_id) select member_id from member
)
select * from member
"""  # noqa: S608 - a module constant column list
# Member numbers are drawn at random (migration 0016): a clash is one in ten thousand at ten
# million members, two in a row practically never.
_NUMBER_DRAWS = 3


async def register_member(
    conn: Connection, registration: MemberRegistration, *, password_hash: str, region: str,
    member_attributes: Collection[str] = (),
) -> Member:
    """Create a member from normalised input; a taken e-mail or phone is a Conflict.
    ``member_attributes``: the attribute keys a member may set (the sign-up is theirs)."""
    check_member_attributes(registration.attributes, member_attributes)
    email, phone = _normalized_contact(registration.email, registration.phone, region)
    if email is None and phone is None:
        raise InvalidInput("an e-mail address or a phone number is required", field="email")
    name = normalize_name(registration.name)
    kana = normalize_kana(registration.name_kana or "")
    name_key = search_key(name)
    values = (
        email, phone, password_hash, name, kana, name_key, search_key(kana),
        registration.birth_date,
        _postal_code(registration.postal_code) if registration.postal_code else None,
        # null is "no value": nothing to store.
        {k: v for k, v in registration.attributes.items() if v is not None},
        skeleton(email) if email is not None else None, skeleton(name_key),
    )
    for attempt in range(_NUMBER_DRAWS):
        try:
            async with conn.transaction():
                row = await conn.fetchrow(_REGISTER, *values)
                assert row is not None
                await emit(conn, "member.registered", msgspec.convert(
                    dict(row), MemberRegisteredData, from_attributes=False),
                    member_id=row["member_id"], occurred_at=row["joined_at"])
            break
        except asyncpg.UniqueViolationError as exc:
            # Another sign-up drew the same random member number at the same moment.
            if exc.constraint_name == "members_member_number_key" and attempt + 1 < _NUMBER_DRAWS:
                continue
            _raise_taken(exc)
    member = _member(row)
    if registration.consents:
        await record_consents(conn, member.member_id, registration.consents, actor_kind="member",
                              actor_id=member.member_id)
    return member


async def get_member(conn: Connection, member_id: UUID) -> Member:
    row = await conn.fetchrow(
        f"select {MEMBER_COLUMNS} from members where member_id = $1", member_id  # noqa: S608 - a module constant column list
    )
    if row is None:
        raise NotFound("no such member")
    return _member(row)


async def update_member(
    conn: Connection, member_id: UUID, changes: MemberProfileUpdate, *, region: str,
    member_attributes: Collection[str] | None = None,
) -> Member:
    """Apply the fields present in ``changes`` (normalised); returns the member as stored.
    ``member_attributes``: for a member's change of their own record, the attribute keys they
    may set; None for staff, who may set any.

    ``attributes`` is merged key by key: a key given a value is set, a key given null is
    removed, keys not sent stay as they are (so staff's attributes outlive a member's change
    of their own)."""
    values: dict[str, Any] = {}
    for field in changes.__struct_fields__:
        value = getattr(changes, field)
        if value is msgspec.UNSET:
            continue
        match field:
            case "name":
                values["name"] = normalize_name(value)
                values["name_key"] = search_key(values["name"])
                values["name_skeleton"] = skeleton(values["name_key"])
            case "name_kana":
                values["name_kana"] = normalize_kana(value or "")
                values["kana_key"] = search_key(values["name_kana"])
            case "email":
                values["email"] = normalize_email(value) if value is not None else None
                values["email_skeleton"] = skeleton(values["email"]) if value is not None \
                    else None
            case "phone":
                values["phone"] = normalize_phone(value, region) if value is not None else None
            case "postal_code":
                values["postal_code"] = _postal_code(value) if value is not None else None
            case "attributes":
                if member_attributes is not None:
                    check_member_attributes(value, member_attributes)
                values["attributes"] = value
            case "status":
                values["status"] = value
            case _:
                values[field] = value
    if not values:
        return await get_member(conn, member_id)
    # Column names come from the Struct's own fields above, never from the request.
    assignments = ", ".join(
        f"attributes = jsonb_strip_nulls(attributes || ${i}::jsonb)" if column == "attributes"
        else f"{column} = ${i}"
        for i, column in enumerate(values, start=2))
    status_change = ""
    if "status" in values:
        n = list(values).index("status") + 2
        status_change = f", status_changed_at = case when status <> ${n} then now()" \
                        " else status_changed_at end"
    try:
        async with conn.transaction():
            if status_change:
                # The status history (migration 0010) records the change; this says why.
                await conn.execute("select set_config('loyalty.status_reason', 'staff', true)")
            row = await conn.fetchrow(
                f"""
                update members set {assignments}{status_change}, updated_at = now()
                 where member_id = $1 and status not in ('erased', 'merged')
                returning {MEMBER_COLUMNS}, email is null and phone is null as no_contact
                """,  # noqa: S608 - column names are the update Struct's field names; values as parameters
                member_id, *values.values(),
            )
            if row is not None and row["no_contact"]:
                raise InvalidInput("a member keeps an e-mail address or a phone number",
                                   field="email")
            changed = [field for field in changes.__struct_fields__
                       if field != "status" and getattr(changes, field) is not msgspec.UNSET]
            if row is not None and changed:
                # A status change is member.status_changed, written by the status trigger.
                await emit(conn, "member.updated", msgspec.convert(
                    {**dict(row), "changed": changed}, MemberUpdatedData,
                    from_attributes=False), member_id=member_id)
    except asyncpg.UniqueViolationError as exc:
        _raise_taken(exc)
    if row is None:
        raise NotFound("no such member")
    return msgspec.convert({k: v for k, v in row.items() if k != "no_contact"}, Member)


async def find_login(conn: Connection, *, email: str | None, phone: str | None,
                     region: str) -> tuple[UUID, str | None] | None:
    """The member id and password hash for a login identifier, if such a member may log in."""
    try:
        email, phone = _normalized_contact(email, phone, region)
    except InvalidInput:
        return None
    if email is not None:
        row = await conn.fetchrow(
            "select member_id, password_hash from members where email = $1"
            " and status in ('active', 'dormant')", email)
    elif phone is not None:
        row = await conn.fetchrow(
            "select member_id, password_hash from members where phone = $1"
            " and status in ('active', 'dormant')", phone)
    else:
        return None
    return (row["member_id"], row["password_hash"]) if row else None


async def find_member_at_till(conn: Connection, *, number: str | None = None,
                              phone: str | None = None) -> UUID | None:
    """The member a till names by member number or by phone (E.164): one who may earn and
    redeem (active or dormant), or a merged one, whose points follow them to the survivor."""
    if number is not None:
        found = await conn.fetchval(
            "select member_id from members where member_number = $1"
            " and status in ('active', 'dormant', 'merged')", number)
    else:
        found = await conn.fetchval(
            "select member_id from members where phone = $1"
            " and status in ('active', 'dormant', 'merged')", phone)
    return found if isinstance(found, UUID) else None


async def fill_member_skeletons(conn: Connection, *, batch_size: int = 5_000) -> dict[str, int]:
    """Give the members who have none (from before migration 0016, or written by the CSV
    import's set-based SQL) their e-mail and name skeletons, a batch at a time."""
    filled = 0
    while True:
        rows = await conn.fetch(
            "select member_id, email, name_key from members where name_skeleton is null"
            " order by member_id limit $1", batch_size)
        if not rows:
            return {"members": filled}
        # Only where the e-mail and name are still those read: a change made meanwhile wrote
        # its own skeletons.
        await conn.execute(
            """
            update members m set email_skeleton = s.email_skeleton, name_skeleton = s.name_skeleton
              from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
                   as s(member_id, email, name_key, email_skeleton, name_skeleton)
             where m.member_id = s.member_id and m.email is not distinct from s.email
               and m.name_key = s.name_key
            """,
            [r["member_id"] for r in rows], [r["email"] for r in rows],
            [r["name_key"] for r in rows],
            [skeleton(r["email"]) if r["email"] is not None else None for r in rows],
            [skeleton(r["name_key"]) for r in rows])
        filled += len(rows)


# -- consents ---------------------------------------------------------------------------------


_CONSENT_COLUMNS = "purpose, granted, text_version, channel, recorded_at, actor_kind"


async def get_consents(conn: Connection, member_id: UUID) -> Consents:
    rows = await conn.fetch(
        f"""
        select {_CONSENT_COLUMNS} from member_consents
         where member_id = $1 order by recorded_at desc, consent_id desc
        """,  # noqa: S608 - a module constant column list
        member_id,
    )
    history = [msgspec.convert(dict(row), Consent) for row in rows]
    current: dict[str, Consent] = {}
    for consent in history:
        current.setdefault(consent.purpose, consent)
    return Consents(current=sorted(current.values(), key=lambda c: c.purpose), history=history)


def analysis_allowed_by(consents: Consents) -> bool:
    """Whether ``consents`` let the programme score the member: data_analysis not withdrawn
    (never asked counts as allowed, as ``loyalty.members.filter.analysis_allowed`` reads it)."""
    return next((c.granted for c in consents.current if c.purpose == "data_analysis"), True)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One change of a member's status, and why: ``staff``, ``merge``, ``dormancy``,
    ``activity`` (back from dormant), ``update``..., as migration 0010's trigger records it."""

    changed_at: dt.datetime
    from_status: str
    to_status: str
    reason: str


async def status_history(conn: Connection, member_id: UUID, *, limit: int = 50
                         ) -> list[StatusChange]:
    """The member's last ``limit`` status changes, newest first."""
    rows = await conn.fetch(
        """
        select changed_at, from_status, to_status, reason from member_status_changes
         where member_id = $1 order by changed_at desc, change_id desc limit $2
        """,
        member_id, limit)
    return [StatusChange(**dict(row)) for row in rows]


# The channel of a choice recorded by staff or by the system (the import) is who wrote it.
_CHANNEL_OF_ACTOR = {"staff": "staff", "system": "import"}
_MEMBER_CHANNELS = ("app", "web")


async def record_consents(
    conn: Connection, member_id: UUID, choices: list[ConsentChoice], *,
    actor_kind: Literal["member", "staff", "system"], actor_id: UUID | None,
) -> Consents:
    """Append a history row for each purpose whose choice or text version changes. The actor is
    the caller's principal; a member's choice keeps its ``app`` or ``web``, anyone else's channel
    is theirs (``staff``, ``import``), whatever a choice says."""
    purposes = [c.purpose for c in choices]
    if len(set(purposes)) != len(purposes):
        raise InvalidInput("each purpose at most once", field="consents")
    if actor_kind == "member":
        if any(c.channel not in _MEMBER_CHANNELS for c in choices):
            raise InvalidInput("a member's consent is given in the app or on the web",
                               field="consents")
        channels: list[str] = [c.channel for c in choices]
    else:
        channels = [_CHANNEL_OF_ACTOR[actor_kind]] * len(choices)
    await conn.execute(
        """
        insert into member_consents (member_id, purpose, granted, text_version, channel,
                                     actor_kind, actor_id)
        select $1, c.purpose, c.granted, c.text_version, c.channel, $6, $7
          from unnest($2::text[], $3::bool[], $4::text[], $5::text[])
               as c(purpose, granted, text_version, channel)
         where not exists (
               select 1 from (
                   select granted, text_version from member_consents
                    where member_id = $1 and purpose = c.purpose
                    order by recorded_at desc, consent_id desc limit 1) latest
                where latest.granted = c.granted and latest.text_version = c.text_version)
        """,
        member_id, purposes, [c.granted for c in choices],
        [normalize_profile_text(c.text_version, field="consents", max_length=100)
         for c in choices], channels,
        actor_kind, actor_id,
    )
    await forget_scores_if_withdrawn(conn, member_id)
    return await get_consents(conn, member_id)


# What was computed about one member: RFM scores, the at-risk flag, the churn model's scores.
# Their latest data_analysis choice, a withdrawal, takes them all away at once.
_FORGET_SCORES = f"""
with withdrawn as materialized (
    select not {analysis_allowed("$1::uuid")} as yes
), rfm as (
    delete from member_rfm where member_id = $1 and (select yes from withdrawn) returning 1
), at_risk as (
    delete from member_at_risk where member_id = $1 and (select yes from withdrawn) returning 1
), churn as (
    delete from member_churn_scores where member_id = $1 and (select yes from withdrawn)
    returning 1
)
select (select count(*) from rfm) + (select count(*) from at_risk) + (select count(*) from churn)
"""  # noqa: S608 - a constant consent test over the parameter


async def forget_scores_if_withdrawn(conn: Connection, member_id: UUID) -> int:
    """Delete the member's scores when they have withdrawn data_analysis, in the caller's
    transaction (the one that records the choice); the jobs score them no more until they grant
    it again. Returns the rows deleted."""
    return int(await conn.fetchval(_FORGET_SCORES, member_id))


# -- staff search -----------------------------------------------------------------------------


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def search_members(
    conn: Connection, *, q: str | None = None, status: str | None = None,
    joined_from: dt.datetime | None = None, joined_to: dt.datetime | None = None,
    limit: int = 50, cursor: str | None = None, region: str = "JP", by_contact: bool = True,
) -> Page[Member]:
    """Members matching ``q`` (e-mail, phone, member number, or the start of name or kana),
    newest first, one keyset page at a time. ``by_contact`` False: ``q`` never matches an
    e-mail or a phone, for a searcher who may not see them (it would tell whose they are)."""
    where: list[str] = []
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if q is not None and normalize_text(q):
        where.append(f"({_match_query(normalize_text(q), param, region, by_contact)})")
    if status is not None:
        where.append(f"status = {param(status)}")
    if joined_from is not None:
        where.append(f"joined_at >= {param(joined_from)}")
    if joined_to is not None:
        where.append(f"joined_at < {param(joined_to)}")
    if cursor is not None:
        where.append(f"member_id < {param(decode_cursor(cursor))}")
    sql = f"select {MEMBER_COLUMNS} from members"  # noqa: S608 - a module constant column list
    if where:
        sql += " where " + " and ".join(where)
    sql += f" order by member_id desc limit {param(limit + 1)}"
    rows = await conn.fetch(sql, *params)
    items = [_member(row) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].member_id) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


def search_kind(q: str | None) -> str | None:
    """What a search text looks like (``email``, ``phone``, ``number`` or ``name``), for the
    audit log, which keeps this instead of the text itself: a search for a member's e-mail or
    phone kept verbatim would be one more copy of it (docs/decisions/0015-erasure.md)."""
    text = normalize_text(q) if q is not None else ""
    if not text:
        return None
    if "@" in text:
        return "email"
    if text.isdigit() and not text.startswith("0"):
        return "number"
    if looks_like_phone(text):
        return "phone"
    return "name"


def _match_query(q: str, param: Any, region: str, by_contact: bool) -> str:
    # E-mail addresses are stored NFKC-normalised and lower-cased (normalize_email); ``q`` is
    # already NFKC. The start of an address finds it, as support staff type it ("taro" for
    # taro@example.com), through members_email_prefix (migration 0020).
    email_prefix = f"email like {param(_like_prefix(q.lower()))}" if by_contact else None
    if "@" in q:
        return email_prefix or "false"
    matches = [email_prefix] if email_prefix else []
    if q.isdigit():
        matches.append(f"member_number = {param(q)}")
    if by_contact and looks_like_phone(q):
        with contextlib.suppress(LoyaltyError):
            matches.append(f"phone = {param(normalize_phone(q, region))}")
    key = _like_prefix(search_key(q))
    matches.append(f"name_key like {param(key)}")
    # members_kana_key indexes non-empty kana only; the planner cannot tell that a LIKE implies
    # it, and without the index one branch of the OR reads every member (0.8 s at 1,000,000).
    matches.append(f"(kana_key <> '' and kana_key like {param(key)})")
    return " or ".join(matches)
