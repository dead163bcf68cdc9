"""RFM scores: recency, frequency and monetary value of every member who has purchased, scored 1
to 5 (5 the best), recomputed in one statement by the scheduled job and ``loyalty rfm
refresh``; segments select on the stored scores. The analytics read them as a distribution, by
score and by named segment (docs/analytics.md, with a worked example).

Scoring. Members who bought in the window are scored among themselves, each measure by
quantile thresholds over its distinct values: the values at the 20th, 40th, 60th and 80th
percentiles of the members (``percentile_disc``), duplicates dropped, are the thresholds; a
member above c of the d distinct thresholds scores 1 + round(4 c / d). Equal measures always
score the same; a value held by many members takes one threshold, not several, so the scores
above it are not skipped (ranking with ties at the lowest rank left F and M with the values 1,
4 and 5 only), and the best values always score 5. Members who bought before the window and
not in it are a group of their own: F = 1 and M = 1 (nothing in the window), and recency scored
beyond the window: R = 2 if their last purchase is within two windows, else R = 1. So they are
"hibernating" or "lost", never diluting the buyers' thresholds, and members who bought in the
window but long ago in it can be "at risk" or "cannot lose them".

Consent. A member who withdrew ``data_analysis`` is not scored: no row of theirs is written, and
the refresh drops the one an earlier refresh wrote. Their purchases still shape the quantile
thresholds the others are scored against, as they count in the KPIs: an aggregate of all
buyers, not a judgement about them (docs/privacy.md, "Consent").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import get_args
from uuid import UUID

from loyalty.core.db import Connection
from loyalty.core.errors import NotFound
from loyalty.core.paging import decode_cursor, encode_cursor
from loyalty.members.filter import ANALYSIS_WITHDRAWN, analysis_allowed
from schemas.analytics import RfmCell, RfmDistribution, RfmSegment, RfmSegmentName
from schemas.base import Page
from schemas.segments import SegmentMember

# Two refreshes at once would only repeat each other's work; the second waits for the first.
RFM_LOCK_KEY = 0x52464D5F52454652  # "RFM_REFR"

def _quantiles(measure: str) -> str:
    """The measure's values at the 20th to 80th percentiles of the buyers, and its range."""
    return (f"percentile_disc(array[0.2, 0.4, 0.6, 0.8]) within group (order by {measure})"
            f" as {measure}, min({measure}) as {measure}_min, max({measure}) as {measure}_max")


def _thresholds(measure: str) -> str:
    """The distinct quantiles below the best value (one equal to it separates no one from the
    top); the lowest value alone when all of them are the best value but some members are
    below it."""
    m = measure
    return (f"coalesce(nullif(array(select distinct t from unnest(q.{m}) t"  # noqa: S608 - a constant measure name
            f" where t < q.{m}_max order by t), '{{}}'),"
            f" case when q.{m}_min < q.{m}_max then array[q.{m}_min] end,"
            f" array[]::bigint[]) as {m}")


def _score(measure: str) -> str:
    """1 + round(4 c / d) for a member above c of the d thresholds, in integers; 1 with none."""
    c = f"(select count(*) from unnest(q.{measure}) t where t < b.{measure})"  # noqa: S608 - a constant measure name
    d = f"cardinality(q.{measure})"
    return (f"(case when {d} = 0 then 1 else 1 + (8 * {c} + {d}) / (2 * {d}) end)::smallint")



