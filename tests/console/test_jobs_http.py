"""The jobs pages over HTTP: who reads them, "run now" for admins only (confirmation, CSRF,
the run followed to its end by the polled partial), a busy job refused, an unknown job."""

from __future__ import annotations

import asyncio
import json
import re

import asyncpg
import httpx
import pytest

from jobs.catalogue import JOBS
from jobs.runs import JOB_LOCK_CLASS
from loyalty.core.settings import Settings
from tests.console.seed import seed
from tests.console.test_console_http import csrf_of, sign_in

JOB = "idempotency_cleanup"


@pytest.fixture
async def seeded(settings: Settings) -> None:
    assert settings.database_url
    await seed(settings.database_url)


async def _runs(settings: Settings) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetch("select * from job_runs where job = $1 order by run_id", JOB)
    finally:
        await conn.close()


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["admin", "analyst"])
async def test_job_readers_see_every_job_with_its_schedule_and_next_run(
    client: httpx.AsyncClient, role: str,
) -> None:
    await sign_in(client, role)
    page = await client.get("/console/jobs")
    assert page.status_code == 200, page.text
    assert '<a href="/console/jobs" aria-current="page">' in page.text
    for job in JOBS:
        assert f'<a href="/console/jobs/{job.name}">{job.name}</a>' in page.text
    # Each job's row says what it does, in the staff member's language (six said nothing).
    summaries = re.findall(r'<td class="summary">([^<]*)</td>', page.text)
    assert len(summaries) == len(JOBS)
    assert all(re.search(r"[ぁ-んァ-ン一-龯]", text) for text in summaries), summaries
    assert "新しい日のダッシュボードの数値を前もって計算し" in page.text
    assert "<code>30 4 * * *</code>" in page.text  # idempotency_cleanup's schedule
    assert "72時間より古い冪等キーを削除します。" in page.text
    assert "未実行" in page.text
    assert "Asia/Tokyo" in page.text


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("role", ["marketer", "support"])
async def test_other_roles_may_not_open_the_jobs(client: httpx.AsyncClient, role: str) -> None:
    await sign_in(client, role)
    assert "/console/jobs" not in (await client.get("/console")).text
    for path in ("/console/jobs", f"/console/jobs/{JOB}", f"/console/jobs/{JOB}/runs"):
        assert (await client.get(path)).status_code == 403, path


@pytest.mark.usefixtures("seeded")
async def test_an_analyst_reads_runs_but_may_not_run_a_job(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "analyst")
    page = await client.get(f"/console/jobs/{JOB}")
    assert page.status_code == 200
    assert f"/console/jobs/{JOB}/run" not in page.text
    assert "このジョブはまだ実行されていません" in page.text
    assert (await client.get(f"/console/jobs/{JOB}/run")).status_code == 403
    refused = await client.post(f"/console/jobs/{JOB}/run", data={"csrf_token": token})
    assert refused.status_code == 403
    assert await _runs(settings) == []


@pytest.mark.usefixtures("seeded")
async def test_an_admin_confirms_runs_a_job_now_and_follows_it_to_its_end(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    await sign_in(client, "admin")
    page = await client.get(f"/console/jobs/{JOB}")
    assert f'href="/console/jobs/{JOB}/run"' in page.text
    confirm = await client.get(f"/console/jobs/{JOB}/run")
    assert confirm.status_code == 200
    # The confirmation says what the job does.
    assert "72時間より古い冪等キーを削除します。" in confirm.text
    started = await client.post(f"/console/jobs/{JOB}/run",
                                data={"csrf_token": csrf_of(confirm)})
    assert started.status_code == 303, started.text
    found = re.fullmatch(rf"/console/jobs/{JOB}\?started=(\d+)", started.headers["location"])
    assert found
    run_id = int(found.group(1))
    for _ in range(100):
        partial = await client.get(f"/console/jobs/{JOB}/runs", headers={"HX-Request": "true"})
        assert partial.status_code == 200
        assert "<html" not in partial.text
        if f'id="run-{run_id}" data-outcome="succeeded"' in partial.text:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(partial.text)
    # Finished: the partial stops asking again.
    assert "hx-trigger" not in partial.text
    assert "手動" in partial.text
    assert "<code>deleted</code>: 0" in partial.text
    (run,) = await _runs(settings)
    assert (run["run_id"], run["trigger"], run["outcome"]) == (run_id, "manual", "succeeded")
    listed = await client.get("/console/jobs")
    assert re.search(rf'(?s){JOB}</a></th>.*?<span class="badge succeeded">成功</span>.*?'
                     r'<code>deleted</code>: 0', listed.text)
    shown = await client.get(started.headers["location"])
    assert f"実行 {run_id} を開始しました" in shown.text
    conn = await asyncpg.connect(settings.database_url)
    try:
        audit = await conn.fetchval(
            "select details from audit_log where action = 'jobs.run'")
    finally:
        await conn.close()
    assert json.loads(audit) == {"job": JOB, "run_id": run_id, "via": "console"}


@pytest.mark.usefixtures("seeded")
async def test_running_now_without_the_token_is_refused(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    await sign_in(client, "admin")
    refused = await client.post(f"/console/jobs/{JOB}/run", data={"csrf_token": "x" * 43})
    assert refused.status_code == 403
    assert await _runs(settings) == []


@pytest.mark.usefixtures("seeded")
async def test_while_a_job_runs_its_table_polls_and_another_run_is_refused(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    token = await sign_in(client, "admin")
    holder = await asyncpg.connect(settings.database_url)
    try:
        # Another process running the job holds its lock.
        await holder.execute("select pg_advisory_lock($1, hashtext($2))", JOB_LOCK_CLASS, JOB)
        partial = await client.get(f"/console/jobs/{JOB}/runs", headers={"HX-Request": "true"})
        assert f'hx-get="/console/jobs/{JOB}/runs" hx-trigger="every 2s"' in partial.text
        listed = await client.get("/console/jobs")
        assert re.search(rf'{JOB}</a> <span class="badge running">', listed.text)
        busy = await client.post(f"/console/jobs/{JOB}/run", data={"csrf_token": token})
        assert busy.status_code == 409
        assert "このジョブは実行中のため、新しい実行は開始しませんでした" in busy.text
        assert await _runs(settings) == []
    finally:
        await holder.close()


@pytest.mark.usefixtures("seeded")
async def test_an_unknown_job_is_a_404_page_naming_the_jobs(client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "admin")
    for answer in (await client.get("/console/jobs/nightly"),
                   await client.get("/console/jobs/nightly/run"),
                   await client.post("/console/jobs/nightly/run", data={"csrf_token": token})):
        assert answer.status_code == 404
        assert "「nightly」というジョブはありません" in answer.text
        assert f'href="/console/jobs/{JOB}"' in answer.text
    bad = await client.get(f"/console/jobs/{JOB}", params={"cursor": "abc"})
    assert bad.status_code == 400
