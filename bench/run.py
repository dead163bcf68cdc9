"""``make bench``: load a data set, start the service as production would, run the scenarios,
and print each figure next to a reference measured in the same run on the same database.

    python -m bench.run [--members N] [--scenarios earn,latency,read,storm,expiry,launch]
                        [--duration S]

``dormancy`` is run only when named in ``--scenarios``.

With ``LOYALTY_DATABASE_URL`` / ``LOYALTY_REDIS_URL`` set it uses those servers (a database
``loyalty_bench`` is created on the PostgreSQL server and dropped at the end); otherwise it
starts the embedded ones under ``.loyalty/bench``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from asyncpg.connection import LoggedQuery

from bench.load import load
from loyalty.access.auth import TokenSigner, load_or_create_signing_key, start_session
from loyalty.access.stores import create_terminal, ensure_store
from loyalty.core.db import Connection, init_connection, recreate_database, with_database
from loyalty.core.embedded import service_urls
from loyalty.core.ids import uuid7
from loyalty.core.programme import Programme
from loyalty.core.settings import load_settings
from loyalty.insights.dormancy import dormancy_cutoff, flag_dormant
from loyalty.points.expiry import expire_points
from loyalty.points.rules import RuleBook
from loyalty.promotions.campaigns import launch_campaign
from schemas.campaigns import IssueCoupon
from schemas.coupons import FixedAmount

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA_DIR = ROOT / ".loyalty" / "bench"
WORK = DATA_DIR / "work"
RESULTS = BENCH / "results"
DATABASE = "loyalty_bench"
# The scenarios that go through the service (and need wrk); the others call the project's
# functions on copies of the data set.
HTTP_SCENARIOS = ("earn", "latency", "read", "storm")
SCENARIOS = (*HTTP_SCENARIOS, "expiry", "launch")
# Run only when asked for (--scenarios dormancy); the default stays the list above.
OPTIONAL_SCENARIOS = ("dormancy",)
SAMPLE = 100_000
TOKENS = 2_000
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


@dataclass
class Result:
    scenario: str
    value: float
    reference: float
    unit: str
    reference_name: str
    settings: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    passed: bool | None = None

    @property
    def ratio(self) -> float:
        return self.value / self.reference if self.reference else float("nan")


# -- tools -----------------------------------------------------------------------------------


def find_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        say(f"load generator: {found}")
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("wrk not found: installing Debian's wrk package (apt-get install -y wrk)")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                       stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit("bench: wrk is needed (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk)")


def find_pgbench() -> str | None:
    with contextlib.suppress(ImportError):
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"
        if bundled.exists():
            return str(bundled)
    return shutil.which("pgbench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- preparing the data ----------------------------------------------------------------------


async def prepare(server_url: str, members: int) -> dict[str, Any]:
    """A fresh ``loyalty_bench`` database, migrated and loaded; the sample files for wrk."""
    dsn = await recreate_database(server_url, DATABASE)
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        store = await ensure_store(conn, code="BENCH", name="Benchmark store")
        terminal = await create_terminal(conn, store=store, name="bench till")
    finally:
        await conn.close()
    say(f"loading {members:,} members")
    timings = await load(dsn, members=members, store_id=store.store_id,
                         terminal_id=terminal.terminal.terminal_id, now=dt.datetime.now(dt.UTC),
                         progress=say)
    say("loaded in " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))

    signer = TokenSigner(load_or_create_signing_key(DATA_DIR), issuer="loyalty",
                         access_ttl=3600)
    conn = await asyncpg.connect(dsn)
    try:
        sample = [str(r[0]) for r in await conn.fetch(
            "select member_id from bench_members order by random() limit $1", SAMPLE)]
        # Signed in the way the app does it: an access token belongs to a session.
        tokens = [(await start_session(conn, signer, refresh_ttl=3600, max_age=3600,
                                       member_id=UUID(m))).access_token
                  for m in sample[:TOKENS]]
        size = await conn.fetchval("select pg_size_pretty(pg_database_size(current_database()))")
    finally:
        await conn.close()
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "members.lua").write_text("return {" + ",".join(f'"{m}"' for m in sample) + "}\n")
    (WORK / "tokens.lua").write_text("return {" + ",".join(f'"{t}"' for t in tokens) + "}\n")
    return {"dsn": dsn, "terminal_key": terminal.api_key, "store_id": str(store.store_id),
            "terminal_id": str(terminal.terminal.terminal_id), "load_seconds": timings,
            "database_size": size}


# -- the service -----------------------------------------------------------------------------


@contextlib.contextmanager
def running_service(dsn: str, redis_url: str, workers: int, pool: int) -> Any:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(
        LOYALTY_DATABASE_URL=dsn, LOYALTY_REDIS_URL=redis_url, LOYALTY_DATA_DIR=str(DATA_DIR),
        LOYALTY_PORT=str(port), LOYALTY_WORKERS=str(workers), LOYALTY_LOG_LEVEL="warning",
        LOYALTY_MIGRATE_ON_START="false", LOYALTY_DB_POOL_MIN=str(pool),
        LOYALTY_DB_POOL_MAX=str(pool),
        # One terminal and a few members send everything: the limits must not be what is
        # measured. They are still counted (one Redis call a request), as in production.
        LOYALTY_RATE_LIMIT_PER_MINUTE="1000000000",
        # Measured work only: no job runs under a scenario.
        LOYALTY_SCHEDULER="off",
    )
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], cwd=ROOT,
                               env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit("bench: the service did not start")
            time.sleep(0.2)
        say(f"service up on {base}: uvicorn, {workers} workers, pool of {pool} per worker")
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _cpu_snapshot() -> tuple[dict[str, int], int, int]:
    """CPU ticks used so far per process name, and the machine's total and idle ticks."""
    used: dict[str, int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        group = "kernel" if name.startswith("kworker") else name
        used[group] = used.get(group, 0) + int(fields[11]) + int(fields[12])
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return used, sum(ticks), ticks[3] + ticks[4]


def cpu_share(before: tuple[dict[str, int], int, int],
              after: tuple[dict[str, int], int, int], seconds: float) -> dict[str, float]:
    """Where the machine's CPU went between two snapshots, in cores (Linux /proc)."""
    hz = os.sysconf("SC_CLK_TCK")
    share = {"machine_busy": round(
        (os.cpu_count() or 1) * (1 - (after[2] - before[2]) / max(1, after[1] - before[1])), 2)}
    for name in ("python", "postgres", "redis-server", "kernel"):
        ticks = after[0].get(name, 0) - before[0].get(name, 0)
        share[name] = round(ticks / hz / seconds, 2)
    # Processes that end within the window (wrk, pgbench and its backends) take their ticks
    # with them: what is busy but not attributed is theirs.
    share["other"] = round(max(0.0, share["machine_busy"] - sum(
        v for k, v in share.items() if k != "machine_busy")), 2)
    return share


def wrk(binary: str, base: str, script: str, *, seconds: int, connections: int,
        threads: int, env: dict[str, str]) -> dict[str, Any]:
    """Run wrk with a Lua script; returns the JSON summary the script prints, with the CPU
    each kind of process used meanwhile (in cores)."""
    full_env = {**os.environ, "BENCH_LUA": str(BENCH / "wrk"), "BENCH_WORK": str(WORK), **env}
    before = _cpu_snapshot()
    out = subprocess.run(
        [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(BENCH / "wrk" / script), base],
        env=full_env, capture_output=True, text=True, check=True, timeout=seconds + 60)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    summary: dict[str, Any] = json.loads(line)
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["errors"] = sum(summary[k] for k in ("connect_errors", "read_errors",
                                                 "write_errors", "status_errors", "timeouts"))
    summary["cpu_cores"] = cpu_share(before, _cpu_snapshot(), summary["duration_us"] / 1e6)
    return summary


def pgbench(binary: str, dsn: str, *, seconds: int, connections: int, threads: int,
            defines: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Transactions per second of bench/pgbench/earn.sql."""
    args = [binary, "-n", "-M", "prepared", "-c", str(connections), "-j", str(threads),
            "-T", str(seconds), "-f", str(BENCH / "pgbench" / "earn.sql")]
    for name, value in defines.items():
        args += ["-D", f"{name}={value}"]
    before = _cpu_snapshot()
    out = subprocess.run([*args, dsn], capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out.stderr.strip()[-500:]}")
    cpu = cpu_share(before, _cpu_snapshot(), seconds)
    for line in out.stdout.splitlines():
        if line.startswith("tps =") and "without initial connection time" in line:
            return float(line.split()[2]), cpu
    raise RuntimeError(f"pgbench printed no tps: {out.stdout[-500:]}")


# -- scenarios -------------------------------------------------------------------------------


def _latency(summary: dict[str, Any]) -> dict[str, Any]:
    return {"rps": round(summary["rps"], 1), "p50_ms": summary["p50_us"] / 1000,
            "p99_ms": summary["p99_us"] / 1000, "max_ms": summary["max_us"] / 1000,
            "errors": summary["errors"], "requests": summary["requests"],
            "cpu_cores": summary["cpu_cores"]}


async def storm_check(dsn: str, prefix: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            select (select count(*) from idempotency_keys where idempotency_key like $1) as keys,
                   (select count(*) from purchases where receipt_id like $1) as purchases,
                   (select count(*) from point_entries e
                      join purchases p on p.member_id = e.member_id
                                      and p.purchase_id = e.purchase_id
                     where p.receipt_id like $1 and e.kind = 'earn') as earns,
                   (select count(*) from (
                        select p.receipt_id from purchases p
                          join point_entries e on e.member_id = p.member_id
                                              and e.purchase_id = p.purchase_id
                         where p.receipt_id like $1 and e.kind = 'earn'
                         group by p.receipt_id having count(*) > 1) d) as doubled
            """,
            prefix + "-%")
        assert row is not None
        return dict(row)
    finally:
        await conn.close()


_BARE_EXPIRY = """
with due as materialized (
    select member_id, lot_id, remaining, released_at is not null as released
      from point_lots where remaining > 0 and expires_at <= $1
), per_member as materialized (
    select member_id, gen_random_uuid() as entry_id, sum(remaining) as total,
           coalesce(sum(remaining) filter (where released), 0) as from_available,
           coalesce(sum(remaining) filter (where not released), 0) as from_pending
      from due group by member_id
), entries as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source, created_at)
    select member_id, entry_id, 'expire', -total, 'points expired', 'system', $1
      from per_member
), allocations as (
    insert into point_allocations (member_id, entry_id, lot_id, points)
    select d.member_id, p.entry_id, d.lot_id, -d.remaining
      from due d join per_member p using (member_id)
), lots as (
    update point_lots l set remaining = 0 from due d
     where l.member_id = d.member_id and l.lot_id = d.lot_id
), balances as (
    update point_balances b
       set available = b.available - p.from_available, pending = b.pending - p.from_pending,
           lifetime_expired = b.lifetime_expired + p.total, version = b.version + 1
      from per_member p where b.member_id = p.member_id
)
select coalesce(sum(total), 0) from per_member
"""


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


async def expiry_scenario(server_url: str) -> Result:
    """The expiry function against the bare SQL an expert would write, each on its own copy."""
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
            bare_points = await conn.fetchval(_BARE_EXPIRY, now)
            bare_seconds = time.perf_counter() - started
        finally:
            await conn.close()
    same = bare_points == totals["points"]
    say(f"expiry: function {function_seconds:.2f}s, bare SQL {bare_seconds:.2f}s, "
        f"{totals['points']:,} points from {totals['lots']:,} lots; same effect: {same}")
    return Result("expiry", function_seconds, bare_seconds, "s", "bare SQL, one statement",
                  {"lots": lots, "due": due, "batch_size": 5000},
                  {"points": totals["points"], "lots_expired": totals["lots"],
                   "members": totals["members"], "same_effect": same}, passed=same)


# The launch an expert would write for a segment of every active member, 10% held out, one
# coupon (valid 30 days) per treated member: one statement, the draw and the holdout computed
# in one window pass, the coupons inserted from the rows the assignment returned. Rows go in
# in member order, so the primary keys and the foreign-key checks walk their indexes in order
# (at 1,000,000 members this took the statement from about 100 s to about 65 s here).
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
    returning 1
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
          from campaigns where campaign_id = $1) as campaign
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


