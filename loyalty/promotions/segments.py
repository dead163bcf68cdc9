"""Segments: a definition (schemas/segments.py) compiled to a ``MemberFilter``, the saved segments,
a preview count and the members of a segment one keyset page at a time.

Compiled SQL is built only from constant text and ``$?`` slots; every value a definition carries
(codes, keys, attribute values, instants) travels as a parameter. Each condition compiles to an
expression that is never NULL, so ``not`` is always the exact complement of its condition.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput, NotFound
from loyalty.core.normalize import normalize_text
from loyalty.core.paging import decode_cursor, encode_cursor, newest_first
from loyalty.members.filter import ANALYSABLE, SEGMENTABLE, MemberFilter
from schemas.base import Page, decode_edge, json_encoder
from schemas.segments import (
    AllOf,
    AnyOf,
    AtRiskCondition,
    AttributeAtLeast,
    AttributeAtMost,
    AttributeCondition,
    AttributeDiffers,
    AttributeEquals,
    AttributeExists,
    AttributeGreater,
    AttributeIn,
    AttributeLess,
    AttributeMissing,
    AttributeTest,
    ChurnRiskCondition,
    Condition,
    ConsentCondition,
    JoinedCondition,
    LastActivityCondition,
    Not,
    PurchaseCountCondition,
    RfmCondition,
    SampleMember,
    Segment,
    SegmentCreate,
    SegmentMember,
    SegmentPreview,
    SegmentUpdate,
    SpendCondition,
    StatusCondition,
    StoresCondition,
    TierCondition,
    VerifiedCondition,
)

# Bounds on a definition: every condition is a correlated subquery or two per member, so the
# size of the tree is the cost of every count, page and campaign launch.
MAX_DEPTH = 5
MAX_CONDITIONS = 50

_encode = json_encoder.encode
_decode = msgspec.json.Decoder(Condition, dec_hook=decode_edge).decode


def _decode_definition(text: str) -> Condition:
    """A saved definition. One saved under looser bounds than today's is reported, not a 500."""
    try:
        definition: Condition = _decode(text)
    except msgspec.ValidationError as exc:
        raise InvalidInput(
            f"this segment was saved with a condition no longer accepted ({exc}): give it a "
            "new definition with PATCH /v1/segments/{segment_id}", field="definition",
            code="segment_definition_outdated") from None
    return definition


# -- checking --------------------------------------------------------------------------------


def check_definition(definition: Condition) -> None:
    """Refuse a tree deeper than ``MAX_DEPTH`` or with more than ``MAX_CONDITIONS`` conditions,
    and conditions that say nothing or can never match. Iterative: a tree of any shape fails
    here, never by recursion."""
    stack: list[tuple[Condition, str, int]] = [(definition, "definition", 1)]
    seen = 0
    while stack:
        node, path, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise InvalidInput(f"{path}: conditions nest at most {MAX_DEPTH} deep", field=path,
                               code="segment_too_complex")
        if seen > MAX_CONDITIONS:
            raise InvalidInput(f"a definition holds at most {MAX_CONDITIONS} conditions",
                               field="definition", code="segment_too_complex")
        match node:
            case AllOf(conditions=children) | AnyOf(conditions=children):
                stack.extend((child, f"{path}.conditions[{i}]", depth + 1)
                             for i, child in enumerate(children))
            case Not(condition=child):
                stack.append((child, f"{path}.condition", depth + 1))
            case _:
                _check_condition(node, path)


def _check_condition(node: Condition, path: str) -> None:
    match node:
        case TierCondition(codes=codes, no_tier=no_tier) if not codes and not no_tier:
            raise InvalidInput(f"{path}: give tier codes, no_tier, or both", field=path,
                               code="incomplete_condition")
        case JoinedCondition() | LastActivityCondition():
            if (node.after, node.before, node.within_days, node.more_than_days_ago) == (
                    None, None, None, None):
                raise InvalidInput(f"{path}: give after, before, within_days or "
                                   "more_than_days_ago", field=path, code="incomplete_condition")
            if node.after is not None and node.before is not None and node.after >= node.before:
                raise InvalidInput(f"{path}: after must be earlier than before", field=path,
                                   code="contradictory_condition")
            if (node.within_days is not None and node.more_than_days_ago is not None
                    and node.more_than_days_ago >= node.within_days):
                raise InvalidInput(f"{path}: more_than_days_ago must be less than within_days",
                                   field=path, code="contradictory_condition")
        case SpendCondition() | PurchaseCountCondition():
            if node.at_least is None and node.at_most is None:
                raise InvalidInput(f"{path}: give at_least, at_most or both", field=path,
                                   code="incomplete_condition")
            if (node.at_least is not None and node.at_most is not None
                    and node.at_least > node.at_most):
                raise InvalidInput(f"{path}: at_least is more than at_most", field=path,
                                   code="contradictory_condition")
        case _:
            pass


