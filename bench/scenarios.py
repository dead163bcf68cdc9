"""The scenarios that call the project's functions directly (expiry, launch, dormancy), each on
its own copy of the loaded data set, against a reference on another copy."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from asyncpg.connection import LoggedQuery

from bench.harness import DATABASE, Result, checkpoint, say
from bench.http import storm_check, wrk
from loyalty.core.db import Connection, init_connection, with_database
from loyalty.core.ids import uuid7
from loyalty.core.outbox import API_VERSION
from loyalty.core.programme import Programme
from loyalty.insights.dormancy import dormancy_cutoff, flag_dormant
from loyalty.members.filter import may_message
from loyalty.points.expiry import EXPIRE_LOTS, expire_points
from loyalty.points.rules import RuleBook
from loyalty.promotions.campaigns import launch_campaign
from schemas.campaigns import IssueCoupon
from schemas.coupons import FixedAmount


@contextlib.asynccontextmanager
async def data_set_copies(server_url: str) -> AsyncIterator[tuple[str, str]]:
    """Two copies of the loaded data set, one for the project's function and one for the
    bare SQL, dropped afterwards: their names."""
    admin = await asyncpg.connect(with_database(server_url, "postgres"))
    copies = (f"{DATABASE}_fn", f"{DATABASE}_sql")
    try:
        for name in copies:
            await admin.execute(f"drop database if exists {name} with (force)")
            say(f"copying the data set to {name}")
            await admin.execute(f"create database {name} template {DATABASE} strategy file_copy")
        yield copies
    finally:
        for name in copies:
            await admin.execute(f"drop database if exists {name} with (force)")
        await admin.close()


_DUE_MEMBERS = """
select distinct member_id from point_lots where remaining > 0 and expires_at <= $1
"""


async def expiry_scenario(server_url: str) -> Result:
    """The expiry function (batched by member, each batch locking its members) against its own
    statement run once over every member with points due, each on its own copy."""
    statement = EXPIRE_LOTS
    async with data_set_copies(server_url) as copies:
        now = dt.datetime.now(dt.UTC)
        conn = await asyncpg.connect(with_database(server_url, copies[0]))
        await init_connection(conn)
        try:
            due = await conn.fetchval(
                "select count(*) from point_lots where remaining > 0 and expires_at <= $1", now)
            lots = await conn.fetchval("select count(*) from point_lots")
            started = time.perf_counter()
            totals = await expire_points(conn, now=now)
            function_seconds = time.perf_counter() - started
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(server_url, copies[1]))
        try:
            started = time.perf_counter()
            members = [row["member_id"] for row in await conn.fetch(_DUE_MEMBERS, now)]
            bare = await conn.fetchrow(statement, members, now, API_VERSION)
            bare_seconds = time.perf_counter() - started
        finally:
            await conn.close()
    assert bare is not None
    same = all(int(bare[name]) == totals[name] for name in ("points", "lots", "members"))
    say(f"expiry: function {function_seconds:.2f}s, one statement {bare_seconds:.2f}s, "
        f"{totals['points']:,} points from {totals['lots']:,} lots; same effect: {same}")
    return Result("expiry", function_seconds, bare_seconds, "s",
                  "its statement once over all due members",
                  {"lots": lots, "due": due,
                   "batch_size": inspect.signature(expire_points).parameters["batch_size"].default},
                  {"points": totals["points"], "lots_expired": totals["lots"],
                   "members": totals["members"], "same_effect": same}, passed=same)


# The launch an expert would write for a segment of every active member, 10% held out, one
# coupon (valid 30 days) per treated member: one statement, the draw and the holdout computed
# in one window pass, the coupons inserted from the rows the assignment returned. Rows go in
# in member order, so the primary keys and the foreign-key checks walk their indexes in order
# (at 1,000,000 members this took the statement from about 100 s to about 65 s here).
# Since issue 15 a launch also writes a coupon.issued event per coupon, with whether the
# member may be messaged (the expression read from loyalty.members.filter, never copied); the
# campaign.launched event, one row, is left out.
_BARE_LAUNCH = """
with ranked as (
    select member_id, status, count(*) over () as total,
           row_number() over (order by md5($1::uuid::text || member_id::text), member_id) as n
      from members where status = 'active'
), assigned as (
    insert into campaign_members (member_id, campaign_id, arm, status_at_launch)
    select member_id, $1,
           case when n <= round(total * $2 / 100.0) then 'control' else 'treated' end, status
      from ranked order by member_id
    returning member_id, arm
), coupons as (
    insert into member_coupons (member_id, coupon_id, template_id, issue_id, source,
                                campaign_id, issued_at, valid_from, valid_until)
    select member_id, uuid_v7(), $3, $1, 'campaign', $1, $4, $4,
           (select coupon_valid_until($4, valid_days, $5) from coupon_templates
             where template_id = $3)
      from assigned where arm = 'treated' order by member_id
    returning member_id, coupon_id, valid_from, valid_until
), events as (
    insert into outbox (type, occurred_at, api_version, member_id, data)
    select 'coupon.issued', $4, $6, c.member_id,
           jsonb_build_object('member_id', c.member_id, 'member_number', m.member_number,
                              'coupon_id', c.coupon_id, 'template_id', $3::uuid,
                              'issue_id', $1::uuid, 'source', 'campaign',
                              'campaign_id', $1::uuid, 'valid_from', c.valid_from,
                              'valid_until', c.valid_until, 'may_message', {may_message})
      from coupons c join members m on m.member_id = c.member_id
     order by c.member_id
), counts as (
    select count(*) as eligible, count(*) filter (where arm = 'treated') as treated,
           count(*) filter (where arm = 'control') as control
      from assigned
)
update campaigns c
   set status = 'launched', launched_at = $4, starts_at = $4, eligible = n.eligible,
       treated = n.treated, control = n.control, messaged = 0,
       actioned = (select count(*) from coupons)
  from counts n
 where c.campaign_id = $1
