"""Predictive LTV in the KPIs: the sum and average of the churn model's predicted 12-month value
over the members it scored, on the weekly job's own scores and on scores written by hand (the
members that count and those that do not), and nulls before the first run."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from loyalty.core.db import Connection
from loyalty.insights.churn_model import fit_and_score
from loyalty.insights.kpis import kpis
from schemas.analytics import Kpis
from tests.factories import Shop, insert_member

TZ = ZoneInfo("Asia/Tokyo")
NOW = dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


async def figures(conn: Connection) -> Kpis:
    today = NOW.astimezone(TZ).date()
    return await kpis(conn, first=today - 29 * DAY, last=today, tz=TZ, now=NOW, margin=0.3,
                      point_value=1.0)


async def test_predicted_ltv_is_the_sum_of_the_models_scores(db: Connection) -> None:
    shop = await Shop(db).open()
    rng = np.random.default_rng(3)
    for n in range(60):
        member = await shop.member(f"m{n}")
        every, stop = int(rng.integers(5, 60)), int(rng.integers(30, 360))
        for day in range(0, stop, every):
            await shop.buy(member, NOW - (360 - day) * DAY, 1000 + 100 * n)
    await shop.member("never bought")
    totals = await fit_and_score(db, now=NOW, margin=0.3)
    assert (totals["model"], totals["cadence"], totals["converged"]) == (60, 1, 1)

    predicted = (await figures(db)).predicted_ltv

    scored = await db.fetch("select predicted_value_12m from member_churn_scores"
                            " where method = 'model'")
    total = sum(row["predicted_value_12m"] for row in scored)
    assert total > 0
    assert (predicted.members, predicted.unscored) == (60, 1)
    assert predicted.total == pytest.approx(total)
    assert predicted.average == pytest.approx(total / 60)
    assert predicted.scored_at == NOW
    assert predicted.horizon_days == 365


async def test_only_members_the_model_scored_and_still_in_the_programme_count(
    db: Connection,
) -> None:
    """ann 1,000.5 and ben 2,000.25 scored by the model count: 3,000.75, 1,500.375 each. cal
    (cadence: no purchase yet) is unscored. dee was erased and eve merged since the run: their
    rows stay until the next run drops them, but they are no longer members to count."""
    fit = await db.fetchval(
        "insert into churn_model_fits (fitted_at, as_of, parameters, members, converged)"
        " values ($1, $1, '{}', 4, true) returning fit_id", NOW)
    ann, ben, cal = [await insert_member(db, name) for name in ("ann", "ben", "cal")]
    dee = await insert_member(db, "dee", status="erased")
    eve = await insert_member(db, "eve", status="merged", merged_into=ann)
    for member, method, value in ((ann, "model", 1000.5), (ben, "model", 2000.25),
                                  (cal, "cadence", None), (dee, "model", 9000.0),
                                  (eve, "model", 7000.0)):
        await db.execute(
            "insert into member_churn_scores (member_id, method, p_alive,"
            " expected_purchases_90d, predicted_value_12m, scored_at, fit_id)"
            " values ($1, $2, $3, $4, $5, $6, $7)", member, method,
            0.5 if method == "model" else None, 1.0 if method == "model" else None, value,
            NOW, fit)

    predicted = (await figures(db)).predicted_ltv

    assert (predicted.members, predicted.unscored) == (2, 1)
    assert predicted.total == pytest.approx(3000.75)
    assert predicted.average == pytest.approx(1500.375)


async def test_before_the_first_run_nothing_is_predicted(db: Connection) -> None:
    predicted = (await figures(db)).predicted_ltv
    assert (predicted.members, predicted.unscored, predicted.total, predicted.average,
            predicted.scored_at) == (0, 0, None, None, None)
