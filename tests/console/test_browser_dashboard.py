"""The dashboard's additions, the jobs page and the import page in a real headless Chromium, on
seeded data (tests/console/seed.py, with RFM scores, job runs, a year and a half of point lots
and churn scores added by ``seeded_more``): the trend by week and by month, the cohort heatmap,
the RFM grid leading a marketer to a segment's members, the points liability forecast, an admin
running a job now and following the run, and an admin importing a members file with one bad row,
following it to its end and downloading the refused row."""

from __future__ import annotations

import csv
import datetime as dt
import tempfile
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from jobs.catalogue import job_named
from jobs.definition import make_context
from jobs.runs import run_once
from loyalty.core.db import Connection, create_pool
from tests.conftest import make_settings
from tests.console.browsing import photograph, sign_in, until
from tests.console.conftest import MoreSeed
from tests.factories import insert_lot

pytestmark = pytest.mark.browser

MEMBERS_CSV = (
    "external_id,email,phone,name,name_kana,birth_date,postal_code,joined_at\n"
    "EXT-1,kaori.ito@example.jp,,伊藤 香織,イトウ カオリ,,,2024-04-01T10:00:00+09:00\n"
    "EXT-2,not-an-email,,高橋 健,タカハシ ケン,,,2024-05-01T10:00:00+09:00\n"
    "EXT-3,mai.kato@example.jp,,加藤 舞,カトウ マイ,,,2024-06-01T10:00:00+09:00\n")


@pytest.fixture(scope="module")
def seeded_more() -> MoreSeed:
    """Last night's scheduled runs of the RFM refresh and the KPI snapshot, run as the
    scheduler runs them: the RFM grid has scores, the jobs page has runs."""

    async def more(database_url: str) -> None:
        settings = make_settings(database_url, "redis://127.0.0.1:6379/0",
                                 Path(tempfile.mkdtemp()))
        pool = await create_pool(database_url, min_size=1, max_size=2)
        try:
            ctx = make_context(database_url, pool, settings)
            today = dt.datetime.now(ctx.tz).replace(hour=0, minute=0, second=0, microsecond=0)
            for name, hour in (("kpi_snapshot", 0), ("rfm_refresh", 4)):
                job = job_named(name)
                assert job is not None
                tick = (today - dt.timedelta(days=1)).replace(hour=hour, minute=45 if hour == 0
                                                              else 0)
                await run_once(ctx, job, tick=tick)
            async with pool.acquire() as conn:
                await _points_and_scores(conn, dt.datetime.now(dt.UTC))
        finally:
            await pool.close()

    return more


async def _points_and_scores(conn: Connection, now: dt.datetime) -> None:
    """Eighteen months of lots for each seeded member, 100 points a month: 30 to 40 redeemed
    in their second month, 20 in their fourth, the rest expiring after a year; and the churn
    model's scores of the seeded members."""
    day = dt.timedelta(days=1)
    members = [row["member_id"] for row in await conn.fetch(
        "select member_id from members order by member_number")]
    for n, member in enumerate(members):
        for months_ago in range(1, 19):
            earned = now - (months_ago * 30.5 + 3 * n) * day
            expires = earned + 366 * day
            outcomes = [(when, "redeem", points) for when, points in (
                (earned + 40 * day, 30 + 5 * n), (earned + 100 * day, 20)) if when < now]
            if expires < now:
                outcomes.append((expires, "expire", 100 - sum(p for _, _, p in outcomes)))
            await insert_lot(conn, member, earned, 100, expires=expires,
                             outcomes=tuple(outcomes))
    fit = await conn.fetchval(
        "insert into churn_model_fits (fitted_at, as_of, parameters, members, converged)"
        " values ($1, $1, '{}', $2, true) returning fit_id", now, len(members))
    for n, member in enumerate(members):
        await conn.execute(
            "insert into member_churn_scores (member_id, method, p_alive,"
            " expected_purchases_90d, predicted_value_12m, scored_at, fit_id)"
            " values ($1, 'model', 0.8, 4, $2, $3, $4)", member, 12_000.0 + 3_500 * n, now,
            fit)