async def _checkpoint(conn: Connection) -> None:
    """Start each timed run with no dirty pages left by the copy or the setup."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("checkpoint")


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
        conn = await asyncpg.connect(with_database(server_url, copies[0]),
                                     server_settings=server_settings)
        await init_connection(conn)
        try:
            await _launch_setup(conn, ids, now)
            await _checkpoint(conn)
            conn.add_query_logger(log)
            say("launch: the project's launch_campaign")
            started = time.perf_counter()
            campaign = await launch_campaign(conn, ids["campaign"], rulebook=RuleBook(),
                                             programme=programme, now=now)
            function_seconds = time.perf_counter() - started
            await asyncio.sleep(0)  # the query logger reports through the event loop
            conn.remove_query_logger(log)
            checks.append(await _launch_check(conn, ids["campaign"]))
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(server_url, copies[1]),
                                     server_settings=server_settings)
        await init_connection(conn)
        try:
            await _launch_setup(conn, ids, now)
            await _checkpoint(conn)
            say("launch: bare SQL")
            started = time.perf_counter()
            await conn.execute(_BARE_LAUNCH, ids["campaign"], HOLDOUT_PERCENT, ids["template"],
                               now, programme.timezone.key)
            bare_seconds = time.perf_counter() - started
            checks.append(await _launch_check(conn, ids["campaign"]))
        finally:
            await conn.close()
    fn, bare = checks
    phases: dict[str, float] = {}
    for query, elapsed in statements:
        phase = _launch_phase(query)
        phases[phase] = round(phases.get(phase, 0.0) + elapsed, 3)
    longest = max((elapsed for _, elapsed in statements), default=0.0)
    members = fn["members"]
    control = round(members * HOLDOUT_PERCENT / 100)
    agree = {key: fn[key] == bare[key] for key in
             ("treated", "control", "coupons", "control_digest", "coupon_columns", "campaign")}
    exact = {
        "control_is_holdout_share": fn["control"] == control,
        "everyone_assigned": fn["treated"] + fn["control"] == members,
        "coupons_only_to_treated": fn["coupons_not_treated"] == bare["coupons_not_treated"] == 0,
        "every_treated_has_a_coupon": (fn["treated_without_coupon"]
                                       == bare["treated_without_coupon"] == 0),
        "launched": campaign.status == "launched",
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
        conn = await asyncpg.connect(with_database(server_url, copies[0]),
                                     server_settings=server_settings)
        await init_connection(conn)
        try:
            await _checkpoint(conn)
            say(f"dormancy: the project's flag_dormant over {members:,} members")
            started = time.perf_counter()
            counts = await flag_dormant(conn, now=now, tz=tz, days=DORMANCY_DAYS)
            function_seconds = time.perf_counter() - started
            checks.append(await _dormancy_check(conn, now, cutoff))
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(server_url, copies[1]),
                                     server_settings=server_settings)
        await init_connection(conn)
        try:
            await _checkpoint(conn)
            say("dormancy: bare SQL")
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute("set local loyalty.status_recorded = 'on'")
                await conn.execute(_BARE_DORMANCY, now, cutoff)
            bare_seconds = time.perf_counter() - started
            checks.append(await _dormancy_check(conn, now, cutoff))
        finally:
            await conn.close()
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


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true", help="keep the loyalty_bench database")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS) - set(OPTIONAL_SCENARIOS)
    if unknown:
        sys.exit(f"bench: unknown scenarios {sorted(unknown)}; "
                 f"choose from {(*SCENARIOS, *OPTIONAL_SCENARIOS)}")
    http = bool(set(chosen) & set(HTTP_SCENARIOS))
    wrk_binary = find_wrk() if http else ""
    pgbench_binary = find_pgbench()
    settings = load_settings()
    common = {"members": args.members, "duration_s": args.duration,
              "connections": args.connections, "wrk_threads": args.threads,
              "workers": args.workers, "cpus": os.cpu_count(),
              "servers": "configured" if settings.database_url else "embedded"}
    results: list[Result] = []
    with service_urls(settings.database_url, settings.redis_url, DATA_DIR,
                      need_redis=http) as urls:
        prepared = asyncio.run(prepare(urls.database_url, args.members))
        dsn = prepared["dsn"]
        common["database_size"] = prepared["database_size"]
        pool = max(4, args.connections // args.workers + 2)
        wrk_args = {"connections": args.connections, "threads": args.threads}
        service = (running_service(dsn, urls.redis_url, args.workers, pool) if http
                   else contextlib.nullcontext(""))
        with service as base:
            run_id = dt.datetime.now().strftime("%H%M%S")
            earn_env = {"BENCH_TERMINAL_KEY": prepared["terminal_key"]}
            earn = None
            if {"earn", "latency"} & set(chosen):
                say("earn: warming up")
                wrk(wrk_binary, base, "earn.lua", seconds=3, **wrk_args,
                    env={**earn_env, "BENCH_RUN": f"W{run_id}"})
                say(f"earn: POST /v1/pos/purchases for {args.duration}s at saturation")
                earn = wrk(wrk_binary, base, "earn.lua", seconds=args.duration, **wrk_args,
                           env={**earn_env, "BENCH_RUN": f"E{run_id}"})
            if "earn" in chosen and earn is not None:
                pgbench_cpu: dict[str, float] = {}
                if pgbench_binary is None:
                    say("earn: pgbench not found, no reference")
                    tps = 0.0
                else:
                    say(f"earn: pgbench reference, {args.connections} clients")
                    tps, pgbench_cpu = pgbench(pgbench_binary, dsn, seconds=args.duration,
                                  connections=args.connections, threads=args.threads,
                                  defines={"members": str(args.members),
                                           "terminal": prepared["terminal_id"],
                                           "store": prepared["store_id"]})
                results.append(Result("earn", earn["rps"], tps, "req/s",
                                       "pgbench tps, same writes", common,
                                       {**_latency(earn), "pgbench_cpu_cores": pgbench_cpu},
                                       passed=earn["errors"] == 0))
            if "latency" in chosen and earn is not None:
                rate = earn["rps"] / 2
                delay = max(1, round(args.connections * 1000 / rate))
                say(f"latency: earn paced at about {rate:.0f} req/s")
                paced = wrk(wrk_binary, base, "earn.lua", seconds=args.duration, **wrk_args,
                            env={**earn_env, "BENCH_RUN": f"L{run_id}",
                                 "BENCH_DELAY_MS": str(delay)})
                live = wrk(wrk_binary, base, "read.lua", seconds=args.duration, **wrk_args,
                           env={"BENCH_PATH": "/health/live", "BENCH_DELAY_MS": str(delay)})
                results.append(Result(
                    "earn latency at half load (p99)", paced["p99_us"] / 1000,
                    live["p99_us"] / 1000, "ms", "p99 of /health/live at the same pace",
                    {**common, "target_rps": round(rate), "delay_ms": delay},
                    {"earn": _latency(paced), "live": _latency(live)},
                    passed=paced["errors"] == 0))
            if "read" in chosen:
                say("read: GET /v1/me/points as random members")
                read = wrk(wrk_binary, base, "read.lua", seconds=args.duration, **wrk_args,
                           env={})
                say("read: reference GET /health/live")
                live = wrk(wrk_binary, base, "read.lua", seconds=args.duration, **wrk_args,
                           env={"BENCH_PATH": "/health/live", "BENCH_TOKENS": "0"})
                results.append(Result("member read", read["rps"], live["rps"], "req/s",
                                      "GET /health/live", common,
                                      {"read": _latency(read), "live": _latency(live)},
                                      passed=read["errors"] == 0))
            if "storm" in chosen:
                say("storm: every purchase sent three times with one key")
                prefix = f"S{run_id}"
                storm = wrk(wrk_binary, base, "earn.lua", seconds=args.duration, **wrk_args,
                            env={**earn_env, "BENCH_RUN": prefix, "BENCH_REPEAT": "3"})
                check = asyncio.run(storm_check(dsn, prefix))
                exact = (check["keys"] == check["purchases"] == check["earns"]
                         and check["doubled"] == 0)
                say(f"storm: {check['keys']:,} keys, {check['purchases']:,} purchases, "
                    f"{check['earns']:,} earn entries, {check['doubled']} doubled: "
                    + ("exactly one earn per key" if exact else "NOT exactly once"))
                results.append(Result("retry storm", storm["rps"],
                                      earn["rps"] if earn else 0.0, "req/s",
                                      "earn at saturation", common,
                                      {**_latency(storm), **check, "exactly_once": exact},
                                      passed=exact and storm["errors"] == 0))
        if "expiry" in chosen:
            results.append(asyncio.run(expiry_scenario(urls.database_url)))
        if "launch" in chosen:
            programme = Programme.from_settings(settings)
            results.append(asyncio.run(launch_scenario(urls.database_url, programme)))
        if "dormancy" in chosen:
            # Last: it reshapes the members' activity in the loaded database before copying.
            results.append(asyncio.run(dormancy_scenario(urls.database_url)))
        if not args.keep:
            asyncio.run(_drop(urls.database_url))
    report(results)
    if any(r.passed is False for r in results):
        sys.exit(1)


async def _drop(server_url: str) -> None:
    admin = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        await admin.execute(f"drop database if exists {DATABASE} with (force)")
    finally:
        await admin.close()


_FILE_NAMES = {"earn": "earn", "earn latency at half load (p99)": "latency",
               "member read": "read", "retry storm": "storm", "expiry": "expiry",
               "launch": "launch", "dormancy": "dormancy"}


def report(results: list[Result]) -> None:
    stamp = dt.datetime.now().strftime("%Y-%m-%d")
    RESULTS.mkdir(exist_ok=True)
    rows = [("scenario", "value", "reference", "ratio", "unit", "check")]
    for r in results:
        rows.append((r.scenario, f"{r.value:,.2f}", f"{r.reference:,.2f} ({r.reference_name})",
                     f"{r.ratio:.2f}", r.unit,
                     {True: "ok", False: "FAILED", None: ""}[r.passed]))
        (RESULTS / f"{stamp}-{_FILE_NAMES[r.scenario]}.json").write_text(json.dumps({
            "scenario": r.scenario, "value": r.value, "reference": r.reference,
            "reference_name": r.reference_name, "ratio": r.ratio, "unit": r.unit,
            "passed": r.passed, "settings": r.settings, "details": r.details,
            "measured_at": dt.datetime.now(dt.UTC).isoformat(),
        }, indent=2) + "\n")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    print("\nwhere the CPU went, in cores of the machine's "
          f"{os.cpu_count()}: busy = service (python) + postgres + redis + kernel + other "
          "(wrk, pgbench and its connections)")
    for r in results:
        for label, cpu in _cpu_details(r.details):
            print(f"  {r.scenario} / {label}: {cpu['machine_busy']:.2f} = {cpu['python']:.2f} "
                  f"+ {cpu['postgres']:.2f} + {cpu['redis-server']:.2f} + {cpu['kernel']:.2f} "
                  f"+ {cpu['other']:.2f}")
    print(f"\nresults written to {RESULTS.relative_to(ROOT)}/{stamp}-*.json")


def _cpu_details(details: dict[str, Any], label: str = "") -> list[tuple[str, dict[str, float]]]:
    found = []
    for key, value in details.items():
        if key == "cpu_cores":
            found.append((label or "run", value))
        elif key == "pgbench_cpu_cores" and value:
            found.append(("pgbench", value))
        elif isinstance(value, dict):
            found += _cpu_details(value, key)
    return found


if __name__ == "__main__":
    main()
