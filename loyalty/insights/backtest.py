"""Rule backtest: what the purchases of a period would have earned under proposed earning
rules, against what they earned, in total, per tier, per store, and the change in liability.

Each purchase is re-earned by ``purchase_earning``, the till's own evaluation, on the facts the
till had: its lines, total and points used as recorded; the member's tier before it (from the
tier history); whether it was the member's first purchase; the year of their last birthday
bonus; the campaign and coupon multipliers its trace records (not part of the rules, so carried
over as they were); the programme's ceiling; and nothing for points that had expired before the
purchase was recorded. So the rules that were in force re-earn exactly what was earned, and the
backtest and the till cannot disagree. What the tiers would have become under other rules is
not replayed: every purchase keeps the tier its member was in.

The purchases are read in batches in key order (member, then purchase), each batch a statement
of its own, so a long backtest holds no snapshot open and writes its progress between batches;
a member's purchases are read in the order they were recorded, so a birthday bonus the proposed
rules give is known to that member's later purchases. A period with more purchases than the
programme's setting runs in the background of the process that was asked; its row says how far
it has got, and a row not moved for ``STALE_AFTER`` is reported failed (its process stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec

from loyalty.core.db import Connection, Pool
from loyalty.core.errors import InvalidInput, NotFound
from loyalty.core.ids import uuid7
from loyalty.core.programme import Programme
from loyalty.insights.kpis import day_start, liability_value
from loyalty.points.earning import (
    PurchaseFacts,
    check_points_in_range,
    purchase_earning,
    recorded_boosts,
)
from schemas.points import PurchaseLine
from schemas.rules import (
    Backtest,
    BacktestFigures,
    BacktestLiability,
    BacktestRequest,
    BacktestResult,
    BacktestStore,
    BacktestTier,
    EarningRules,
    Trace,
)

log = logging.getLogger(__name__)

# A backtest covers at most a year (and a day, for a leap year): a longer one is several.
MAX_DAYS = 366
# Purchases read and re-earned per statement.
BATCH = 1_000
# A running backtest writes its progress after every batch, well within this.
STALE_AFTER = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class Period:
    """Business days ``first`` to ``last``, as the moments ``[start, end)``."""

    first: dt.date
    last: dt.date
    start: dt.datetime
    end: dt.datetime


def backtest_period(first: dt.date, last: dt.date, *, tz: ZoneInfo, today: dt.date) -> Period:
    """The period of business days ``first`` to ``last``, or InvalidInput saying what to fix."""
    if first > last:
        raise InvalidInput("from must be on or before to", field="from")
    if last > today:
        raise InvalidInput(f"to must not be after today ({today.isoformat()}): a backtest "
                           "re-earns purchases already recorded", field="to")
    days = (last - first).days + 1
    if days > MAX_DAYS:
        raise InvalidInput(f"a backtest covers at most {MAX_DAYS} days and this one is {days}: "
                           "choose a shorter period, or run one backtest per year",
                           field="from", code="period_too_long")
    return Period(first, last, day_start(first, tz), day_start(last + dt.timedelta(days=1), tz))


# -- re-earning ------------------------------------------------------------------------------

_COUNT = "select count(*) from purchases where occurred_at >= $1 and occurred_at < $2"

# The purchases of the period after the key ($3, $4), with what the till knew before each.
_BATCH = """
select p.member_id, p.purchase_id, p.occurred_at, p.recorded_at, s.code as store_code,
       p.total, p.lines, p.points_redeemed, p.points_earned, m.birth_date, t.tier,
       not exists (select 1 from purchases q
                    where q.member_id = p.member_id and q.purchase_id < p.purchase_id)
           as first_purchase,
       b.year as birthday_bonus_year, e.trace
  from purchases p
  join stores s on s.store_id = p.store_id
  join members m on m.member_id = p.member_id
  left join lateral (
      select t.to_tier as tier from member_tiers t
       where t.member_id = p.member_id and t.changed_at <= p.recorded_at
         and t.purchase_id is distinct from p.purchase_id
       order by t.changed_at desc, t.change_id desc limit 1) t on true
  left join lateral (
      select e.trace from point_entries e
       where e.member_id = p.member_id and e.purchase_id = p.purchase_id
         and e.kind = 'earn' and e.source = 'purchase'
       limit 1) e on true
  left join lateral (
      select extract(year from q.occurred_at at time zone $5)::int as year
        from purchases q
        join point_entries qe on qe.member_id = q.member_id and qe.purchase_id = q.purchase_id
                             and qe.kind = 'earn' and qe.source = 'purchase'
       where q.member_id = p.member_id and q.purchase_id < p.purchase_id
         and qe.trace -> 'steps' @> '[{"rule": "birthday_month"}]'
       order by q.purchase_id desc limit 1) b on true
 where p.occurred_at >= $1 and p.occurred_at < $2
   and ($3::uuid is null or (p.member_id, p.purchase_id) > ($3::uuid, $4::uuid))
 order by p.member_id, p.purchase_id
 limit $6