def _trend(browser: webdriver.Chrome) -> str:
    return browser.find_element(By.CSS_SELECTOR, "figure.trend path.line").get_attribute("d") \
        or ""


def test_the_dashboard_draws_its_trend_by_week_and_month_and_the_heatmap(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "marketer")
    browser.get(f"{console}/console/dashboard?grain=week")
    figure = browser.find_element(By.CSS_SELECTOR, "figure.trend")
    assert figure.get_attribute("data-grain") == "week"
    assert _trend(browser).count("L") == 11
    assert "週別売上" in figure.text
    photograph(browser, photos, "dashboard-week")
    Select(browser.find_element(By.ID, "grain")).select_by_value("month")
    browser.find_element(By.CSS_SELECTOR, "form.period button").click()
    until(browser, lambda b: b.find_element(
        By.CSS_SELECTOR, "figure.trend").get_attribute("data-grain") == "month")
    # The form keeps the period shown (twelve weeks): about four months of it.
    buckets = int(browser.find_element(By.CSS_SELECTOR, "figure.trend")
                  .get_attribute("data-buckets") or 0)
    assert buckets >= 3
    assert _trend(browser).count("L") == buckets - 1
    assert "grain=month" in browser.current_url
    assert "月別売上" in browser.find_element(By.CSS_SELECTOR, "figure.trend").text
    photograph(browser, photos, "dashboard-month")
    cells = browser.find_elements(By.CSS_SELECTOR, "table.heatmap td.heat")
    assert len(cells) >= 12
    shaded = browser.find_elements(By.CSS_SELECTOR, "table.heatmap td.heat-5")
    assert shaded
    assert shaded[0].text == "100%"
    browser.find_element(By.ID, "cohorts-title").location_once_scrolled_into_view  # noqa: B018
    photograph(browser, photos, "dashboard-cohorts")
    browser.find_element(By.ID, "rfm-title").location_once_scrolled_into_view  # noqa: B018
    photograph(browser, photos, "dashboard-rfm")


def test_the_dashboard_forecasts_the_points_liability_and_the_predicted_value(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "analyst")
    browser.get(f"{console}/console/dashboard")
    section = browser.find_element(By.CSS_SELECTOR, "section.liability")
    section.location_once_scrolled_into_view  # noqa: B018
    assert "ポイント負債の予測" in section.text
    rows = section.find_elements(By.CSS_SELECTOR, "table.forecast tbody tr")
    assert len(rows) == 12
    assert "最終的には" in section.find_element(By.CSS_SELECTOR, ".ultimate").text
    predicted = browser.find_element(By.CSS_SELECTOR, "section.predicted")
    # 12,000 + 15,500 + 19,000 yen over the three scored members.
    assert "￥46,500" in predicted.text
    assert "￥15,500" in predicted.text
    photograph(browser, photos, "dashboard-liability")
    predicted.location_once_scrolled_into_view  # noqa: B018
    photograph(browser, photos, "dashboard-predicted")


def test_the_rfm_grid_leads_a_marketer_to_a_segments_members(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "marketer")
    browser.get(f"{console}/console/dashboard")
    links = browser.find_elements(By.CSS_SELECTOR, ".rfm-grid a")
    assert len(links) == 11
    counted = next(link for link in links if link.text != "0")
    count = int(counted.text)
    counted.click()
    until(browser, lambda b: "/console/rfm/" in b.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "main tbody tr")
    assert len(rows) == count
    member = rows[0].find_element(By.CSS_SELECTOR, "a")
    assert "/console/members/" in (member.get_attribute("href") or "")
    assert "RFMセグメント:" in browser.find_element(By.TAG_NAME, "h1").text
    photograph(browser, photos, "rfm-segment")
    browser.get(f"{console}/console/rfm/vip")
    assert "そのRFMセグメントはありません" in browser.find_element(By.TAG_NAME, "h1").text
    photograph(browser, photos, "rfm-segment-unknown")