"""

_BARE_LAUNCH = _BARE_LAUNCH.replace("{may_message}", may_message("c.member_id"))

# What both copies must agree on: group sizes, coupons exactly to the treated, the same control
# members, the same coupon columns, and the campaign's own counts.
_LAUNCH_CHECK = """
select (select count(*) from members where status = 'active') as members,
       (select count(*) from campaign_members where campaign_id = $1 and arm = 'treated')
         as treated,
       (select count(*) from campaign_members where campaign_id = $1 and arm = 'control')
         as control,
       (select count(*) from member_coupons where campaign_id = $1) as coupons,
       (select count(*) from member_coupons mc where mc.campaign_id = $1 and not exists (
            select 1 from campaign_members cm where cm.campaign_id = $1
               and cm.member_id = mc.member_id and cm.arm = 'treated')) as coupons_not_treated,
       (select count(*) from campaign_members cm where cm.campaign_id = $1
           and cm.arm = 'treated' and not exists (
            select 1 from member_coupons mc where mc.member_id = cm.member_id
               and mc.issue_id = $1)) as treated_without_coupon,
       (select md5(string_agg(member_id::text, ',' order by member_id)) from campaign_members
         where campaign_id = $1 and arm = 'control') as control_digest,
       (select string_agg(distinct concat_ws(' | ', template_id, issue_id, source, campaign_id,
                                             issued_at, valid_from, valid_until), ', ')
          from member_coupons where campaign_id = $1) as coupon_columns,
       (select concat_ws(' ', status, eligible, treated, control, messaged, actioned)
          from campaigns where campaign_id = $1) as campaign,
       (select count(*) from outbox where type = 'coupon.issued'
           and data->>'campaign_id' = $1::text) as events,
       (select md5(string_agg((data - 'coupon_id')::text, ',' order by member_id))
          from outbox where type = 'coupon.issued' and data->>'campaign_id' = $1::text)
         as event_digest