"""


@dataclass
class _Sum:
    purchases: int = 0
    actual: int = 0
    proposed: int = 0

    def add(self, actual: int, proposed: int) -> None:
        self.purchases += 1
        self.actual += actual
        self.proposed += proposed

    def figures(self) -> dict[str, int]:
        return {"purchases": self.purchases, "actual": self.actual, "proposed": self.proposed,
                "difference": self.proposed - self.actual}


@dataclass
class _Tally:
    """The sums so far, and each member's birthday bonus under the proposed rules."""

    totals: _Sum = field(default_factory=_Sum)
    by_tier: dict[str | None, _Sum] = field(default_factory=dict)
    by_store: dict[str, _Sum] = field(default_factory=dict)
    skipped: int = 0
    skipped_points: int = 0
    member: UUID | None = None
    bonus_year: int | None = None

    def result(self, point_value: float, currency: str) -> BacktestResult:
        difference = self.totals.proposed - self.totals.actual
        return BacktestResult(
            totals=BacktestFigures(**self.totals.figures()),
            by_tier=[BacktestTier(tier=tier, **s.figures()) for tier, s in sorted(
                self.by_tier.items(), key=lambda item: (item[0] is not None, item[0] or ""))],
            by_store=[BacktestStore(store=store, **s.figures())
                      for store, s in sorted(self.by_store.items())],
            liability=BacktestLiability(points=difference,
                                        value=liability_value(difference, point_value),
                                        currency=currency),
            skipped=self.skipped, skipped_points=self.skipped_points)


def _reearn(tally: _Tally, row: Any, rules: EarningRules, programme: Programme) -> None:
    """Re-earn one purchase under ``rules`` and add it to ``tally``."""
    if row["member_id"] != tally.member:
        tally.member, tally.bonus_year = row["member_id"], row["birthday_bonus_year"]
    try:
        lines = msgspec.convert(row["lines"], list[PurchaseLine])
    except msgspec.ValidationError:
        lines = []  # recorded under older bounds: not what a till sends today
    if not lines:
        tally.skipped += 1
        tally.skipped_points += row["points_earned"]
        return
    trace = _trace(row["trace"])
    facts = PurchaseFacts(
        occurred_at=row["occurred_at"], store_code=row["store_code"], total=row["total"],
        lines=lines, redeem_points=row["points_redeemed"],
        first_purchase=row["first_purchase"], birth_date=row["birth_date"],
        birthday_bonus_year=tally.bonus_year,
        tier=next((t for t in rules.tiers.levels if t.code == row["tier"]), None),
        boosts=recorded_boosts(trace) if trace is not None else ())
    earned = purchase_earning(rules, 0, facts, programme.timezone,
                              ceiling=programme.max_points_per_purchase,
                              recorded_at=row["recorded_at"])
    if earned.birthday_bonus_year is not None:
        tally.bonus_year = earned.birthday_bonus_year
    actual = row["points_earned"]
    tally.totals.add(actual, earned.points)
    tally.by_tier.setdefault(row["tier"], _Sum()).add(actual, earned.points)
    tally.by_store.setdefault(row["store_code"], _Sum()).add(actual, earned.points)


def _trace(raw: Any) -> Trace | None:
    try:
        return msgspec.convert(raw, Trace) if raw is not None else None
    except msgspec.ValidationError:
        return None  # a trace of an older shape: no multipliers read from it


async def count_purchases(conn: Connection, period: Period) -> int:
    """Purchases that occurred in ``period``: what the backtest will read."""
    count: int = await conn.fetchval(_COUNT, period.start, period.end)
    return count


async def reearn_period(
    conn: Connection, rules: EarningRules, period: Period, *, programme: Programme,
    point_value: float, progress: Callable[[int], Awaitable[None]] | None = None,
    batch_size: int = BATCH,
) -> BacktestResult:
    """Re-earn every purchase of ``period`` under ``rules``, a batch per statement, calling
    ``progress`` with the purchases read so far after each batch."""
    tally = _Tally()
    after: tuple[UUID | None, UUID | None] = (None, None)
    done = 0
    while True:
        rows = await conn.fetch(_BATCH, period.start, period.end, *after,
                                programme.timezone.key, batch_size)
        for row in rows:
            _reearn(tally, row, rules, programme)
        done += len(rows)
        if progress is not None and rows:
            await progress(done)
        if len(rows) < batch_size:
            return tally.result(point_value, programme.currency)
        after = (rows[-1]["member_id"], rows[-1]["purchase_id"])


# -- backtests kept, and run in the background -----------------------------------------------

