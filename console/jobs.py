"""Jobs: every scheduled job with its schedule, next run (business time zone), state and last
run; a job's runs, newest first, polled by htmx while one is going; and "run now" for admins,
after a confirmation that says what the job does. The same calls as GET /v1/jobs, GET
/v1/jobs/{name}/runs and POST /v1/jobs/{name}/run (jobs.catalogue, jobs.runs), with the same
roles: JOB_READERS read, ADMINS start a run."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from litestar import Response, get, post
from litestar.params import FromPath, QueryParameter, URLEncodedBody
from litestar.response import Redirect
from msgspec import Struct

from console.pages import render, staff_session
from console.services import AnyRequest, services
from console.session import ConsoleSession, check_csrf
from jobs.catalogue import JOBS, job_named, job_statuses
from jobs.definition import Job
from jobs.runs import JobBusy, list_runs, running_jobs, start_run
from loyalty.access.audit import record_audit
from loyalty.access.roles import ADMINS, JOB_READERS
from loyalty.core.db import transaction
from schemas.base import whole

RUNS_PAGE_SIZE = 20
Cursor = Annotated[str | None, QueryParameter(max_length=20, pattern=whole(r"[0-9]*"))]


class RunForm(Struct):
    csrf_token: str = ""


def _unknown(request: AnyRequest, session: ConsoleSession, name: str) -> Response[str]:
    return render(request, "job.html", session=session, status_code=404, job=None,
                  unknown=name[:40], known_jobs=[job.name for job in JOBS])


async def _runs_context(request: AnyRequest, job: Job, cursor: str | None) -> dict[str, Any]:
    async with services(request).pool.acquire() as conn:
        page = await list_runs(conn, job.name, limit=RUNS_PAGE_SIZE, cursor=cursor or None)
        running = bool(await running_jobs(conn, [job.name]))
    return {"runs": page, "running": running, "cursor": cursor or ""}


@get("/jobs")
async def jobs_page(request: AnyRequest) -> Response[str]:
    """Every job: schedule, next run, running or not, and how its last run went."""
    svc = services(request)
    session = await staff_session(request, JOB_READERS)
    async with svc.pool.acquire() as conn:
        statuses = await job_statuses(conn, svc.settings, dt.datetime.now(dt.UTC))
    return render(request, "jobs.html", session=session, statuses=statuses,
                  any_running=any(status.running for status in statuses))


@get("/jobs/{name:str}")
async def job_page(request: AnyRequest, name: FromPath[str], cursor: Cursor = None,
                   started: Annotated[int | None, QueryParameter(ge=1)] = None,
                   ) -> Response[str]:
    """One job: what it does, its schedule, its runs (polled while one is going), and the
    "run now" button for admins."""
    svc = services(request)
    session = await staff_session(request, JOB_READERS)
    job = job_named(name)
    if job is None:
        return _unknown(request, session, name)
    async with svc.pool.acquire() as conn:
        status = next(s for s in await job_statuses(conn, svc.settings, dt.datetime.now(dt.UTC))
                      if s.name == job.name)
    return render(request, "job.html", session=session, job=status, started=started,
                  can_run=session.role in ADMINS, **await _runs_context(request, job, cursor))


@get("/jobs/{name:str}/runs")
async def job_runs_partial(request: AnyRequest, name: FromPath[str],
                           cursor: Cursor = None) -> Response[str]:
    """The runs table alone, for htmx: it asks again every few seconds while a run is going."""
    session = await staff_session(request, JOB_READERS)
    job = job_named(name)
    if job is None:
        return _unknown(request, session, name)
    return render(request, "job_runs.html", session=session, name=job.name,
                  **await _runs_context(request, job, cursor))


@get("/jobs/{name:str}/run")
async def job_run_confirm(request: AnyRequest, name: FromPath[str]) -> Response[str]:
    """Admins only: what the job does, and the button that runs it now."""
    session = await staff_session(request, ADMINS)
    job = job_named(name)
    if job is None:
        return _unknown(request, session, name)
    return render(request, "job_confirm.html", session=session, name=job.name)


@post("/jobs/{name:str}/run", status_code=303)
async def job_run(request: AnyRequest, name: FromPath[str],
                  data: URLEncodedBody[RunForm]) -> Response[Any]:
    """Admins only: start a run as of now, as POST /v1/jobs/{name}/run does (the same lock,
    in the background of this process, audited); while the job runs, the job page says so
    (409) and nothing starts."""
    svc = services(request)
    session = await staff_session(request, ADMINS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    job = job_named(name)
    if job is None:
        return _unknown(request, session, name)
    try:
        run = await start_run(svc.jobs, job, as_of=dt.datetime.now(dt.UTC),
                              started_by=session.principal.staff_id)
    except JobBusy:
        async with svc.pool.acquire() as conn:
            status = next(s for s in await job_statuses(conn, svc.settings,
                                                        dt.datetime.now(dt.UTC))
                          if s.name == job.name)
        return render(request, "job.html", session=session, job=status, started=None,
                      can_run=True, busy=True, status_code=409,
                      **await _runs_context(request, job, None))
    async with transaction(svc.pool) as conn:
        await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                           action="jobs.run", subject_kind="job", subject_id=None,
                           details={"job": job.name, "run_id": run.run_id, "via": "console"})
    return Redirect(f"/console/jobs/{job.name}?started={run.run_id}", status_code=303)
