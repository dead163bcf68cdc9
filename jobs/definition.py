"""What a job is (a name, a default schedule, a call into the domain) and what every job may
use. Below both the catalogue of jobs and the run history, so neither imports the other to
know what a job is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from loyalty.core.db import Pool
from loyalty.core.programme import Programme
from loyalty.core.settings import Settings
from loyalty.points.rules import RuleBook


@dataclass(frozen=True)
class JobContext:
    """What every job may use: built once per process."""

    dsn: str
    pool: Pool
    settings: Settings
    rulebook: RuleBook
    programme: Programme

    @property
    def tz(self) -> ZoneInfo:
        return self.programme.timezone


Counts = dict[str, int]


@dataclass(frozen=True)
class Job:
    name: str
    cron: str
    summary: str
    run: Callable[[JobContext, dt.datetime], Awaitable[Counts]]


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """Five fields (minute hour day month weekday), or six with seconds first."""
    fields = expression.split()
    if len(fields) == 5:
        return CronTrigger.from_crontab(expression, timezone=timezone)
    if len(fields) == 6:
        second, minute, hour, day, month, day_of_week = fields
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=day_of_week, timezone=timezone)
    raise ValueError(f"{expression!r} is not a cron expression of 5 fields (or 6, seconds "
                     "first)")


def make_context(dsn: str, pool: Pool, settings: Settings) -> JobContext:
    return JobContext(dsn=dsn, pool=pool, settings=settings, rulebook=RuleBook(),
                      programme=Programme.from_settings(settings))