def test_an_admin_sees_the_runs_and_runs_a_job_now(
    browser: webdriver.Chrome, console: str, photos: Path,
) -> None:
    sign_in(browser, console, "admin")
    browser.find_element(By.LINK_TEXT, "ジョブ").click()
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".jobs-table"))
    table = browser.find_element(By.CSS_SELECTOR, ".jobs-table").text
    for shown in ("rfm_refresh", "成功", "未実行"):
        assert shown in table
    photograph(browser, photos, "jobs")
    browser.find_element(By.LINK_TEXT, "rfm_refresh").click()
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".runs-table"))
    assert "定期" in browser.find_element(By.CSS_SELECTOR, ".runs-table").text
    browser.find_element(By.LINK_TEXT, "今すぐ実行…").click()
    until(browser, lambda b: "/run" in b.current_url)
    assert "全会員のRFMスコアを計算し直します。" in browser.find_element(By.CSS_SELECTOR,
                                                                  ".confirm").text
    photograph(browser, photos, "job-confirm")
    browser.find_element(By.CSS_SELECTOR, ".confirm button[type=submit]").click()
    until(browser, lambda b: "started=" in b.current_url)
    run_id = browser.current_url.rsplit("=", 1)[1]
    # The runs table follows the run (htmx) until it has ended.
    until(browser, lambda b: b.find_element(By.ID, f"run-{run_id}").get_attribute("data-outcome")
        == "succeeded")
    row = browser.find_element(By.ID, f"run-{run_id}").text
    assert "手動" in row
    assert "members" in row
    assert f"実行 {run_id} を開始しました" in browser.find_element(By.TAG_NAME, "main").text
    photograph(browser, photos, "job-run")


def test_an_admin_imports_members_follows_the_progress_and_downloads_the_refusals(
    browser: webdriver.Chrome, console: str, photos: Path, tmp_path: Path,
) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(downloads)})
    empty = tmp_path / "空.csv"
    empty.write_text("", encoding="utf-8")
    source = tmp_path / "会員.csv"
    source.write_text(MEMBERS_CSV, encoding="utf-8")
    sign_in(browser, console, "admin")
    browser.find_element(By.LINK_TEXT, "取り込み").click()
    until(browser, lambda b: b.find_elements(By.ID, "file"))
    photograph(browser, photos, "import-form")
    # A file that cannot be imported: the form again, saying what to fix.
    browser.find_element(By.ID, "file").send_keys(str(empty))
    browser.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").click()
    until(browser, lambda b: b.find_elements(By.ID, "file-error"))
    assert "空.csv is empty" in browser.find_element(By.ID, "file-error").text
    photograph(browser, photos, "import-bad-file")
    browser.find_element(By.ID, "file").send_keys(str(source))
    browser.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").click()
    until(browser, lambda b: "/console/import/" in b.current_url)
    until(browser, lambda b: b.find_element(By.ID, "progress").get_attribute("data-state")
          == "done", seconds=30)
    progress = browser.find_element(By.ID, "progress")
    assert "2 行を取り込み" in progress.text
    assert progress.find_element(By.TAG_NAME, "progress").get_attribute("value") == "100"
    photograph(browser, photos, "import-done")
    progress.find_element(By.PARTIAL_LINK_TEXT, "取り込めなかった行").click()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not [
            f for f in downloads.iterdir() if f.suffix == ".csv"]:
        time.sleep(0.1)
    (saved,) = [f for f in downloads.iterdir() if f.suffix == ".csv"]
    with saved.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["row", "field", "reason"]
    assert [row[:2] for row in rows[1:]] == [["3", "email"]]