# -- compiling -------------------------------------------------------------------------------

# The member and the members merged into them: their purchases are the member's (as the tier
# measure counts them). Index-friendly: purchases are found by (member_id, occurred_at).
_FAMILY = """array(select m.member_id union all
                   select f.member_id from members f where f.merged_into = m.member_id)"""

_SPEND = f"""(select coalesce(sum(p.total - p.returned_amount), 0) from purchases p
               where p.member_id = any({_FAMILY})
                 and p.occurred_at >= $? and p.occurred_at <= $?)"""  # noqa: S608 - a constant snippet; values fill $? slots

_PURCHASE_COUNT = f"""(select count(*) from purchases p
                        where p.member_id = any({_FAMILY})
                          and p.occurred_at >= $? and p.occurred_at <= $?)"""  # noqa: S608 - a constant snippet; values fill $? slots

_STORES = f"""exists (select 1 from purchases p
                       where p.member_id = any({_FAMILY})
                         and p.store_id in (select s.store_id from stores s
                                             where s.code = any($?::text[])){{window}})"""  # noqa: S608 - a constant snippet; values fill $? slots

# Never asked is no, except for data_analysis, which the programme honours as given until it is
# withdrawn (loyalty.members.filter.analysis_allowed): the condition reads a choice as it is
# honoured.
_CONSENT = """coalesce((select c.granted from member_consents c
                        where c.member_id = m.member_id and c.purpose = $?::text
                        order by c.recorded_at desc, c.consent_id desc limit 1),
                       $?::boolean)
              = $?::boolean"""

# Constant per channel, never NULL.
_VERIFIED = {"email": "(m.email_verified_at is not null) = $?::boolean",
             "phone": "(m.phone_verified_at is not null) = $?::boolean"}

_ATTRIBUTE = "(m.attributes -> $?::text)"
_COMPARISONS: dict[type[AttributeTest], str] = {
    AttributeGreater: ">", AttributeAtLeast: ">=", AttributeLess: "<", AttributeAtMost: "<=",
}


def compile_definition(definition: Condition, *, now: dt.datetime) -> MemberFilter:
    """The members ``definition`` selects at ``now``, as a filter over ``members m``; erased and
    merged members never match, nor, when it reads a score (``profiles``), members who withdrew
    data_analysis. Raises InvalidInput for a definition ``check_definition`` refuses."""
    check_definition(definition)
    compiled = _compile(definition, now)
    return SEGMENTABLE & (ANALYSABLE & compiled if profiles(definition) else compiled)


# Conditions on a member's scores: RFM, the at-risk flag, the churn model.
_PROFILING = (RfmCondition, AtRiskCondition, ChurnRiskCondition)


def profiles(definition: Condition) -> bool:
    """Whether any condition of ``definition`` reads a score. A segment that does is profiling:
    members who withdrew data_analysis are in none of it, under ``not`` as much as without (not
    at risk is a judgement about them too), and so in no campaign to it (docs/privacy.md)."""
    stack: list[Condition] = [definition]
    while stack:
        match stack.pop():
            case AllOf(conditions=children) | AnyOf(conditions=children):
                stack.extend(children)
            case Not(condition=child):
                stack.append(child)
            case node if isinstance(node, _PROFILING):
                return True
    return False