# $1 now, $2 start of the window, $3 window in days.
#
# A purchase counts for the member it belongs to now: a merged member's for the member they were
# merged into (as the tier measure counts them). Members qualify with a purchase up to ``now``,
# ever, if active or dormant. Scores by the module docstring's rule; recency is scored on its
# negation, so that a larger value is better for all three.
_REFRESH = f"""
with owned as (
    select coalesce(o.merged_into, o.member_id) as member_id, p.occurred_at,
           p.total - p.returned_amount as spend
      from purchases p join members o on o.member_id = p.member_id
     where p.occurred_at <= $1
), measured as (
    select w.member_id, max(w.occurred_at) as last_purchase_at,
           count(*) filter (where w.occurred_at >= $2) as frequency,
           coalesce(sum(w.spend) filter (where w.occurred_at >= $2), 0) as monetary
      from owned w join members m on m.member_id = w.member_id
     where m.status in ('active', 'dormant')
     group by w.member_id
), aged as (
    select member_id, last_purchase_at, frequency::int as frequency,
           monetary::bigint as monetary, x.member_id is null as analysed,
           floor(extract(epoch from $1 - last_purchase_at) / 86400)::int as recency_days
      from measured left join {ANALYSIS_WITHDRAWN} x using (member_id)
), buyers as (
    select *, -recency_days as recency from aged where frequency > 0
), quantiles as (
    select {_quantiles("recency")}, {_quantiles("frequency")}, {_quantiles("monetary")}
      from buyers
), thresholds as (
    select {_thresholds("recency")}, {_thresholds("frequency")}, {_thresholds("monetary")}
      from quantiles q
), scored as (
    select b.member_id, b.last_purchase_at, b.recency_days, b.frequency, b.monetary,
           {_score("recency")} as recency_score, {_score("frequency")} as frequency_score,
           {_score("monetary")} as monetary_score
      from buyers b cross join thresholds q
     where b.analysed
    union all
    select member_id, last_purchase_at, recency_days, frequency, monetary,
           (case when recency_days < 2 * $3 then 2 else 1 end)::smallint, 1::smallint,
           1::smallint
      from aged where frequency = 0 and analysed
), upserted as (
    insert into member_rfm as r (member_id, last_purchase_at, recency_days, frequency, monetary,
                                 recency_score, frequency_score, monetary_score, window_days,
                                 computed_at)
    select member_id, last_purchase_at, recency_days, frequency, monetary,
           recency_score, frequency_score, monetary_score, $3, $1
      from scored
    on conflict (member_id) do update
       set last_purchase_at = excluded.last_purchase_at, recency_days = excluded.recency_days,
           frequency = excluded.frequency, monetary = excluded.monetary,
           recency_score = excluded.recency_score, frequency_score = excluded.frequency_score,
           monetary_score = excluded.monetary_score, window_days = excluded.window_days,
           computed_at = excluded.computed_at
     where (r.last_purchase_at, r.recency_days, r.frequency, r.monetary, r.recency_score,
            r.frequency_score, r.monetary_score, r.window_days, r.computed_at)
           is distinct from
           (excluded.last_purchase_at, excluded.recency_days, excluded.frequency,
            excluded.monetary, excluded.recency_score, excluded.frequency_score,
            excluded.monetary_score, excluded.window_days, excluded.computed_at)
    returning 1
), removed as (
    delete from member_rfm r
     where not exists (select 1 from scored s where s.member_id = r.member_id)
    returning 1
)
select (select count(*) from scored) as members, (select count(*) from upserted) as changed,
       (select count(*) from removed) as removed
"""  # noqa: S608 - snippets built from the constant measure names above


async def refresh_rfm(conn: Connection, *, now: dt.datetime, window_days: int) -> dict[str, int]:
    """Score every member who has purchased (active or dormant) as of ``now`` over the last
    ``window_days`` days, and drop the rows of members who no longer qualify (or withdrew
    ``data_analysis``). Idempotent: run twice with one ``now``, the second run changes no
    row."""
    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    start = now - dt.timedelta(days=window_days)
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", RFM_LOCK_KEY)
        row = await conn.fetchrow(_REFRESH, now, start, window_days)
    assert row is not None
    return {"members": row["members"], "changed": row["changed"], "removed": row["removed"]}


# -- the named segments and the distribution -------------------------------------------------------

# The named segment of every (recency score, frequency score) pair: the usual RFM grid, with
# monetary value left out (it follows frequency closely, and two scores make a grid a person can
# read at a glance). Rows: recency score R, 5 = bought most recently; columns: frequency score
# F, 5 = bought most often. Read at import into RFM_GRID, which refuses a name outside the
# segments or a cell named twice or not at all; tests/loyalty/insights/test_kpis.py checks the
# grid against the segments' usual definitions.
_RFM_GRID_TABLE = """
        F=1             F=2                  F=3                  F=4        F=5
R=5     new             potential_loyalists  potential_loyalists  champions  champions
R=4     promising       potential_loyalists  potential_loyalists  loyal      loyal
R=3     about_to_sleep  about_to_sleep       need_attention       loyal      loyal
R=2     hibernating     hibernating          at_risk              at_risk    cannot_lose_them
R=1     lost            lost                 at_risk              at_risk    cannot_lose_them
"""
# Best first, as they are listed.
RFM_SEGMENTS: tuple[RfmSegmentName, ...] = get_args(RfmSegmentName)


def _read_grid(table: str) -> dict[tuple[int, int], RfmSegmentName]:
    header, *rows = (line.split() for line in table.strip().splitlines())
    grid: dict[tuple[int, int], RfmSegmentName] = {}
    for label, *names in rows:
        for heading, name in zip(header, names, strict=True):
            cell = (int(label.removeprefix("R=")), int(heading.removeprefix("F=")))
            if name not in RFM_SEGMENTS or cell in grid:
                raise ValueError(f"RFM grid: {name} at {cell}")
            grid[cell] = name
    if set(grid) != {(r, f) for r in range(1, 6) for f in range(1, 6)}:
        raise ValueError("RFM grid: every (R, F) cell from 1 to 5 needs a name")
    return grid