"""

HOLDOUT_PERCENT = 10
# The service pool's statement timeout (LOYALTY_STATEMENT_TIMEOUT_SECONDS, default 60). A launch
# lifts it for its few big statements; the longest is recorded to show how close they come.
SERVICE_STATEMENT_TIMEOUT_S = 60


async def _launch_setup(conn: Connection, ids: dict[str, UUID], now: dt.datetime) -> None:
    """The coupon template, the segment of every active member and the draft campaign, with
    the same ids on either copy (so the draw, and so the groups, must come out the same)."""
    await conn.execute(
        "insert into coupon_templates (template_id, name, discount, valid_days)"
        " values ($1, 'Bench campaign coupon', $2, 30)",
        ids["template"], msgspec.to_builtins(FixedAmount(amount=500)))
    await conn.execute(
        "insert into segments (segment_id, name, definition, created_at, updated_at)"
        " values ($1, 'Every active member', $2, $3, $3)",
        ids["segment"], {"type": "status", "statuses": ["active"]}, now)
    await conn.execute(
        "insert into campaigns (campaign_id, name, segment_id, action, holdout_percent)"
        " values ($1, 'Bench launch', $2, $3, $4)",
        ids["campaign"], ids["segment"],
        msgspec.to_builtins(IssueCoupon(template_id=ids["template"])), HOLDOUT_PERCENT)


def _launch_phase(query: str) -> str:
    if "insert into campaign_members" in query:
        return "assign"
    if "insert into member_coupons" in query:
        return "issue_coupons"
    if "set status = 'launched'" in query:
        return "count_and_close"
    if query.startswith("COMMIT"):
        return "commit_assignment"
    return "other"


async def _launch_check(conn: Connection, campaign_id: UUID) -> dict[str, Any]:
    # Statistics first: planned as the empty tables they were, the anti-joins take minutes.
    await conn.execute("analyze campaign_members, member_coupons")
    row = await conn.fetchrow(_LAUNCH_CHECK, campaign_id)
    assert row is not None
    return dict(row)


@contextlib.asynccontextmanager
async def _connected(server_url: str, copy: str,
                     server_settings: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    """A connection to one copy of the data set, set up as the service's pool sets up its own
    (``server_settings``: what the pool sets, less what the scenario must not be cut short by)."""
    conn = await asyncpg.connect(with_database(server_url, copy), server_settings=server_settings)
    try:
        await init_connection(conn)
        yield conn
    finally:
        await conn.close()


async def launch_scenario(server_url: str, programme: Programme) -> Result:
    """Launching a campaign over every active member against the bare SQL an expert would
    write for the same effect, each on its own copy of the data."""
    ids = {"template": uuid7(), "segment": uuid7(), "campaign": uuid7()}
    # As the service's pool runs them (loyalty.core.db.create_pool), bar the statement timeout.
    server_settings = {"jit": "off"}
    statements: list[tuple[str, float]] = []
    checks: list[dict[str, Any]] = []

    def log(query: LoggedQuery) -> None:
        statements.append((query.query, query.elapsed))

    async with data_set_copies(server_url) as copies:
        now = dt.datetime.now(dt.UTC)
        async with _connected(server_url, copies[0], server_settings) as conn:
            await _launch_setup(conn, ids, now)
            await checkpoint(conn)
            conn.add_query_logger(log)
            say("launch: the project's launch_campaign")
            started = time.perf_counter()
            campaign = await launch_campaign(conn, ids["campaign"], rulebook=RuleBook(),
                                             programme=programme, now=now)
            function_seconds = time.perf_counter() - started
            await asyncio.sleep(0)  # the query logger reports through the event loop
            conn.remove_query_logger(log)
            checks.append(await _launch_check(conn, ids["campaign"]))
        async with _connected(server_url, copies[1], server_settings) as conn:
            await _launch_setup(conn, ids, now)
            await checkpoint(conn)
            say("launch: bare SQL")
            started = time.perf_counter()
            await conn.execute(_BARE_LAUNCH, ids["campaign"], HOLDOUT_PERCENT, ids["template"],
                               now, programme.timezone.key, API_VERSION)
            bare_seconds = time.perf_counter() - started
            checks.append(await _launch_check(conn, ids["campaign"]))
    fn, bare = checks
    phases: dict[str, float] = {}
    for query, elapsed in statements:
        phase = _launch_phase(query)
        phases[phase] = round(phases.get(phase, 0.0) + elapsed, 3)
    longest = max((elapsed for _, elapsed in statements), default=0.0)
    members = fn["members"]
    control = round(members * HOLDOUT_PERCENT / 100)
    agree = {key: fn[key] == bare[key] for key in
             ("treated", "control", "coupons", "control_digest", "coupon_columns", "campaign",
              "events", "event_digest")}
    exact = {
        "control_is_holdout_share": fn["control"] == control,
        "everyone_assigned": fn["treated"] + fn["control"] == members,
        "coupons_only_to_treated": fn["coupons_not_treated"] == bare["coupons_not_treated"] == 0,
        "every_treated_has_a_coupon": (fn["treated_without_coupon"]
                                       == bare["treated_without_coupon"] == 0),
        "launched": campaign.status == "launched",
        "an_event_per_coupon": fn["events"] == fn["coupons"],
    }
    same = all(agree.values()) and all(exact.values())
    say(f"launch: function {function_seconds:.2f}s, bare SQL {bare_seconds:.2f}s; "
        f"{members:,} members, {fn['treated']:,} treated, {fn['control']:,} control, "
        f"{fn['coupons']:,} coupons; phases "
        + ", ".join(f"{k} {v:.2f}s" for k, v in phases.items())
        + f"; same effect: {same}")
    return Result(
        "launch", function_seconds, bare_seconds, "s", "bare SQL, one statement",
        {"members": members, "holdout_percent": HOLDOUT_PERCENT,
         "segment": {"type": "status", "statuses": ["active"]},
         "action": "issue_coupon (valid 30 days)", "server_settings": server_settings},
        {"members": members, "treated": fn["treated"], "control": fn["control"],
         "coupons": fn["coupons"], "function_phases_s": phases,
         "function_statements": len(statements), "longest_statement_s": round(longest, 3),
         "service_statement_timeout_s": SERVICE_STATEMENT_TIMEOUT_S,
         "statements_over_service_timeout": sum(
             elapsed > SERVICE_STATEMENT_TIMEOUT_S for _, elapsed in statements),
         "copies_agree": agree, "checks": exact, "same_effect": same},
        passed=same)


# -- dormancy --------------------------------------------------------------------------------

DORMANCY_DAYS = 180
DORMANT_PERCENT = 30
# As for expiry (docs/performance.md): the batched job within 1.5 times the one statement.
DORMANCY_TARGET_RATIO = 1.5

# The loaded members were all active within the last 60 days. Spread their last activity,
# deterministically by a hash of the member id: DORMANT_PERCENT in a hundred between 181 and
# 720 days before $1 (so before the 180-day cutoff), the others within the last 180 days.
_SPREAD_ACTIVITY = """
update members
   set last_activity_at = $1::timestamptz - interval '1 day' * (
       case when abs(hashtext(member_id::text)::bigint) % 100 < $2
            then 181 + abs(hashtext(member_id::text)::bigint) / 100 % 540
            else abs(hashtext(member_id::text)::bigint) / 100 % 180 end)