def _compile(node: Condition, now: dt.datetime) -> MemberFilter:
    match node:
        case AllOf(conditions=children):
            return MemberFilter.combine("and", [_compile(c, now) for c in children])
        case AnyOf(conditions=children):
            return MemberFilter.combine("or", [_compile(c, now) for c in children])
        case Not(condition=child):
            inner = _compile(child, now)
            return MemberFilter(f"not ({inner.sql})", inner.params)
        case StatusCondition(statuses=statuses):
            return MemberFilter("m.status = any($?::text[])", (list(statuses),))
        case TierCondition(codes=codes, no_tier=no_tier):
            return _tier(codes, no_tier)
        case JoinedCondition():
            return _when("m.joined_at", node, now)
        case LastActivityCondition():
            return _when("m.last_activity_at", node, now)
        case SpendCondition(days=days, at_least=at_least, at_most=at_most):
            return _bounded(_SPEND, (now - dt.timedelta(days=days), now), at_least, at_most)
        case PurchaseCountCondition(days=days, at_least=at_least, at_most=at_most):
            return _bounded(_PURCHASE_COUNT, (now - dt.timedelta(days=days), now), at_least,
                            at_most)
        case RfmCondition():
            return _rfm(node)
        case AtRiskCondition(flagged=flagged):
            return _AT_RISK if flagged else _NOT_AT_RISK
        case ChurnRiskCondition(p_alive_below=below):
            return MemberFilter(_CHURN_RISK, (below,))
        case AttributeCondition(key=key, test=test):
            return _attribute(key, test)
        case ConsentCondition(purpose=purpose, granted=granted):
            return MemberFilter(_CONSENT, (purpose, purpose == "data_analysis", granted))
        case VerifiedCondition(channel=channel, verified=verified):
            return MemberFilter(_VERIFIED[channel], (verified,))
        case StoresCondition():
            return _stores(node, now)
    raise AssertionError(f"no compiler for {type(node).__name__}")


def _tier(codes: Sequence[str], no_tier: bool) -> MemberFilter:
    tests: list[MemberFilter] = []
    if codes:
        tests.append(MemberFilter("b.tier = any($?::text[])", (list(codes),)))
    if no_tier:
        tests.append(MemberFilter("b.tier is null"))
    either = MemberFilter.combine("or", tests)
    # Inside exists: a NULL tier compared to codes is "not this row", never a NULL result.
    return MemberFilter(
        f"exists (select 1 from point_balances b where b.member_id = m.member_id"  # noqa: S608 - a MemberFilter: constant SQL, values fill $? slots
        f" and ({either.sql}))", either.params)


def _when(column: str, node: JoinedCondition | LastActivityCondition,
          now: dt.datetime) -> MemberFilter:
    tests: list[MemberFilter] = []
    if node.after is not None:
        tests.append(MemberFilter(f"{column} >= $?", (node.after,)))
    if node.before is not None:
        tests.append(MemberFilter(f"{column} < $?", (node.before,)))
    if node.within_days is not None:
        tests.append(MemberFilter(f"{column} >= $?",
                                  (now - dt.timedelta(days=node.within_days),)))
    if node.more_than_days_ago is not None:
        tests.append(MemberFilter(f"{column} < $?",
                                  (now - dt.timedelta(days=node.more_than_days_ago),)))
    return MemberFilter.combine("and", tests)


def _bounded(measure: str, window: tuple[dt.datetime, dt.datetime], at_least: int | None,
             at_most: int | None) -> MemberFilter:
    if at_least is not None and at_most is not None:
        return MemberFilter(f"{measure} between $?::bigint and $?::bigint",
                            (*window, at_least, at_most))
    if at_least is not None:
        return MemberFilter(f"{measure} >= $?::bigint", (*window, at_least))
    return MemberFilter(f"{measure} <= $?::bigint", (*window, at_most))


def _stores(node: StoresCondition, now: dt.datetime) -> MemberFilter:
    if node.within_days is None:
        return MemberFilter(_STORES.format(window=""), (list(node.codes),))
    return MemberFilter(
        _STORES.format(window=" and p.occurred_at >= $? and p.occurred_at <= $?"),
        (list(node.codes), now - dt.timedelta(days=node.within_days), now))


def _rfm(node: RfmCondition) -> MemberFilter:
    sql = "exists (select 1 from member_rfm r where r.member_id = m.member_id"
    params: list[Any] = []
    for column, scores in (("r.recency_score", node.recency),
                           ("r.frequency_score", node.frequency),
                           ("r.monetary_score", node.monetary)):
        if scores is not None:
            sql += f" and {column} = any($?::smallint[])"
            params.append(sorted(set(scores)))
    return MemberFilter(sql + ")", tuple(params))


