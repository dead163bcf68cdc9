"""Scheduled jobs for operators: what runs when, how each run went, and a run by hand.

Admins and analysts read; only admins start a run. A run started here executes in this
process, in the background, as of the moment it was asked for, under the same lock as the
scheduler's runs: while the job is running anywhere, starting it again is refused (409).
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import FromPath

from api.auth import staff_with
from api.deps import STAFF_DEPENDENCIES, Db, Staff, Svc, utc_now
from api.idempotency import idempotent
from api.params import Cursor, Limit
from jobs.catalogue import job_named, job_statuses
from jobs.definition import Job
from jobs.runs import cancel_started_runs, list_runs, start_run
from loyalty.access.audit import record_audit
from loyalty.access.roles import ADMINS, JOB_READERS
from loyalty.core.errors import NotFound
from schemas.base import Page
from schemas.jobs import JobRun, JobStatus

JobName = Annotated[str, FromPath]


async def cancel_runs() -> None:
    """At shutdown: stop the runs started in this process (here or in the console)."""
    await cancel_started_runs()


def _job(name: str) -> Job:
    job = job_named(name)
    if job is None:
        raise NotFound("no such job", field="name", code="job_not_found")
    return job


class JobsController(Controller):
    path = "/v1/jobs"
    tags = ["jobs"]
    guards = [staff_with(*JOB_READERS)]
    dependencies = STAFF_DEPENDENCIES

    @get("", operation_id="listJobs")
    async def index(self, conn: Db, services: Svc) -> list[JobStatus]:
        """Every job: its schedule, when it is next due, whether it runs now, its last run."""
        return await job_statuses(conn, services.settings, utc_now())

    @get("/{name:str}/runs", operation_id="listJobRuns")
    async def runs(self, name: JobName, conn: Db, limit: Limit = 50,
                   cursor: Cursor = None) -> Page[JobRun]:
        """A job's runs, newest first."""
        return await list_runs(conn, _job(name).name, limit=limit, cursor=cursor)

    @post("/{name:str}/run", operation_id="runJob", status_code=202,
          guards=[staff_with(*ADMINS)])
    @idempotent
    async def run(self, name: JobName, staff: Staff, conn: Db, services: Svc) -> JobRun:
        """Run a job now, as of now; refused with 409 while it is running. Answers at once
        with the run (``running``); follow it under ``/v1/jobs/{name}/runs``."""
        job = _job(name)
        run = await start_run(services.jobs, job, as_of=utc_now(), started_by=staff.staff_id)
        await record_audit(conn, actor_kind="staff", actor_id=staff.staff_id, action="jobs.run",
                           subject_kind="job", subject_id=None,
                           details={"job": job.name, "run_id": run.run_id})
        return run
