"""``loyalty``: the API server and the commands operators and scheduled jobs run.

Commands: serve, migrate, scheduler, worker, jobs, staff, terminal, points, tiers, rfm, campaigns,
import, analytics, seed-demo.

Every command reads the same settings as ``serve`` and, with no URLs configured, joins (or
starts) the same embedded servers under the data directory, so it works while ``make run`` runs.
Only serve, migrate and seed-demo may create a new embedded database: any other command would
fill one that no API reads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, get_args
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import uvicorn

from cli.http import OneWriteHttpTools
from jobs.catalogue import job_named, job_statuses, schedules
from jobs.definition import make_context
from jobs.runs import run_once
from jobs.scheduler import JOB_STATEMENT_TIMEOUT_SECONDS, run_scheduler
from loyalty.access.audit import record_audit
from loyalty.access.passwords import Passwords, check_new_password
from loyalty.access.staff import create_staff, deactivate_staff, set_staff_role
from loyalty.access.stores import create_terminal, ensure_store
from loyalty.access.tokens import load_or_create_signing_key
from loyalty.core.db import Connection, create_pool, init_connection, migrate, transaction
from loyalty.core.embedded import ServiceUrls, export, service_urls
from loyalty.core.errors import ConfigurationError, InvalidInput, LoyaltyError
from loyalty.core.logs import configure_logging
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings, load_settings
from loyalty.insights.churn_evaluation import Evaluation
from loyalty.insights.churn_evaluation import evaluate as evaluate_churn
from loyalty.insights.rfm import refresh_rfm
from loyalty.ops.delivery import run_delivery_worker
from loyalty.ops.demo import seed_demo
from loyalty.ops.importing import run_import
from loyalty.points.expiry import expire_points, release_points
from loyalty.points.rules import RuleBook
from loyalty.points.tiers import evaluate_tiers
from loyalty.promotions.campaigns import launch_due_campaigns
from schemas.admin import StaffCreate, StaffRole, TerminalCreate

log = logging.getLogger("loyalty")
T = TypeVar("T")


@contextlib.contextmanager
def _services(
    settings: Settings, *, need_redis: bool, create: bool = False
) -> Iterator[ServiceUrls]:
    # SIGTERM ends the process through SystemExit, so the embedded servers are stopped on the
    # way out instead of being orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with service_urls(settings.database_url, settings.redis_url, settings.data_path,
                      need_redis=need_redis, create=create) as urls:
        yield urls


def _with_connection(
    settings: Settings, work: Callable[[Connection], Awaitable[T]], *, create: bool = False
) -> T:
    """Run ``work`` in one transaction on the configured (or embedded) database, migrated."""

    async def run(dsn: str) -> T:
        await migrate(dsn)
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            async with transaction(pool) as conn:
                return await work(conn)
        finally:
            await pool.close()

    with _services(settings, need_redis=False, create=create) as urls:
        return asyncio.run(run(urls.database_url))


def _in_batches(settings: Settings, work: Callable[[Connection], Awaitable[T]]) -> T:
    """Run batch work on a connection of its own, outside any transaction (batch functions
    commit batch by batch), on the configured (or embedded) database, migrated."""

    async def run(dsn: str) -> T:
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            await init_connection(conn)
            return await work(conn)
        finally:
            await conn.close()

    with _services(settings, need_redis=False) as urls:
        return asyncio.run(run(urls.database_url))


def _as_of(text: str | None) -> dt.datetime:
    """``--now`` of a batch command: an ISO 8601 instant with its offset, default now."""
    if not text:
        return dt.datetime.now(dt.UTC)
    try:
        now = dt.datetime.fromisoformat(text)
    except ValueError:
        sys.exit(f"loyalty: --now {text!r} is not an ISO 8601 time")
    if now.tzinfo is None:
        sys.exit("loyalty: --now needs a time zone offset, e.g. 2027-01-01T00:05:00+09:00")
    return now


def _passwords(settings: Settings) -> Passwords:
    return Passwords(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
                     parallelism=settings.argon2_parallelism)


# -- commands ---------------------------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    schedules(settings)  # a bad LOYALTY_JOB_SCHEDULES stops here, not in a background task
    with _services(settings, need_redis=True, create=True) as urls:
        export(urls)
        if settings.jwt_private_key is None:
            # Made once here, before the workers start, rather than raced for by each.
            load_or_create_signing_key(settings.data_path)
        if settings.migrate_on_start:
            for name in asyncio.run(migrate(urls.database_url)):
                log.info("migrated: %s", name)
        log.info("serving on http://%s:%d (OpenAPI at /schema)", settings.host, settings.port)
        uvicorn.run(
            "api.app:served_app", factory=True, host=settings.host, port=settings.port,
            workers=settings.workers, log_level=settings.log_level, access_log=False,
            loop="auto", http=OneWriteHttpTools, lifespan="on",
            # Client addresses come from api.auth.client_address and LOYALTY_TRUSTED_PROXIES
            # only; uvicorn's own X-Forwarded-For handling would trust any local caller.
            proxy_headers=False,
        )


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    with _services(settings, need_redis=False, create=True) as urls:
        applied = asyncio.run(migrate(urls.database_url))
    print("\n".join(applied) if applied else "database is up to date")


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> None:
    # Redis too: the dashboard_figures job keeps its figures where the console reads them (the
    # embedded Redis of the same data directory is joined, not started anew).
    with _services(settings, need_redis=True) as urls:
        if settings.migrate_on_start:
            asyncio.run(migrate(urls.database_url))
        asyncio.run(run_scheduler(_with_redis(settings, urls), urls.database_url))


def _with_redis(settings: Settings, urls: ServiceUrls) -> Settings:
    """``settings`` with the Redis resolved (the embedded one's URL when none is set)."""
    return msgspec.structs.replace(settings, redis_url=urls.redis_url or None)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    with _services(settings, need_redis=False) as urls:
        if settings.migrate_on_start:
            asyncio.run(migrate(urls.database_url))
        if settings.webhooks_worker_nice:
            os.nice(settings.webhooks_worker_nice)
        log.info("delivering webhooks")
        asyncio.run(run_delivery_worker(settings, urls.database_url))


def cmd_jobs_list(settings: Settings, args: argparse.Namespace) -> None:
    now = dt.datetime.now(dt.UTC)
    statuses = _with_connection(settings, lambda conn: job_statuses(conn, settings, now))
    tz = ZoneInfo(settings.timezone)

    def when(moment: dt.datetime | None) -> str:
        return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment else "-"

    rows = [("job", "schedule", "next run", "last run", "outcome")]
    for job in statuses:
        last = job.last_run
        outcome = "running" if job.running else (last.outcome if last else "-")
        rows.append((job.name, job.schedule or "off", when(job.next_run_at),
                     when(last.started_at if last else None), outcome))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    print(f"(times in {settings.timezone})")


def cmd_jobs_run(settings: Settings, args: argparse.Namespace) -> None:
    job = job_named(args.name)
    if job is None:
        sys.exit(f"loyalty: no job named {args.name!r}; `loyalty jobs list` names them")
    now = _as_of(args.now)

    async def run(dsn: str) -> Any:
        await migrate(dsn)
        pool = await create_pool(dsn, min_size=1, max_size=2,
                                 statement_timeout_seconds=JOB_STATEMENT_TIMEOUT_SECONDS)
        try:
            return await run_once(make_context(dsn, pool, ready), job, as_of=now)
        finally:
            await pool.close()

    with _services(settings, need_redis=True) as urls:
        ready = _with_redis(settings, urls)
        done = asyncio.run(run(urls.database_url))
    counts = ", ".join(f"{name} {value}" for name, value in done.counts.items())
    print(f"{job.name}: {done.outcome} (run {done.run_id}){': ' + counts if counts else ''}")
    if done.outcome != "succeeded":
        sys.exit(f"loyalty: {done.error}")


def cmd_staff_create(settings: Settings, args: argparse.Namespace) -> None:
    data = msgspec.convert({"email": args.email, "password": args.password, "role": args.role,
                            "display_name": args.name or ""}, StaffCreate)
    try:
        check_new_password(data.password)
    except InvalidInput as exc:
        sys.exit(f"loyalty: --password: {exc.detail}")
    password_hash = asyncio.run(_passwords(settings).hash(data.password))

    async def work(conn: Connection) -> Any:
        async with conn.transaction():
            account = await create_staff(conn, email=data.email, password_hash=password_hash,
                                         role=data.role, display_name=data.display_name)
            # Whoever ran the command is not an account: the audit row says the CLI did it.
            await record_audit(conn, actor_kind="cli", actor_id=None, action="staff.create",
                               subject_kind="staff", subject_id=account.staff_id,
                               details={"role": data.role, "via": "loyalty staff create"})
        return account

    account = _with_connection(settings, work)
    print(f"staff {account.email} ({account.role}) created: {account.staff_id}")


def cmd_staff_deactivate(settings: Settings, args: argparse.Namespace) -> None:
    account = _with_connection(settings, lambda conn: deactivate_staff(conn, args.email))
    print(f"staff {account.email} deactivated: it can no longer sign in, and its sessions "
          "have ended on every instance")


def cmd_staff_set_role(settings: Settings, args: argparse.Namespace) -> None:
    account = _with_connection(settings, lambda conn: set_staff_role(conn, args.email,
                                                                     args.role))
    print(f"staff {account.email} is now {account.role}: its sessions have ended, and it "
          "signs in again to work with the new role")


def cmd_terminal_create(settings: Settings, args: argparse.Namespace) -> None:
    msgspec.convert({"store_code": args.store, "name": args.name or ""}, TerminalCreate)

    async def work(conn: Connection) -> Any:
        store = await ensure_store(conn, code=args.store, name=args.store_name)
        return await create_terminal(conn, store=store, name=args.name or "")

    created = _with_connection(settings, work)
    if args.json:
        print(json.dumps({"terminal_id": str(created.terminal.terminal_id),
                          "store": created.terminal.store.code, "api_key": created.api_key}))
    else:
        print(f"terminal {created.terminal.terminal_id} for store {created.terminal.store.code}")
        print(f"API key (shown once, store it now): {created.api_key}")


def cmd_seed_demo(settings: Settings, args: argparse.Namespace) -> None:
    passwords = _passwords(settings)
    summary = _with_connection(settings, lambda conn: seed_demo(conn, passwords,
                                                                 settings.default_region),
                               create=True)
    print(summary)


def cmd_points(settings: Settings, args: argparse.Namespace) -> None:
    now = _as_of(args.now)
    work = expire_points if args.points_command == "expire" else release_points
    totals = _in_batches(settings, lambda conn: work(conn, now=now,
                                                     batch_size=args.batch_size))
    done = "expired" if args.points_command == "expire" else "released"
    print(f"{totals['points']} points {done} from {totals['lots']} lots of "
          f"{totals['members']} members")


def cmd_tiers_evaluate(settings: Settings, args: argparse.Namespace) -> None:
    now = _as_of(args.now)
    totals = _in_batches(settings, lambda conn: evaluate_tiers(
        conn, rulebook=RuleBook(), now=now, tz=ZoneInfo(settings.timezone),
        batch_size=args.batch_size))
    print(f"{totals['members']} members evaluated, {totals['changed']} changed tier")


def cmd_rfm_refresh(settings: Settings, args: argparse.Namespace) -> None:
    now = _as_of(args.now)
    window_days = settings.rfm_window_days if args.window_days is None else args.window_days
    if not 1 <= window_days <= 3650:
        sys.exit("loyalty: --window-days must be between 1 and 3650")
    totals = _in_batches(settings, lambda conn: refresh_rfm(conn, now=now,
                                                            window_days=window_days))
    print(f"{totals['members']} members scored over {window_days} days, "
          f"{totals['changed']} rows changed, {totals['removed']} removed")


def cmd_campaigns_launch_due(settings: Settings, args: argparse.Namespace) -> None:
    now = _as_of(args.now)
    programme = Programme.from_settings(settings)

    launched = _in_batches(settings, lambda conn: launch_due_campaigns(
        conn, rulebook=RuleBook(), programme=programme, now=now))
    print(f"{launched} campaigns launched")


def cmd_import(settings: Settings, args: argparse.Namespace) -> None:
    with _services(settings, need_redis=False) as urls:
        summary = asyncio.run(run_import(
            urls.database_url, args.import_command, Path(args.file),
            report=Path(args.report) if args.report else None, region=settings.default_region,
            currency=settings.currency, create_stores=getattr(args, "create_stores", False),
            batch_size=args.batch_size, tz=ZoneInfo(settings.timezone),
            dormancy_days=settings.dormancy_days))
    print(summary)


def _calibration_end(text: str, timezone: str) -> dt.datetime:
    """A date (the start of that day in the business time zone) or a time with its offset."""
    try:
        if len(text) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(),
                                       ZoneInfo(timezone))
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        sys.exit(f"loyalty: --calibration-end {text!r} is not a date (2026-04-01) or an ISO "
                 "8601 time with its offset")
    if moment.tzinfo is None:
        sys.exit("loyalty: --calibration-end needs a time zone offset, e.g. "
                 "2026-04-01T00:00:00+09:00, or give a date")
    return moment


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cmd_analytics_evaluate(settings: Settings, args: argparse.Namespace) -> None:
    calibration_end = _calibration_end(args.calibration_end, settings.timezone)
    result: Evaluation = _in_batches(settings, lambda conn: evaluate_churn(
        conn, calibration_end=calibration_end, horizon_days=args.horizon,
        now=dt.datetime.now(dt.UTC), at_risk_multiple=settings.at_risk_multiple,
        at_risk_min_purchases=settings.at_risk_min_purchases))
    if args.json:
        print(msgspec.json.encode(
            [{"method": v.method, "precision": v.precision, "recall": v.recall, "f1": v.f1,
              "auc": v.auc} for v in result.verdicts]).decode())
        return
    print(f"no purchase in the {args.horizon} days after {calibration_end.isoformat()}: "
          f"{result.silent:,} of the {result.members:,} members who had bought by then")
    print(f"{'method':<16} {'precision':>9} {'recall':>9} {'f1':>9} {'auc':>9}")
    for v in result.verdicts:
        print(f"{v.method:<16} {_figure(v.precision):>9} {_figure(v.recall):>9} "
              f"{_figure(v.f1):>9} {_figure(v.auc):>9}")


