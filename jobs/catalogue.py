"""Every scheduled job: its name, default schedule and what it does, as of a given moment.

A job is a thin call into the domain (``loyalty.*``), where the set-based SQL lives; here it
only picks its settings. Each acts as of the moment it is given, never the clock: a scheduled
run acts as of its tick, so running one tick twice changes nothing the second time, and tests
drive the jobs on a calendar of their own. Schedules are cron expressions in the business time
zone, overridden by ``LOYALTY_JOB_SCHEDULES``.
"""

from __future__ import annotations

import datetime as dt

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from jobs.definition import Counts, Job, JobContext, cron_trigger
from jobs.runs import RUNS_KEPT, delete_old_runs, latest_runs, running_jobs
from loyalty.access.audit import delete_old_audit_rows
from loyalty.core.db import Connection, analyze_after
from loyalty.core.errors import ConfigurationError, ServiceUnavailable
from loyalty.core.idempotency import IDEMPOTENCY_KEPT, delete_old_idempotency_keys
from loyalty.core.settings import Settings
from loyalty.insights.at_risk import flag_at_risk
from loyalty.insights.churn_model import fit_and_score
from loyalty.insights.dashboard import prepare_default_views
from loyalty.insights.dormancy import flag_dormant, hand_over_dormant
from loyalty.insights.kpis import snapshot_kpis
from loyalty.insights.rfm import refresh_rfm
from loyalty.members.erasure import erase_due_members, erase_inactive_members
from loyalty.members.profiles import fill_member_skeletons
from loyalty.ops.delivery import delete_old_events
from loyalty.points.expiry import expire_points, release_points, remind_expiring_points
from loyalty.points.tiers import evaluate_tiers
from loyalty.promotions.birthdays import give_birthday_rewards
from loyalty.promotions.campaigns import launch_due_campaigns
from schemas.jobs import JobStatus


