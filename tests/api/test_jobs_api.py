"""The jobs API: schedules and runs for admins and analysts, a run by hand for admins, refused
while the job runs."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import httpx

from api.app import create_app
from jobs.catalogue import JOBS, job_named
from jobs.runs import claim
from loyalty.core.settings import Settings
from loyalty.insights.rfm import RFM_LOCK_KEY
from tests.conftest import serve
from tests.factories import Actors, bearer, until_job_finished


async def test_jobs_list_their_schedule_next_tick_and_last_run(
        client: httpx.AsyncClient, actors: Actors) -> None:
    analyst = bearer(await actors.staff("analyst"))
    response = await client.get("/v1/jobs", headers=analyst)
    assert response.status_code == 200, response.text
    jobs = {job["name"]: job for job in response.json()}
    assert list(jobs) == [job.name for job in JOBS]
    dormancy = jobs["dormancy"]
    assert (dormancy["schedule"], dormancy["timezone"]) == ("0 3 * * *", "Asia/Tokyo")
    assert (dormancy["running"], dormancy["last_run"]) == (False, None)
    next_run = dt.datetime.fromisoformat(dormancy["next_run_at"])
    # The next 03:00 in Tokyo, within a day from now.
    assert next_run.astimezone(dt.timezone(dt.timedelta(hours=9))).time() == dt.time(3)
    assert dt.timedelta(0) < next_run - dt.datetime.now(dt.UTC) <= dt.timedelta(days=1)


async def test_an_admin_runs_a_job_by_hand_and_reads_how_it_went(
        client: httpx.AsyncClient, actors: Actors) -> None:
    admin = bearer(await actors.staff("admin"))
    started = await client.post("/v1/jobs/dormancy/run", headers=admin)
    assert started.status_code == 202, started.text
    run = started.json()
    assert (run["job"], run["trigger"], run["scheduled_for"], run["outcome"]) == \
        ("dormancy", "manual", None, "running")
    finished = await until_job_finished(client, admin, "dormancy", run["run_id"])
    assert finished["outcome"] == "succeeded", finished
    assert finished["counts"] == {"scanned": 0, "flagged": 0}
    listed = {job["name"]: job for job in (await client.get("/v1/jobs", headers=admin)).json()}
    assert listed["dormancy"]["last_run"]["run_id"] == run["run_id"]


async def test_a_run_is_refused_while_the_job_runs(
        client: httpx.AsyncClient, actors: Actors, settings: Settings) -> None:
    admin = bearer(await actors.staff("admin"))
    job = job_named("rfm_refresh")
    assert job is not None
    assert settings.database_url
    held = await claim(settings.database_url, job, as_of=dt.datetime.now(dt.UTC))
    assert held is not None
    try:
        listed = {j["name"]: j for j in (await client.get("/v1/jobs", headers=admin)).json()}
        assert listed["rfm_refresh"]["running"] is True
        refused = await client.post("/v1/jobs/rfm_refresh/run", headers=admin)
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"].endswith(":job_running")
    finally:
        await held.lock.close()
    # Only the held run was recorded: the refused one left nothing.
    runs = (await client.get("/v1/jobs/rfm_refresh/runs", headers=admin)).json()["items"]
    assert [r["run_id"] for r in runs] == [held.run.run_id]
    again = await client.post("/v1/jobs/rfm_refresh/run", headers=admin)
    assert again.status_code == 202, again.text
    # The held run's process "died" (its lock went with its session): the next run says so.
    await until_job_finished(client, admin, "rfm_refresh", again.json()["run_id"])
    runs = (await client.get("/v1/jobs/rfm_refresh/runs", headers=admin)).json()["items"]
    assert [(r["run_id"], r["outcome"]) for r in runs] == [
        (again.json()["run_id"], "succeeded"), (held.run.run_id, "abandoned")]


async def test_runs_page_newest_first(client: httpx.AsyncClient, actors: Actors) -> None:
    admin = bearer(await actors.staff("admin"))
    ids = []
    for _ in range(3):
        started = await client.post("/v1/jobs/idempotency_cleanup/run", headers=admin)
        assert started.status_code == 202, started.text
        ids.append(started.json()["run_id"])
        await until_job_finished(client, admin, "idempotency_cleanup", ids[-1])
    first = (await client.get("/v1/jobs/idempotency_cleanup/runs?limit=2",
                              headers=admin)).json()
    assert [r["run_id"] for r in first["items"]] == ids[:0:-1]
    rest = (await client.get("/v1/jobs/idempotency_cleanup/runs",
                             params={"limit": 2, "cursor": first["next_cursor"]},
                             headers=admin)).json()
    assert ([r["run_id"] for r in rest["items"]], rest["next_cursor"]) == ([ids[0]], None)


async def test_unknown_jobs_and_bad_cursors_are_clear_4xx(
        client: httpx.AsyncClient, actors: Actors) -> None:
    admin = bearer(await actors.staff("admin"))
    for method, path in (("GET", "/v1/jobs/nope/runs"), ("POST", "/v1/jobs/nope/run")):
        response = await client.request(method, path, headers=admin)
        assert response.status_code == 404, response.text
        assert response.json()["type"].endswith(":job_not_found")
    for cursor in ("abc", "-1", "9" * 30):
        response = await client.get("/v1/jobs/dormancy/runs", params={"cursor": cursor},
                                    headers=admin)
        assert response.status_code == 422, (cursor, response.text)


async def test_stopping_the_app_stops_its_manual_runs_and_the_next_run_says_so(
        actors: Actors, settings: Settings) -> None:
    assert settings.database_url
    blocker = await asyncpg.connect(settings.database_url)
    try:
        # The RFM refresh waits for this lock: the manual run will still be running.
        await blocker.execute("select pg_advisory_lock($1)", RFM_LOCK_KEY)
        async with asyncio.timeout(30):
            async with serve(create_app(settings)) as client:
                admin = bearer(await Actors(client, settings).staff("admin"))
                started = await client.post("/v1/jobs/rfm_refresh/run", headers=admin)
                assert started.status_code == 202, started.text
                run_id = started.json()["run_id"]
                await asyncio.sleep(0.2)
            # The app stopped without waiting for the blocked run.
        outcome = await blocker.fetchval("select outcome from job_runs where run_id = $1",
                                         run_id)
        assert outcome == "running"
        await blocker.execute("select pg_advisory_unlock($1)", RFM_LOCK_KEY)
    finally:
        await blocker.close()
    async with serve(create_app(settings)) as client:
        admin = bearer(await Actors(client, settings).staff("admin"))
        again = await client.post("/v1/jobs/rfm_refresh/run", headers=admin)
        assert again.status_code == 202, again.text
        finished = await until_job_finished(client, admin, "rfm_refresh", again.json()["run_id"])
        assert finished["outcome"] == "succeeded"
        runs = (await client.get("/v1/jobs/rfm_refresh/runs", headers=admin)).json()["items"]
    assert [(r["run_id"], r["outcome"]) for r in runs][1:] == [(run_id, "abandoned")]