# A flag counts while the member is still active: one who went dormant after the last at_risk
# run is past being at risk, though the row stays until the next run clears it.
_AT_RISK = MemberFilter("m.status = 'active' and exists (select 1 from member_at_risk r"
                        " where r.member_id = m.member_id)")
_NOT_AT_RISK = MemberFilter(f"not ({_AT_RISK.sql})")


# The model's score where it applies; elsewhere (a 'cadence' row, or no row yet) the subquery
# gives null and the at-risk flag decides.
_CHURN_RISK = f"""coalesce((select s.p_alive < $?::float8 from member_churn_scores s
                            where s.member_id = m.member_id and s.method = 'model'),
                           {_AT_RISK.sql})"""  # noqa: S608 - a constant snippet; values fill $? slots


def _json(value: Any) -> str:
    return _encode(value).decode()


def _attribute(key: str, test: AttributeTest) -> MemberFilter:
    # Values are compared as jsonb, so types never mix: the string "34" is not 34, true is not 1.
    # A missing key gives NULL, folded to false; numbers are cast only when they are numbers.
    match test:
        case AttributeEquals(value=value):
            return MemberFilter(f"coalesce({_ATTRIBUTE} = $?::text::jsonb, false)",
                                (key, _json(value)))
        case AttributeDiffers(value=value):
            return MemberFilter(f"not coalesce({_ATTRIBUTE} = $?::text::jsonb, false)",
                                (key, _json(value)))
        case AttributeIn(values=values):
            return MemberFilter(
                f"coalesce({_ATTRIBUTE} in (select jsonb_array_elements($?::text::jsonb)), false)",
                (key, _json(values)))
        case AttributeExists():
            return MemberFilter("m.attributes ? $?::text", (key,))
        case AttributeMissing():
            return MemberFilter("not (m.attributes ? $?::text)", (key,))
        case AttributeGreater() | AttributeAtLeast() | AttributeLess() | AttributeAtMost():
            op = _COMPARISONS[type(test)]
            return MemberFilter(
                f"case when jsonb_typeof({_ATTRIBUTE}) = 'number'"
                f" then {_ATTRIBUTE}::numeric {op} $?::text::numeric else false end",
                (key, key, _json(test.value)))
    raise AssertionError(f"no compiler for {type(test).__name__}")


# -- saved segments --------------------------------------------------------------------------

_SEGMENT_COLUMNS = """segment_id, name, description, definition::text as definition, created_by,
                      created_at, updated_by, updated_at"""


def _segment(row: asyncpg.Record) -> Segment:
    return Segment(
        segment_id=row["segment_id"], name=row["name"], description=row["description"],
        definition=_decode_definition(row["definition"]), created_by=row["created_by"],
        created_at=row["created_at"], updated_by=row["updated_by"],
        updated_at=row["updated_at"])


def _name(name: str) -> str:
    name = normalize_text(name)
    if not name:
        raise InvalidInput("name must not be blank", field="name")
    return name


def _not_found() -> NotFound:
    return NotFound("no such segment", field="segment_id", code="segment_not_found")


async def create_segment(conn: Connection, data: SegmentCreate, *, staff_id: UUID,
                         now: dt.datetime) -> Segment:
    """Save a definition under a name, once it compiles."""
    compile_definition(data.definition, now=now)
    row = await conn.fetchrow(
        f"""
        insert into segments (name, description, definition, created_by, created_at,
                              updated_by, updated_at)
        values ($1, $2, $3::text::jsonb, $4, $5, $4, $5)
        returning {_SEGMENT_COLUMNS}
        """,  # noqa: S608 - a module constant column list
        _name(data.name), data.description.strip(), _json(data.definition), staff_id, now)
    assert row is not None
    return _segment(row)


async def get_segment(conn: Connection, segment_id: UUID) -> Segment:
    row = await conn.fetchrow(
        f"select {_SEGMENT_COLUMNS} from segments where segment_id = $1", segment_id)  # noqa: S608 - a module constant column list
    if row is None:
        raise _not_found()
    return _segment(row)


async def list_segments(conn: Connection, *, limit: int = 50,
                        cursor: str | None = None) -> Page[Segment]:
    """Segments newest first, one keyset page at a time."""
    return await newest_first(conn, table="segments", key="segment_id",
                              columns=_SEGMENT_COLUMNS, item=_segment, limit=limit,
                              cursor=cursor)