"""

# What an expert would write for the same effect as flag_dormant: one statement over every
# member, the history rows from the rows it changed. Run in one transaction with
# loyalty.status_recorded = 'on', as the function's batches are, so neither calls the per-row
# trigger. $1 now, $2 the cutoff (loyalty.insights.dormancy.dormancy_cutoff).
_BARE_DORMANCY = """
with flipped as (
    update members set status = 'dormant', status_changed_at = $1, updated_at = $1
     where status = 'active' and last_activity_at < $2
    returning member_id
)
insert into member_status_changes (member_id, changed_at, from_status, to_status, reason)
select member_id, $1, 'active', 'dormant', 'inactivity' from flipped
"""

# What both copies must agree on: the same members dormant (an exact digest of their ids), all
# flagged at $1, nobody missed or flagged wrongly against the cutoff $2, and the same history.
_DORMANCY_CHECK = """
select (select count(*) from members where status = 'dormant') as dormant,
       (select md5(string_agg(member_id::text, ',' order by member_id)) from members
         where status = 'dormant') as dormant_digest,
       (select count(*) from members where status = 'dormant'
           and (status_changed_at <> $1 or updated_at <> $1)) as dormant_not_stamped,
       (select count(*) from members where status = 'active' and last_activity_at < $2)
         as missed,
       (select count(*) from members where status = 'dormant' and last_activity_at >= $2)
         as wrongly_flagged,
       (select count(*) from member_status_changes) as history,
       (select md5(string_agg(concat_ws(' ', member_id, changed_at, from_status, to_status,
                                        reason, campaign_id), ',' order by member_id))
          from member_status_changes) as history_digest,
       (select count(*) from members m where m.status = 'dormant' and not exists (
            select 1 from member_status_changes s where s.member_id = m.member_id
               and s.changed_at = $1 and s.to_status = 'dormant')) as dormant_without_history