async def _dormancy(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        counts = await flag_dormant(conn, now=now, tz=ctx.tz, days=ctx.settings.dormancy_days)
        await analyze_after(conn, counts["flagged"], "members", "member_status_changes")
    return counts


async def _reactivation(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await hand_over_dormant(conn, template_id=ctx.settings.reactivation_campaign,
                                       rulebook=ctx.rulebook, programme=ctx.programme, now=now)


async def _points_expiry(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        counts = await expire_points(conn, now=now)
        await analyze_after(conn, counts["lots"], "point_lots", "point_entries",
                            "point_balances")
    return counts


async def _expiring_soon(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await remind_expiring_points(conn, now=now, tz=ctx.tz,
                                            days_ahead=ctx.settings.expiring_soon_days)


async def _points_release(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await release_points(conn, now=now)


async def _tier_evaluation(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        counts = await evaluate_tiers(conn, rulebook=ctx.rulebook, now=now, tz=ctx.tz)
        await analyze_after(conn, counts["changed"], "point_balances", "member_tiers")
    return counts


async def _rfm_refresh(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        counts = await refresh_rfm(conn, now=now, window_days=ctx.settings.rfm_window_days)
        await analyze_after(conn, counts["changed"] + counts["removed"], "member_rfm")
    return counts


async def _at_risk(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await flag_at_risk(conn, now=now, multiple=ctx.settings.at_risk_multiple,
                                  min_purchases=ctx.settings.at_risk_min_purchases)


async def _churn_model(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await fit_and_score(conn, now=now, margin=ctx.settings.ltv_margin)


async def _birthday_rewards(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await give_birthday_rewards(
            conn, now=now, tz=ctx.tz, points=ctx.settings.birthday_points,
            coupon_template_id=ctx.settings.birthday_coupon_template, rulebook=ctx.rulebook,
            programme=ctx.programme)


async def _kpi_snapshot(ctx: JobContext, now: dt.datetime) -> Counts:
    """The figures of the business day before ``now`` (the day that has just ended)."""
    yesterday = now.astimezone(ctx.tz).date() - dt.timedelta(days=1)
    async with ctx.pool.acquire() as conn:
        return await snapshot_kpis(conn, day=yesterday, tz=ctx.tz,
                                   point_value=ctx.settings.point_value)


async def _dashboard_figures(ctx: JobContext, now: dt.datetime) -> Counts:
    """The console dashboard's default views of the day of ``now``, kept in Redis, where the
    page looks before computing them itself."""
    if not ctx.settings.redis_url:
        raise ConfigurationError(
            "LOYALTY_REDIS_URL is not set for this process, so the dashboard's figures have"
            " nowhere to be kept: set it to the Redis the console uses, or turn this job off"
            " with LOYALTY_JOB_SCHEDULES=dashboard_figures=off")
    client = aioredis.from_url(ctx.settings.redis_url, socket_timeout=10,
                               socket_connect_timeout=5)
    try:
        try:
            await client.ping()
        except RedisError as exc:
            # Before the minutes of computing: figures that cannot be kept are wasted work.
            raise ServiceUnavailable(
                f"Redis cannot be reached ({exc}), so the dashboard's figures cannot be kept;"
                " the dashboard computes them at its first view until Redis is back. Run this"
                " job again once it is") from None
        views = await prepare_default_views(
            client, ctx.pool, now=now, tz=ctx.tz, margin=ctx.settings.ltv_margin,
            point_value=ctx.settings.point_value)
    finally:
        await client.aclose()
    return {"views": views}


async def _campaign_launch(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        launched = await launch_due_campaigns(conn, rulebook=ctx.rulebook,
                                              programme=ctx.programme, now=now)
    return {"campaigns": launched}


async def _idempotency_cleanup(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await delete_old_idempotency_keys(conn, before=now - IDEMPOTENCY_KEPT)


async def _member_skeletons(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await fill_member_skeletons(conn)


async def _run_history_cleanup(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await delete_old_runs(conn, before=now - RUNS_KEPT)


async def _webhook_retention(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await delete_old_events(
            conn, before=now - dt.timedelta(days=ctx.settings.webhooks_retention_days))


async def _audit_retention(ctx: JobContext, now: dt.datetime) -> Counts:
    async with ctx.pool.acquire() as conn:
        return await delete_old_audit_rows(
            conn, retention_days=ctx.settings.audit_retention_days, now=now)


async def _erasure(ctx: JobContext, now: dt.datetime) -> Counts:
    return await erase_due_members(ctx.pool, now=now)


async def _member_retention(ctx: JobContext, now: dt.datetime) -> Counts:
    return await erase_inactive_members(ctx.pool, years=ctx.settings.member_retention_years,
                                        now=now)


# In running order within a night: flags before the hand-over, scores after the flags.
JOBS: tuple[Job, ...] = (
    Job("points_release", "10 * * * *", "pending points whose return window has passed become "
        "available", _points_release),
    Job("campaign_launch", "* * * * *", "scheduled campaigns whose start has come are launched",
        _campaign_launch),
    Job("birthday_rewards", "0 0 * * *", "members whose birthday it is get the birthday points "
        "and coupon, once a year", _birthday_rewards),
    Job("points_expiry", "5 0 * * *", "lots past their expiry date expire", _points_expiry),
    Job("expiring_soon", "10 0 * * *", "members are told once of points expiring within "
        "LOYALTY_EXPIRING_SOON_DAYS days (points.expiring_soon)", _expiring_soon),
    Job("tier_evaluation", "20 0 * * *", "every member is moved to the tier they qualify for "
        "(at period end, and anyone a return or expiry moved)", _tier_evaluation),
    Job("kpi_snapshot", "45 0 * * *", "the figures of the day that has ended are stored",
        _kpi_snapshot),
    Job("dashboard_figures", "50 0 * * *", "the console dashboard's figures for the new day "
        "(by day, week and month) are computed ahead, so its first view does not wait",
        _dashboard_figures),
    Job("dormancy", "0 3 * * *", "members without activity for LOYALTY_DORMANCY_DAYS become "
        "dormant", _dormancy),
    Job("at_risk", "15 3 * * *", "active members silent for longer than their own habit are "
        "flagged at risk", _at_risk),
    Job("reactivation", "30 3 * * *", "newly dormant members are handed to a wave of the "
        "reactivation campaign", _reactivation),
    Job("rfm_refresh", "0 4 * * *", "RFM scores of every member are recomputed", _rfm_refresh),
    Job("churn_model", "0 5 * * 1", "BG/NBD and Gamma-Gamma are refitted on the purchase "
        "history and every member's churn scores recomputed (weekly)", _churn_model),
    Job("idempotency_cleanup", "30 4 * * *", "idempotency keys older than 72 hours are deleted",
        _idempotency_cleanup),
    Job("member_skeletons", "*/15 * * * *", "members without look-alike keys (from before "
        "migration 0016, or imported) get them, for the duplicates list", _member_skeletons),
    Job("run_history_cleanup", "40 4 * * *", "job runs older than 90 days are deleted (each "
        "job's latest tick is kept)", _run_history_cleanup),
    Job("webhook_retention", "50 4 * * *", "outbox events older than "
        "LOYALTY_WEBHOOKS_RETENTION_DAYS that wait for no delivery are deleted, with their "
        "delivery log", _webhook_retention),
    Job("audit_retention", "55 4 * * *", "audit rows of days older than "
        "LOYALTY_AUDIT_RETENTION_DAYS are deleted, whole days at a time (0, the default: "
        "kept for ever)", _audit_retention),
    Job("erasure", "35 * * * *", "members whose erasure was asked for at least "
        "LOYALTY_ERASURE_GRACE_DAYS ago (and not cancelled) are erased", _erasure),
    Job("member_retention", "40 4 * * *", "members without a purchase or engagement for "
        "LOYALTY_MEMBER_RETENTION_YEARS are erased (0, the default: kept)", _member_retention),
)


def job_named(name: str) -> Job | None:
    return next((job for job in JOBS if job.name == name), None)


def schedules(settings: Settings) -> dict[str, str | None]:
    """Each job's cron expression after ``LOYALTY_JOB_SCHEDULES``; None for a job turned off."""
    chosen: dict[str, str | None] = {job.name: job.cron for job in JOBS}
    for part in (settings.job_schedules or "").split(";"):
        if not part.strip():
            continue
        name, sep, expression = part.partition("=")
        name, expression = name.strip(), expression.strip()
        if not sep or name not in chosen:
            raise ConfigurationError(
                f"LOYALTY_JOB_SCHEDULES: {part.strip()!r} is not name=cron with a job's name "
                f"({', '.join(chosen)})")
        if expression == "off":
            chosen[name] = None
            continue
        try:
            cron_trigger(expression, settings.timezone)
        except ValueError as exc:
            raise ConfigurationError(f"LOYALTY_JOB_SCHEDULES: {name}: {exc}") from None
        chosen[name] = expression
    return chosen


async def job_statuses(conn: Connection, settings: Settings,
                       now: dt.datetime) -> list[JobStatus]:
    """Every job with its schedule after the settings, next tick, state and latest run."""
    chosen = schedules(settings)
    latest = await latest_runs(conn)
    running = await running_jobs(conn, [job.name for job in JOBS])
    statuses = []
    for job in JOBS:
        cron = chosen[job.name]
        next_run = cron_trigger(cron, settings.timezone).get_next_fire_time(None, now) \
            if cron is not None else None
        statuses.append(JobStatus(
            name=job.name, summary=job.summary, schedule=cron, timezone=settings.timezone,
            next_run_at=next_run, running=job.name in running,
            last_run=latest.get(job.name)))
    return statuses