_ROLES = list(get_args(StaffRole))


def _group(commands: Any, name: str, text: str) -> Any:
    """``loyalty NAME SUBCOMMAND``: a command made of subcommands."""
    return commands.add_parser(name, help=text).add_subparsers(dest=f"{name}_command",
                                                              required=True)


def _acts_as_of(command: argparse.ArgumentParser, doing: str = "act", *,
                batch_size: bool = False) -> None:
    """The options of a batch command: the moment it acts as of (``_as_of``), and how many
    members it changes per transaction."""
    command.add_argument("--now", help=f"the moment to {doing} as of (ISO 8601, default now)")
    if batch_size:
        command.add_argument("--batch-size", type=int, default=5_000,
                             help="members per transaction")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loyalty", description=__doc__.splitlines()[0],
        epilog="With no LOYALTY_DATABASE_URL, every command uses the embedded database in"
               " LOYALTY_DATA_DIR (by default .loyalty in the project's checkout).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="apply migrations and serve the API").set_defaults(
        run=cmd_serve)
    commands.add_parser("migrate", help="apply pending migrations").set_defaults(run=cmd_migrate)
    commands.add_parser("scheduler", help="run the job scheduler on its own").set_defaults(
        run=cmd_scheduler)
    commands.add_parser("worker", help="run a webhook delivery worker on its own").set_defaults(
        run=cmd_worker)

    jobs = _group(commands, "jobs", "scheduled jobs (docs/jobs.md)")
    jobs.add_parser("list", help="each job's schedule, next run and last run").set_defaults(
        run=cmd_jobs_list)
    run = jobs.add_parser("run", help="run a job now (refused while it is running)")
    run.add_argument("name", help="the job, as `loyalty jobs list` names it")
    _acts_as_of(run)
    run.set_defaults(run=cmd_jobs_run)

    staff = _group(commands, "staff", "staff accounts")
    create = staff.add_parser("create", help="create a staff account (the first admin)")
    create.add_argument("--email", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--role", required=True, choices=_ROLES)
    create.add_argument("--name")
    create.set_defaults(run=cmd_staff_create)
    deactivate = staff.add_parser("deactivate", help="stop an account signing in and end its "
                                                     "sessions")
    deactivate.add_argument("--email", required=True)
    deactivate.set_defaults(run=cmd_staff_deactivate)
    set_role = staff.add_parser("set-role", help="change an account's role (ends its sessions)")
    set_role.add_argument("--email", required=True)
    set_role.add_argument("--role", required=True, choices=_ROLES)
    set_role.set_defaults(run=cmd_staff_set_role)

    terminal = _group(commands, "terminal", "store terminals")
    create = terminal.add_parser("create", help="create a terminal key (and its store if new)")
    create.add_argument("--store", required=True, help="store code")
    create.add_argument("--store-name", help="name of the store, when it is new")
    create.add_argument("--name", help="name of the terminal")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(run=cmd_terminal_create)

    points = _group(commands, "points", "batch work on points")
    for name, text in [("expire", "expire every lot past its expiry"),
                       ("release", "release pending points whose return window has passed")]:
        command = points.add_parser(name, help=text)
        _acts_as_of(command, batch_size=True)
        command.set_defaults(run=cmd_points)

    tiers = _group(commands, "tiers", "tier work")
    evaluate = tiers.add_parser("evaluate", help="move every member to the tier they qualify "
                                                 "for (the period-end job)")
    _acts_as_of(evaluate, batch_size=True)
    evaluate.set_defaults(run=cmd_tiers_evaluate)

    rfm = _group(commands, "rfm", "RFM scores")
    refresh = rfm.add_parser("refresh", help="recompute every member's RFM scores")
    _acts_as_of(refresh, "score")
    refresh.add_argument("--window-days", type=int,
                         help="days of purchases counted (default LOYALTY_RFM_WINDOW_DAYS)")
    refresh.set_defaults(run=cmd_rfm_refresh)

    campaigns = _group(commands, "campaigns", "campaign work")
    due = campaigns.add_parser("launch-due", help="launch scheduled campaigns whose start has "
                                                  "come, and finish interrupted launches")
    _acts_as_of(due)
    due.set_defaults(run=cmd_campaigns_launch_due)

    imports = _group(commands, "import", "import history from CSV (docs/importing.md)")
    for name, text in [("members", "add members, found again by their external id"),
                       ("purchases", "add past purchases (earning no points)")]:
        command = imports.add_parser(name, help=text)
        command.add_argument("file", help="the CSV file")
        command.add_argument("--report", help="where to write rejected rows "
                                              "(default FILE.rejected.csv next to FILE)")
        command.add_argument("--batch-size", type=int, default=50_000,
                             help="rows per COPY and per transaction")
        if name == "purchases":
            command.add_argument("--create-stores", action="store_true",
                                 help="create unknown stores from their code, not reject")
        command.set_defaults(run=cmd_import)

    analytics = _group(commands, "analytics", "analytics work (docs/analytics.md)")
    evaluate = analytics.add_parser(
        "evaluate", help="judge the churn model, the at-risk rule and the best fixed N-day rule "
                         "on the purchases after a calibration end (writes nothing)")
    evaluate.add_argument("--calibration-end", required=True,
                          help="the purchases after it are held out (a date in the business "
                               "time zone, or an ISO 8601 time with its offset)")
    evaluate.add_argument("--horizon", type=int, default=90,
                          help="days after the calibration end judged (default 90)")
    evaluate.add_argument("--json", action="store_true",
                          help="print a JSON list of {method, precision, recall, f1, auc}")
    evaluate.set_defaults(run=cmd_analytics_evaluate)

    commands.add_parser("seed-demo", help="a few stores, staff and members to try the API").\
        set_defaults(run=cmd_seed_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"loyalty: {exc.detail}")
    configure_logging(settings.log_level)
    try:
        args.run(settings, args)
    except LoyaltyError as exc:
        sys.exit(f"loyalty: {exc.detail}")
    except msgspec.ValidationError as exc:
        sys.exit(f"loyalty: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