"""


async def _dormancy_check(conn: Connection, now: dt.datetime,
                          cutoff: dt.datetime) -> dict[str, Any]:
    await conn.execute("analyze members, member_status_changes")
    row = await conn.fetchrow(_DORMANCY_CHECK, now, cutoff)
    assert row is not None
    return dict(row)


async def dormancy_scenario(server_url: str) -> Result:
    """Flagging dormant members with the project's flag_dormant against the bare SQL an expert
    would write for the same effect, each on its own copy of the data."""
    tz = ZoneInfo("Asia/Tokyo")
    now = dt.datetime.now(dt.UTC)
    cutoff = dormancy_cutoff(now, tz, DORMANCY_DAYS)
    # As the scheduler's pool runs the job (loyalty.core.db.create_pool), bar the statement timeout.
    server_settings = {"jit": "off"}
    # The last scenario to use the loaded database: its members' activity is reshaped there
    # once, compacted, then copied.
    conn = await asyncpg.connect(with_database(server_url, DATABASE))
    try:
        say(f"dormancy: spreading last activity, {DORMANT_PERCENT}% past {DORMANCY_DAYS} days")
        await conn.execute(_SPREAD_ACTIVITY, now, DORMANT_PERCENT)
        await conn.execute("vacuum (full, analyze) members")
        members = await conn.fetchval("select count(*) from members")
        active = await conn.fetchval("select count(*) from members where status = 'active'")
        due = await conn.fetchval("select count(*) from members"
                                  " where status = 'active' and last_activity_at < $1", cutoff)
    finally:
        await conn.close()
    checks: list[dict[str, Any]] = []
    async with data_set_copies(server_url) as copies:
        async with _connected(server_url, copies[0], server_settings) as conn:
            await checkpoint(conn)
            say(f"dormancy: the project's flag_dormant over {members:,} members")
            started = time.perf_counter()
            counts = await flag_dormant(conn, now=now, tz=tz, days=DORMANCY_DAYS)
            function_seconds = time.perf_counter() - started
            checks.append(await _dormancy_check(conn, now, cutoff))
        async with _connected(server_url, copies[1], server_settings) as conn:
            await checkpoint(conn)
            say("dormancy: bare SQL")
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute("set local loyalty.status_recorded = 'on'")
                await conn.execute(_BARE_DORMANCY, now, cutoff)
            bare_seconds = time.perf_counter() - started
            checks.append(await _dormancy_check(conn, now, cutoff))
    fn, bare = checks
    agree = {key: fn[key] == bare[key] for key in
             ("dormant", "dormant_digest", "history", "history_digest")}
    exact = {
        "flagged_every_due_member": fn["dormant"] == counts["flagged"] == due,
        "one_history_row_each": fn["history"] == bare["history"] == due,
        "stamped_now": fn["dormant_not_stamped"] == bare["dormant_not_stamped"] == 0,
        "none_missed": fn["missed"] == bare["missed"] == 0,
        "none_wrongly_flagged": fn["wrongly_flagged"] == bare["wrongly_flagged"] == 0,
        "history_for_each": (fn["dormant_without_history"]
                             == bare["dormant_without_history"] == 0),
        "scanned_every_member": counts["scanned"] == members,
    }
    same = all(agree.values()) and all(exact.values())
    ratio = function_seconds / bare_seconds if bare_seconds else float("nan")
    say(f"dormancy: function {function_seconds:.2f}s, bare SQL {bare_seconds:.2f}s "
        f"(ratio {ratio:.2f}, target <= {DORMANCY_TARGET_RATIO}); {counts['flagged']:,} of "
        f"{members:,} members flagged, {fn['history']:,} history rows; same effect: {same}")
    if not same:
        say(f"dormancy: FAILED: copies agree {agree}, checks {exact}")
    return Result(
        "dormancy", function_seconds, bare_seconds, "s", "bare SQL, one statement",
        {"members": members, "active_before": active, "days": DORMANCY_DAYS,
         "tz": tz.key, "dormant_percent": DORMANT_PERCENT,
         # The job passes none: the function's default.
         "batch_size": inspect.signature(flag_dormant).parameters["batch_size"].default,
         "server_settings": server_settings, "target_ratio": DORMANCY_TARGET_RATIO},
        {"scanned": counts["scanned"], "flagged": counts["flagged"], "due": due,
         "history_rows": fn["history"], "within_target": ratio <= DORMANCY_TARGET_RATIO,
         "copies_agree": agree, "checks": exact, "same_effect": same},
        passed=same)


# -- offline tills: batches against single requests -------------------------------------------

BATCH_SIZE = 100
_WRITTEN = """
select count(*) from purchases
 where receipt_id like $1 and recorded_at >= $2 and recorded_at < $3