RFM_GRID = _read_grid(_RFM_GRID_TABLE)


def rfm_segment(recency_score: int, frequency_score: int) -> RfmSegmentName:
    """The named segment of a member scored ``recency_score`` and ``frequency_score`` (1-5)."""
    if not (1 <= recency_score <= 5 and 1 <= frequency_score <= 5):
        raise ValueError("RFM scores run from 1 to 5")
    return RFM_GRID[(recency_score, frequency_score)]


_RFM = """
select recency_score, frequency_score, monetary_score, count(*) as members,
       max(computed_at) as computed_at, max(window_days) as window_days
  from member_rfm
 group by recency_score, frequency_score, monetary_score
 order by recency_score, frequency_score, monetary_score
"""


async def rfm_distribution(conn: Connection) -> RfmDistribution:
    """Members by (R, F, M) score and by named segment, as of the last RFM refresh."""
    rows = await conn.fetch(_RFM)
    cells = [RfmCell(recency_score=r["recency_score"], frequency_score=r["frequency_score"],
                     monetary_score=r["monetary_score"], members=int(r["members"]))
             for r in rows]
    total = sum(cell.members for cell in cells)
    by_segment = dict.fromkeys(RFM_SEGMENTS, 0)
    for cell in cells:
        by_segment[rfm_segment(cell.recency_score, cell.frequency_score)] += cell.members
    segments = [
        RfmSegment(name=name, members=count, share=count / total if total else None,
                   cells=[(r, f) for r in range(1, 6) for f in range(1, 6)
                          if rfm_segment(r, f) == name])
        for name, count in by_segment.items()
    ]
    return RfmDistribution(
        members=total,
        computed_at=max((r["computed_at"] for r in rows), default=None),
        window_days=max((r["window_days"] for r in rows), default=None),
        cells=cells, segments=segments)


@dataclass(frozen=True, slots=True)
class MemberRfm:
    """One member's scores as of the last refresh, and the named segment they put them in."""

    recency_score: int
    frequency_score: int
    monetary_score: int
    segment: RfmSegmentName
    recency_days: int
    frequency: int
    monetary: int
    computed_at: dt.datetime


async def member_rfm(conn: Connection, member_id: UUID) -> MemberRfm | None:
    """The member's RFM scores and segment, or None when the last refresh did not score them
    (no purchase, or not active or dormant)."""
    row = await conn.fetchrow(
        """
        select recency_score, frequency_score, monetary_score, recency_days, frequency,
               monetary, computed_at
          from member_rfm where member_id = $1
        """,
        member_id)
    if row is None:
        return None
    return MemberRfm(segment=rfm_segment(row["recency_score"], row["frequency_score"]),
                     **dict(row))
# $1 after this member id, $2 how many (one more, to know whether a page follows), $3 and $4
# the recency and frequency scores of the segment's cells, pairwise. A row a refresh wrote just
# before the member withdrew data_analysis is not listed (the next refresh deletes it).
_SEGMENT_MEMBERS = f"""
select m.member_id, m.member_number, m.name, m.status
  from member_rfm r join members m on m.member_id = r.member_id
 where r.member_id > $1
   and (r.recency_score, r.frequency_score) in (
           select * from unnest($3::smallint[], $4::smallint[]))
   and {analysis_allowed("r.member_id")}
 order by r.member_id
 limit $2
"""  # noqa: S608 - a constant consent test over the row's member id


def segment_named(name: str) -> RfmSegmentName:
    """``name`` as one of RFM_SEGMENTS, or NotFound naming them all."""
    for segment in RFM_SEGMENTS:
        if segment == name:
            return segment
    raise NotFound(f"no RFM segment is called {name[:40]!r}; the segments are "
                   f"{', '.join(RFM_SEGMENTS)}", field="segment", code="rfm_segment_not_found")


async def rfm_segment_members(conn: Connection, segment: RfmSegmentName, *, limit: int = 50,
                              cursor: str | None = None) -> Page[SegmentMember]:
    """The members the last RFM refresh put in the named ``segment`` (those its count in
    ``rfm_distribution`` counts), in member-id order, one keyset page at a time."""
    cells = [cell for cell, name in RFM_GRID.items() if name == segment]
    after = decode_cursor(cursor) if cursor else UUID(int=0)
    rows = await conn.fetch(_SEGMENT_MEMBERS, after, limit + 1, [r for r, _ in cells],
                            [f for _, f in cells])
    items = [SegmentMember(member_id=r["member_id"], member_number=r["member_number"],
                           name=r["name"], status=r["status"]) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].member_id) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)
