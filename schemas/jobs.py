"""Scheduled jobs as staff see them: each job's schedule and state, and its runs."""

from __future__ import annotations

import datetime as dt
from typing import Literal
from uuid import UUID

from schemas.base import Output

RunTrigger = Literal["schedule", "manual"]
RunOutcome = Literal["running", "succeeded", "failed", "abandoned"]


class JobRun(Output):
    """One run: ``scheduled_for`` is the tick of a scheduled run (null for one started by
    hand); the job acted as of ``as_of``. ``attempts`` above 1: the tick was run again after a
    run that died. ``counts`` are the job's own (members scanned, flagged, ...)."""

    run_id: int
    job: str
    trigger: RunTrigger
    scheduled_for: dt.datetime | None
    as_of: dt.datetime
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: RunOutcome
    attempts: int
    counts: dict[str, int]
    error: str | None
    instance: str
    started_by: UUID | None


class JobStatus(Output):
    """A job, its schedule (a cron expression in ``timezone``; null when turned off), when it
    is next due, whether it is running now, and its latest run."""

    name: str
    summary: str
    schedule: str | None
    timezone: str
    next_run_at: dt.datetime | None
    running: bool
    last_run: JobRun | None