"""


async def _database_now(dsn: str) -> dt.datetime:
    conn = await asyncpg.connect(dsn)
    try:
        now: dt.datetime = await conn.fetchval("select clock_timestamp()")
        return now
    finally:
        await conn.close()


async def _written(dsn: str, prefix: str, start: dt.datetime, end: dt.datetime) -> int:
    """Purchases of the run ``prefix`` recorded between ``start`` and ``end``; waits first for
    the batches still running after wrk stopped (their clients gone) to finish writing."""
    conn = await asyncpg.connect(dsn)
    try:
        last = -1
        while (count := await conn.fetchval(
                "select count(*) from purchases where receipt_id like $1", prefix + "-%")) \
                != last:
            last = count
            await asyncio.sleep(2)
        written: int = await conn.fetchval(_WRITTEN, prefix + "-%", start, end)
        return written
    finally:
        await conn.close()


def _measured(wrk_binary: str, base: str, dsn: str, script: str, prefix: str,
              wrk_args: dict[str, Any], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """Purchases per second that ``script`` had written in the database between the start and
    the end of its run (a batch cut off by the end counts for the items it wrote in time),
    and wrk's summary."""
    start = asyncio.run(_database_now(dsn))
    summary = wrk(wrk_binary, base, script, **wrk_args, env={**env, "BENCH_RUN": prefix})
    end = asyncio.run(_database_now(dsn))
    written = asyncio.run(_written(dsn, prefix, start, end))
    return written / (end - start).total_seconds(), summary


def batches_scenario(*, wrk_binary: str, base: str, dsn: str, prepared: dict[str, Any],
                     duration: int, connections: int, threads: int,
                     common: dict[str, Any]) -> Result:
    """Purchases per second uploaded as offline tills do, ``POST /v1/pos/batches`` of 100,
    against the same purchases sent one request each (``POST /v1/pos/purchases``), in the
    same run through the same service; afterwards both are checked exactly once per key.
    Singles run at ``connections``; batches at a quarter of them (each carries 100 purchases:
    at 32 a batch would wait longer than wrk's timeout)."""
    run_id = dt.datetime.now().strftime("%H%M%S")
    env = {"BENCH_TERMINAL_KEY": prepared["terminal_key"], "BENCH_BATCH": str(BATCH_SIZE)}
    wrk_args = {"seconds": duration, "connections": connections, "threads": threads}
    batch_connections = max(threads, connections // 4)
    say("batches: warming up")
    wrk(wrk_binary, base, "earn.lua", **{**wrk_args, "seconds": 3},
        env={**env, "BENCH_RUN": f"BW{run_id}"})
    say(f"batches: POST /v1/pos/purchases for {duration}s at saturation")
    single_rate, singles = _measured(wrk_binary, base, dsn, "earn.lua", f"BS{run_id}",
                                     wrk_args, env)
    say(f"batches: POST /v1/pos/batches of {BATCH_SIZE} for {duration}s at saturation, "
        f"{batch_connections} connections")
    batch_rate, batched = _measured(
        wrk_binary, base, dsn, "batch.lua", f"BB{run_id}",
        {**wrk_args, "connections": batch_connections}, env)
    single_check = asyncio.run(storm_check(dsn, f"BS{run_id}"))
    batch_check = asyncio.run(storm_check(dsn, f"BB{run_id}"))
    # Every key answered is one purchase and one earn entry: none refused, none doubled.
    exact = all(c["keys"] == c["purchases"] == c["earns"] and c["doubled"] == 0
                for c in (single_check, batch_check))
    say(f"batches: {batch_rate:,.0f} purchases/s in batches, {single_rate:,.0f} alone; "
        + ("exactly once" if exact else "NOT exactly once"))
    return Result(
        "batches", batch_rate, single_rate, "purchases/s",
        "POST /v1/pos/purchases, one purchase a request",
        {**common, "batch": BATCH_SIZE, "batch_connections": batch_connections},
        {"batch_requests_per_s": round(batched["rps"], 2),
         "batch_p50_ms": batched["p50_us"] / 1000, "batch_p99_ms": batched["p99_us"] / 1000,
         "batch_errors": batched["errors"], "batch_cpu_cores": batched["cpu_cores"],
         "single_p50_ms": singles["p50_us"] / 1000, "single_p99_ms": singles["p99_us"] / 1000,
         "single_errors": singles["errors"], "single_cpu_cores": singles["cpu_cores"],
         "batch_check": batch_check, "single_check": single_check, "exactly_once": exact},
        passed=exact and batched["errors"] == 0 and singles["errors"] == 0)