_COLUMNS = """
backtest_id,
case when state = 'running' and updated_at < now() - $2::interval then 'failed' else state end
    as state,
first_day, last_day, total, done, result,
case when state = 'running' and updated_at < now() - $2::interval
     then 'the process running it stopped before it finished; start the backtest again'
     else error end as error,
created_at, finished_at
"""

_INSERT = f"""
insert into rule_backtests (backtest_id, rules, first_day, last_day, state, total, done, result,
                            created_by, created_at, updated_at, finished_at)
values ($1, $3, $4, $5, $6, $7, $8, $9, $10, $11, now(),
        case when $6 = 'done' then now() end)
returning {_COLUMNS}
"""  # noqa: S608 - a module constant column list

_PROGRESS = "update rule_backtests set done = $2, updated_at = now() where backtest_id = $1"
_FINISH = """
update rule_backtests set state = $2, result = $3, error = $4, updated_at = now(),
                          finished_at = now()
 where backtest_id = $1
"""


def _backtest(row: Any) -> Backtest:
    return Backtest(
        backtest_id=row["backtest_id"], state=row["state"], from_=row["first_day"],
        to=row["last_day"], total=row["total"], done=row["done"],
        result=msgspec.convert(row["result"], BacktestResult)
        if row["result"] is not None else None,
        error=row["error"], created_at=row["created_at"], finished_at=row["finished_at"])


@dataclass(frozen=True)
class BacktestPolicy:
    """What a backtest is run with: the programme (time zone, ceiling, currency), what a point
    is worth, and how many purchases are answered at once."""

    programme: Programme
    point_value: float
    sync_purchases: int


# Backtests running in the background of this process, kept referenced until they finish
# (the event loop holds tasks weakly).
_background: set[asyncio.Task[None]] = set()


async def start_backtest(
    conn: Connection, request: BacktestRequest, *, policy: BacktestPolicy, pool: Pool,
    staff_id: UUID | None, now: dt.datetime,
) -> Backtest:
    """Check ``request`` and run it: at once (``done``) when its period has at most the
    policy's number of purchases, else in the background on ``pool`` (``running``; follow it
    with ``get_backtest``). ``conn`` is outside any transaction: the row is there for any
    instance to read as soon as this returns."""
    programme = policy.programme
    check_points_in_range(request.rules)
    period = backtest_period(request.from_, request.to, tz=programme.timezone,
                             today=now.astimezone(programme.timezone).date())
    total = await count_purchases(conn, period)
    backtest_id = uuid7()
    if total <= policy.sync_purchases:
        result = await reearn_period(conn, request.rules, period, programme=programme,
                                     point_value=policy.point_value)
        done = result.totals.purchases + result.skipped
        row = await conn.fetchrow(_INSERT, backtest_id, STALE_AFTER, request.rules,
                                  period.first, period.last, "done", max(total, done), done,
                                  result, staff_id, now)
        return _backtest(row)
    row = await conn.fetchrow(_INSERT, backtest_id, STALE_AFTER, request.rules, period.first,
                              period.last, "running", total, 0, None, staff_id, now)
    task = asyncio.create_task(_run(pool, backtest_id, request.rules, period, policy))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return _backtest(row)


async def _run(pool: Pool, backtest_id: UUID, rules: EarningRules, period: Period,
               policy: BacktestPolicy) -> None:
    async with pool.acquire() as conn:
        async def progress(done: int) -> None:
            await conn.execute(_PROGRESS, backtest_id, done)

        try:
            result = await reearn_period(conn, rules, period, programme=policy.programme,
                                         point_value=policy.point_value, progress=progress)
        except Exception as exc:  # recorded in the backtest and logged, not swallowed
            log.exception("rule backtest %s failed", backtest_id)
            await conn.execute(_FINISH, backtest_id, "failed", None,
                               f"{type(exc).__name__}: {exc}"[:2000])
        else:
            await conn.execute(_FINISH, backtest_id, "done", result, None)


async def get_backtest(conn: Connection, backtest_id: UUID) -> Backtest:
    row = await conn.fetchrow(
        f"select {_COLUMNS} from rule_backtests where backtest_id = $1",  # noqa: S608 - constant
        backtest_id, STALE_AFTER)
    if row is None:
        raise NotFound("no backtest with this id", field="backtest_id",
                       code="backtest_not_found")
    return _backtest(row)


async def wait_for_backtests() -> None:
    """Until every backtest started in this process has finished (tests, and the CLI)."""
    if _background:
        await asyncio.gather(*_background, return_exceptions=True)


async def cancel_backtests() -> None:
    """At shutdown: stop the backtests running here; their rows are reported failed once
    ``STALE_AFTER`` has passed, and a person starts them again."""
    for task in list(_background):
        task.cancel()
    for task in list(_background):
        with contextlib.suppress(asyncio.CancelledError):
            await task