async def update_segment(conn: Connection, segment_id: UUID, data: SegmentUpdate, *,
                         staff_id: UUID, now: dt.datetime) -> Segment:
    """Change the name, description or definition; omitted fields stay."""
    name = None if isinstance(data.name, msgspec.UnsetType) else _name(data.name)
    description = (None if isinstance(data.description, msgspec.UnsetType)
                   else data.description.strip())
    definition = None
    if not isinstance(data.definition, msgspec.UnsetType):
        compile_definition(data.definition, now=now)
        definition = _json(data.definition)
    if (name, description, definition) == (None, None, None):
        return await get_segment(conn, segment_id)
    row = await conn.fetchrow(
        f"""
        update segments
           set name = coalesce($2, name), description = coalesce($3, description),
               definition = coalesce($4::text::jsonb, definition),
               updated_by = $5, updated_at = $6
         where segment_id = $1
        returning {_SEGMENT_COLUMNS}
        """,  # noqa: S608 - a module constant column list
        segment_id, name, description, definition, staff_id, now)
    if row is None:
        raise _not_found()
    return _segment(row)


async def segment_filter(conn: Connection, segment_id: UUID, *, now: dt.datetime) -> MemberFilter:
    """The members segment ``segment_id`` selects at ``now`` (relative conditions count back from
    it), as a filter over ``members m``."""
    text = await conn.fetchval("select definition::text from segments where segment_id = $1",
                               segment_id)
    if text is None:
        raise _not_found()
    return compile_definition(_decode_definition(text), now=now)


# -- members of a segment --------------------------------------------------------------------


async def preview_segment(conn: Connection, definition: Condition, *, sample_size: int,
                          now: dt.datetime) -> SegmentPreview:
    """How many members ``definition`` selects at ``now``, and the first few by member id.
    One statement: the count and the sample come from one snapshot."""
    member_filter = compile_definition(definition, now=now)
    where = member_filter.render(1)
    limit = f"${len(member_filter.params) + 1}"
    row = await conn.fetchrow(
        f"""
        select (select count(*) from members m where {where}) as count,
               (select array_agg((s.member_id, s.member_number) order by s.member_id)
                  from (select m.member_id, m.member_number from members m
                         where {where} order by m.member_id limit {limit}) s) as sample
        """,  # noqa: S608 - a MemberFilter rendered with $n slots; the limit is a $n too
        *member_filter.params, sample_size)
    assert row is not None
    return SegmentPreview(
        count=row["count"],
        sample=[SampleMember(member_id=member_id, member_number=number)
                for member_id, number in row["sample"] or ()])


# -- an estimate, for a large members table ---------------------------------------------------


class CountEstimate(msgspec.Struct, frozen=True):
    """How many members a definition selects, estimated from a sample of the members table's
    pages: ``count`` rounded to what the sample can tell, ``low`` to ``high`` the range it
    probably lies in (95 %), ``sampled`` the members looked at; ``members``, the first few of
    the sampled members it selects, by member id."""

    count: int
    low: int
    high: int
    sampled: int
    members: list[SampleMember] = msgspec.field(default_factory=list)


# Which pages the sample reads: the same ones on every count while the table keeps its size, so
# adding a condition never raises the estimate and a condition edited back gives the count seen
# before.
_SAMPLE_SEED = 0
# Standard normal quantile for a two-sided 95 % interval.
_Z95 = 1.96
# The least standard error an estimate claims, as a share of it (a range of about ±1 %):
# sampled pages that all look alike say nothing of the few that differ (a half-filled last
# page, pages emptied by updates), so a sample never claims to know the count to the member.
_LEAST_ERROR = 0.005


async def member_rows(conn: Connection) -> int:
    """PostgreSQL's own estimate of the members table's rows (kept by autovacuum and ANALYZE;
    0 before the first): a size to choose between counting and estimating, read in microseconds."""
    rows = await conn.fetchval(
        "select greatest(reltuples, 0)::bigint from pg_class where oid = 'members'::regclass")
    return int(rows or 0)


