"""BG/NBD and Gamma-Gamma: parameters recovered from data simulated with known ones, the
likelihood highest at the fit, scores in range; ROC AUC by hand; on the generated history the
model ranks churners better than the best fixed N-day rule; and the weekly job on a real
PostgreSQL (merged members' purchases counted for the survivor, the cadence fallback where the
model does not apply, a second run rewriting the same rows)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from math import gamma, log
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import pytest

from bench.make_purchase_history import END, simulate, summarise
from cli import main as cli
from loyalty.core.db import Connection, init_connection
from loyalty.insights.churn_evaluation import best_threshold, compare_methods, judge, roc_auc
from loyalty.insights.churn_model import (
    BgNbd,
    GammaGamma,
    bgnbd_log_likelihood,
    churn_score,
    expected_purchases,
    expected_spend,
    fit_and_score,
    fit_bgnbd,
    fit_gamma_gamma,
    probability_alive,
    simulate_bgnbd,
)
from tests.factories import Shop

TRUE = BgNbd(r=0.5, alpha=20.0, a=0.8, b=2.5)
DAY = dt.timedelta(days=1)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def simulated() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2005)
    age = rng.uniform(200, 400, 8000)
    x, t_x, _ = simulate_bgnbd(TRUE, 8000, age, rng)
    return x, t_x, age


def test_the_fit_recovers_the_parameters_it_was_simulated_with(
        simulated: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    fit = fit_bgnbd(*simulated)
    assert fit.converged
    assert fit.members == 8000
    got = fit.params
    # 8,000 members: within 20 % of each parameter (their standard errors are a few %, a and b
    # the loosest), and the mean rate r/α and mean dropout a/(a+b) within 10 %.
    for name in ("r", "alpha", "a", "b"):
        assert getattr(got, name) == pytest.approx(getattr(TRUE, name), rel=0.2), name
    assert got.r / got.alpha == pytest.approx(TRUE.r / TRUE.alpha, rel=0.1)
    assert got.a / (got.a + got.b) == pytest.approx(TRUE.a / (TRUE.a + TRUE.b), rel=0.1)


def test_the_likelihood_is_highest_at_the_fitted_parameters(
        simulated: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    fit = fit_bgnbd(*simulated)
    assert fit.log_likelihood == pytest.approx(
        float(np.sum(bgnbd_log_likelihood(fit.params, *simulated))))
    base = fit.params
    for name in ("r", "alpha", "a", "b"):
        for factor in (0.9, 1.1):
            moved = BgNbd(**{**base.__dict__, name: getattr(base, name) * factor})
            assert np.sum(bgnbd_log_likelihood(moved, *simulated)) < fit.log_likelihood, \
                (name, factor)


def test_the_likelihood_matches_the_paper_for_one_member() -> None:
    # FHL eq. 6 term by term, in plain arithmetic, for x = 2, t_x = 30, T = 50.
    r, alpha, a, b = 0.7, 10.0, 0.9, 3.0

    def beta(p: float, q: float) -> float:
        return gamma(p) * gamma(q) / gamma(p + q)

    x, t_x, age = 2, 30.0, 50.0
    common = gamma(r + x) * alpha ** r / gamma(r)
    expected = (beta(a, b + x) / beta(a, b) * common / (alpha + age) ** (r + x)
                + beta(a + 1, b + x - 1) / beta(a, b) * common / (alpha + t_x) ** (r + x))
    got = bgnbd_log_likelihood(BgNbd(r, alpha, a, b), np.array([2.0]), np.array([t_x]),
                               np.array([age]))
    assert got[0] == pytest.approx(log(expected))


def test_scores_are_in_range_and_move_the_right_way(
        simulated: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, t_x, age = simulated
    params = fit_bgnbd(x, t_x, age).params
    alive = probability_alive(params, x, t_x, age)
    soon = expected_purchases(params, 90, x, t_x, age)
    year = expected_purchases(params, 365, x, t_x, age)
    assert np.all((alive >= 0) & (alive <= 1))
    assert np.all(alive[x == 0] == 1)
    assert np.all(np.isfinite(soon))
    assert np.all(soon >= 0)
    assert np.all(year >= soon - 1e-9)
    # The same history: more silence since the last purchase, lower P(alive) and fewer
    # purchases expected.
    one = np.array([5.0, 5.0]), np.array([100.0, 100.0]), np.array([120.0, 300.0])
    assert probability_alive(params, *one)[0] > probability_alive(params, *one)[1]
    assert expected_purchases(params, 90, *one)[0] > expected_purchases(params, 90, *one)[1]
    # With the true parameters, the expectation given each member's history agrees with what
    # the same members then do over the next 90 days, on average over 8,000 members.
    rng = np.random.default_rng(7)
    x, t_x, later = simulate_bgnbd(TRUE, 8000, age, rng, ahead=90)
    assert float(np.mean(expected_purchases(TRUE, 90, x, t_x, age))) == pytest.approx(
        float(np.mean(later)), rel=0.1)


def test_gamma_gamma_recovers_the_spend_process_and_shrinks_to_the_mean() -> None:
    rng = np.random.default_rng(11)
    true = GammaGamma(p=6.0, q=4.0, gamma=1500.0)
    n = rng.integers(1, 12, 6000).astype(float)
    nu = rng.gamma(true.q, 1 / true.gamma, 6000)
    m = np.array([rng.gamma(true.p, 1 / v, int(k)).mean() for v, k in zip(nu, n, strict=True)])
    fit = fit_gamma_gamma(n, m)
    assert fit is not None
    population = true.p * true.gamma / (true.q - 1)
    assert fit.p * fit.gamma / (fit.q - 1) == pytest.approx(population, rel=0.05)
    spend = expected_spend(fit, np.array([1.0, 50.0, 0.0]), np.array([9000.0, 9000.0, 0.0]))
    # One purchase of 9,000 is pulled far toward the 3,000 mean; fifty are believed; none is
    # the population mean.
    assert population < spend[0] < spend[1] < 9000
    assert spend[2] == pytest.approx(fit.p * fit.gamma / (fit.q - 1))


def test_roc_auc_by_the_rank_formula_on_a_hand_example() -> None:
    # Positives 0.9, 0.4, 0.4; negatives 0.8, 0.4, 0.1. Pairs (pos, neg) won: 0.9 beats all
    # three (3); each 0.4 loses to 0.8, ties 0.4 (half), beats 0.1: 1.5 each. 6 of 9.
    scores = np.array([0.9, 0.8, 0.4, 0.4, 0.4, 0.1])
    positive = np.array([True, False, True, False, True, False])
    assert roc_auc(scores, positive) == pytest.approx(6 / 9)
    assert roc_auc(scores, ~positive) == pytest.approx(3 / 9)
    assert roc_auc(scores, np.ones(6, dtype=bool)) is None
    verdict = judge("hand", scores >= 0.4, scores, positive)
    # Flagged 0.9, 0.8, 0.4 x3: 3 of 5 right, all 3 positives found.
    assert (verdict.precision, verdict.recall, verdict.f1) == pytest.approx((0.6, 1.0, 0.75))
    # The best "score >= t" for F1 is 0.4 (F1 0.75; at 0.9 it is 0.5, at 0.1 it is 2/3).
    assert best_threshold(scores, positive) == 0.4


def test_on_the_generated_history_the_model_beats_the_best_fixed_day_rule() -> None:
    history = simulate(5000, 17)
    calibration_end = END - 180 * DAY
    horizon = 90 * DAY
    inner = summarise(history, calibration_end - horizon, calibration_end)
    judged = summarise(history, calibration_end, calibration_end + horizon)
    model, cadence, fixed = compare_methods(inner, judged, horizon_days=90,
                                            at_risk_multiple=2.0, at_risk_min_purchases=3)
    assert model.method == "model"
    assert fixed.method.startswith("fixed ")
    assert model.auc is not None
    assert fixed.auc is not None
    assert cadence.auc is not None
    assert model.auc > fixed.auc + 0.01
    assert model.auc > cadence.auc
    assert model.f1 is not None
    assert fixed.f1 is not None
    assert model.f1 >= fixed.f1


async def scores(conn: Connection) -> dict[UUID, dict[str, object]]:
    rows = await conn.fetch("select * from member_churn_scores")
    return {row["member_id"]: dict(row) for row in rows}


async def test_the_job_scores_every_member_and_falls_back_to_cadence(db: Connection) -> None:
    shop = await Shop(db).open()
    rng = np.random.default_rng(3)
    members = []
    days_ago: dict[UUID, list[int]] = {}
    for n in range(60):
        member = await shop.member(f"m{n}")
        members.append(member)
        # Regulars and one-off buyers: purchases every ~k days for a while, then silence.
        every = int(rng.integers(5, 60))
        stop = int(rng.integers(30, 360))
        days_ago[member] = [360 - day for day in range(0, stop, every)]
        for ago in days_ago[member]:
            await shop.buy(member, NOW - ago * DAY, 1000 + 100 * n)
    never = await shop.member("never bought")
    survivor, merged = members[0], await shop.member("merged")
    await shop.buy(merged, NOW - 2 * DAY, 5000)
    await shop.merge(merged, survivor)

    first = await fit_and_score(db, now=NOW, margin=0.3, batch_size=16)
    assert first == {"members": 61, "model": 60, "cadence": 1, "converged": 1, "removed": 0}
    fit = await db.fetchrow("select * from churn_model_fits")
    assert fit is not None
    assert fit["converged"]
    assert fit["members"] == 60
    params = json.loads(fit["parameters"])
    assert set(params["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert all(value > 0 for value in params["bgnbd"].values())
    assert fit["log_likelihood"] < 0

    rows = await scores(db)
    assert merged not in rows
    assert set(rows) == {*members, never}
    assert rows[never]["method"] == "cadence"
    assert rows[never]["p_alive"] is None
    modelled = [row for row in rows.values() if row["method"] == "model"]
    assert all(0 <= row["p_alive"] <= 1 for row in modelled)  # type: ignore[operator]
    assert all(row["expected_purchases_90d"] >= 0 for row in modelled)  # type: ignore[operator]
    assert all(row["predicted_value_12m"] >= 0 for row in modelled)  # type: ignore[operator]
    read = await churn_score(db, survivor)
    assert read is not None
    assert (read.method, read.p_alive, read.scored_at) == (
        "model", rows[survivor]["p_alive"], NOW)
    assert await churn_score(db, merged) is None
    # The survivor's history includes the merged member's purchase two days ago.
    fitted = BgNbd(**params["bgnbd"])
    own = days_ago[survivor]
    x, t_x, age = np.array([float(len(own))]), np.array([own[0] - 2.0]), np.array([own[0] * 1.0])
    assert rows[survivor]["p_alive"] == pytest.approx(probability_alive(fitted, x, t_x, age)[0])
    assert rows[survivor]["expected_purchases_90d"] == pytest.approx(
        expected_purchases(fitted, 90, x, t_x, age)[0])
    without = probability_alive(fitted, x - 1, np.array([own[0] - own[-1] * 1.0]), age)[0]
    assert rows[survivor]["p_alive"] > without

    again = await fit_and_score(db, now=NOW, margin=0.3)
    assert again == first
    assert {k: {c: v for c, v in row.items() if c != "fit_id"}
            for k, row in (await scores(db)).items()} == \
        {k: {c: v for c, v in row.items() if c != "fit_id"} for k, row in rows.items()}

    # Margin scales the value, nothing else.
    await fit_and_score(db, now=NOW, margin=0.6)
    doubled = await scores(db)
    for member in members:
        assert doubled[member]["predicted_value_12m"] == pytest.approx(
            2 * rows[member]["predicted_value_12m"])  # type: ignore[operator]

    # A member erased since is no longer scored.
    await db.execute("update members set status = 'erased' where member_id = $1", members[5])
    later = await fit_and_score(db, now=NOW + DAY, margin=0.3)
    assert later["members"] == 60
    assert later["removed"] == 1
    assert members[5] not in await scores(db)


# -- the command -----------------------------------------------------------------------------


def _on(dsn: str, work: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            await init_connection(conn)
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_the_evaluate_command_prints_each_method_and_writes_nothing(
        cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    history = simulate(300, 5)

    async def seed(conn: Connection) -> None:
        shop = await Shop(conn).open()
        for member in history:
            member_id = await shop.member(member.external_id)
            for moment, total in member.purchases:
                await shop.buy(member_id, moment, total)

    _on(cli_env, seed)
    end = (END - 180 * DAY).date().isoformat()
    cli.main(["analytics", "evaluate", "--calibration-end", end, "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [row["method"] for row in rows][:2] == ["model", "cadence"]
    assert rows[2]["method"].startswith("fixed ")
    assert rows[2]["method"].endswith(" days")
    assert all(set(row) == {"method", "precision", "recall", "f1", "auc"} for row in rows)
    assert all(0 <= row[k] <= 1 for row in rows for k in ("precision", "recall", "f1", "auc"))
    # The same figures as the function computes on the same summaries.
    judged = summarise(history, END - 180 * DAY, END - 90 * DAY)
    assert rows[0]["auc"] > 0.5
    cli.main(["analytics", "evaluate", "--calibration-end", end, "--horizon", "90"])
    text = capsys.readouterr().out.splitlines()
    silent = int((~judged.bought_later).sum())
    assert text[0] == (f"no purchase in the 90 days after {end}T00:00:00+09:00: "
                       f"{silent:,} of the 300 members who had bought by then")
    assert text[2].split()[0] == "model"
    assert text[2].split()[-1] == f"{rows[0]['auc']:.3f}"
    assert _on(cli_env, lambda conn: conn.fetchval(
        "select (select count(*) from member_churn_scores)"
        " + (select count(*) from churn_model_fits)")) == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["--calibration-end", "2026-13-01"], "is not a date"),
    (["--calibration-end", "2026-05-01T00:00:00"], "time zone offset"),
    (["--calibration-end", "2026-05-01", "--horizon", "0"], "at least one day"),
    (["--calibration-end", "2999-01-01"], "after now"),
    (["--calibration-end", "2001-01-01"], "no member bought"),
])
def test_the_evaluate_command_refuses_bad_arguments(cli_env: str, argv: list[str],
                                                    message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        cli.main(["analytics", "evaluate", *argv])