async def estimate_segment(conn: Connection, definition: Condition, *, rows: int,
                           sample_members: int, now: dt.datetime,
                           examples: int = 0) -> CountEstimate:
    """How many members ``definition`` selects at ``now``, from a random sample of the members
    table's pages holding about ``sample_members`` of them (``tablesample system``): a cost that
    does not grow with the table, where an exact count reads every row (docs/console.md,
    "Segments").

    The estimate is the table's pages times the mean matches per sampled page, with the sampling
    variance between pages; a page with no live member at all is never sampled, so a table
    mostly emptied of members would count high (members are erased in place, not deleted).
    ``rows``: the table's size as ``member_rows`` reads it (which the caller has, to choose).
    ``examples``: how many of the sampled members it selects to name (the first by member id:
    the first of the whole table could take a read of all of it to find, for a rare condition).
    """
    member_filter = compile_definition(definition, now=now)
    percent = min(100.0, 100.0 * sample_members / rows) if rows else 100.0
    first = len(member_filter.params) + 1
    row = await conn.fetchrow(
        f"""
        with looked as materialized (
          select m.member_id, m.member_number, (m.ctid::text::point)[0] as page,
                 coalesce({member_filter.render(1)}, false) as hit
            from members m tablesample system (${first}) repeatable (${first + 1})
        ), sampled as (
          select page, count(*) as seen, count(*) filter (where hit) as hits
            from looked group by page)
        select pg_relation_size('members') / current_setting('block_size')::int as pages,
               count(*) as sampled_pages, coalesce(sum(seen), 0)::bigint as seen,
               coalesce(sum(hits), 0)::bigint as hits,
               coalesce(var_samp(hits), 0)::float8 as variance,
               array(select (l.member_id, l.member_number) from looked l where l.hit
                      order by l.member_id limit ${first + 2}) as examples
          from sampled
        """,  # noqa: S608 - a MemberFilter rendered with $n slots; the percent, seed and limit are $n
        *member_filter.params, percent, _SAMPLE_SEED, examples)
    assert row is not None
    members = [SampleMember(member_id=member_id, member_number=number)
               for member_id, number in row["examples"]]
    if percent >= 100.0:
        # A sample as large as the table is the table: its matches are the count.
        return CountEstimate(count=row["hits"], low=row["hits"], high=row["hits"],
                             sampled=row["seen"], members=members)
    found = _estimate(pages=row["pages"], sampled_pages=row["sampled_pages"], seen=row["seen"],
                      hits=row["hits"], variance=row["variance"])
    return msgspec.structs.replace(found, members=members)


def _estimate(*, pages: int, sampled_pages: int, seen: int, hits: int,
              variance: float) -> CountEstimate:
    """The expansion estimate over pages: ``pages`` times the mean of the sampled pages'
    ``hits``, its standard error from their ``variance`` (with the finite-population
    correction) and never below ``_LEAST_ERROR`` of it, rounded to the error's order of
    magnitude. No match seen: none, or at most about three a sample's worth of pages (the rule
    of three)."""
    if hits == 0:
        high = math.ceil(3 * pages / sampled_pages) if sampled_pages else pages
        return CountEstimate(count=0, low=0, high=high, sampled=seen)
    share = min(1.0, sampled_pages / pages)
    estimate = pages * hits / sampled_pages
    error = max(pages * math.sqrt(variance / sampled_pages * (1.0 - share)),
                _LEAST_ERROR * estimate)
    unit = 10 ** int(math.log10(error)) if error >= 1 else 1
    low = max(hits, math.floor((estimate - _Z95 * error) / unit) * unit)
    high = math.ceil((estimate + _Z95 * error) / unit) * unit
    count = min(max(round(estimate / unit) * unit, low), high)
    return CountEstimate(count=count, low=low, high=high, sampled=seen)


async def segment_members(conn: Connection, segment_id: UUID, *, now: dt.datetime,
                          limit: int = 50, cursor: str | None = None) -> Page[SegmentMember]:
    """The segment's members at ``now`` in member-id order, one keyset page at a time."""
    member_filter = await segment_filter(conn, segment_id, now=now)
    after = decode_cursor(cursor) if cursor else UUID(int=0)
    rows = await conn.fetch(
        f"""
        select m.member_id, m.member_number, m.name, m.status from members m
         where m.member_id > $1 and ({member_filter.render(3)})
         order by m.member_id limit $2
        """,  # noqa: S608 - a MemberFilter rendered with $n slots
        after, limit + 1, *member_filter.params)
    items = [SegmentMember(member_id=r["member_id"], member_number=r["member_number"],
                           name=r["name"], status=r["status"]) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].member_id) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)
