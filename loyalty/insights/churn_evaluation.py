"""How well each churn signal predicts "no purchase in the next ``horizon`` days", judged on the
programme's own history: everything after the calibration end is held out.

The members judged are those with a purchase up to the calibration end (the only ones every
method can score). Three methods, each a score (higher: more likely to churn) for ROC AUC and a
yes/no for precision, recall and F1:

- **model**: BG/NBD fitted as of the calibration end; score = minus the expected purchases in
  the horizon (expected purchases rank members by how much buying is left, which P(alive)
  does not: a member who is surely alive but buys twice a year is still likely silent for 90
  days). Flagged when the expectation is at or below a threshold.
- **cadence**: the at-risk rule as ``at_risk.py`` defines it (the programme's
  ``at_risk_multiple`` and ``at_risk_min_purchases``): flagged when the days since the last
  purchase exceed the multiple times the member's median interval and they have enough
  occasions; score = days since / median interval, 0 for members the rule cannot judge. The
  rule's restriction to members active now is left out: their status at a past moment is not
  recorded.
- **fixed N days**: flagged when the days since the last purchase are at least N; score =
  days since (so its AUC does not depend on N).

The model's threshold and N are chosen on the calibration period only: it is split again one
horizon before its end, the model is fitted as of that inner moment, and the threshold and N
that give the best F1 at predicting silence over the inner horizon are kept, then applied as of
the calibration end. No held-out purchase is read before the final judging.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from loyalty.core.db import Connection
from loyalty.core.errors import InvalidInput
from loyalty.insights.churn_model import (
    Floats,
    Summaries,
    expected_purchases,
    fit_bgnbd,
    summary_batches,
)

Bools = npt.NDArray[np.bool_]


def roc_auc(scores: Floats, positives: Bools) -> float | None:
    """ROC AUC by the rank formula (Mann-Whitney U): (sum of the positives' ranks - n₊(n₊+1)/2)
    / (n₊ n₋), tied scores sharing their average rank. None without both classes."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=np.bool_)
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    ranks = np.empty(len(scores))
    # Average rank of each run of equal scores: ranks are 1-based.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    run_rank = (starts + 1 + ends) / 2
    ranks[order] = np.repeat(run_rank, ends - starts)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class Verdict:
    method: str
    precision: float | None
    recall: float | None
    f1: float | None
    auc: float | None


def judge(method: str, flagged: Bools, scores: Floats, positives: Bools) -> Verdict:
    true_pos = int((flagged & positives).sum())
    precision = true_pos / int(flagged.sum()) if flagged.any() else None
    recall = true_pos / int(positives.sum()) if positives.any() else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else
          0.0 if precision is not None and recall is not None else None)
    return Verdict(method, precision, recall, f1, roc_auc(scores, positives))


def best_threshold(scores: Floats, positives: Bools) -> float:
    """The t for which "score >= t" has the best F1 (ties: the highest t)."""
    order = np.argsort(scores, kind="mergesort")
    ordered, hits = scores[order], positives[order]
    values = np.unique(ordered)
    first = np.searchsorted(ordered, values, side="left")
    all_pos = int(hits.sum())
    true_pos = all_pos - np.r_[0, np.cumsum(hits)][first]
    f1 = 2 * true_pos / (len(ordered) - first + all_pos)
    return float(values[len(values) - 1 - int(np.argmax(f1[::-1]))])


def _cadence(batch: Summaries, *, multiple: float, min_purchases: int) -> tuple[Bools, Floats]:
    judged = (batch.occasions >= min_purchases) & np.isfinite(batch.typical_interval_days)
    ratio = np.where(judged, batch.days_since / np.where(judged, batch.typical_interval_days, 1),
                     0.0)
    return judged & (ratio > multiple), ratio


async def _buyers(conn: Connection, as_of: dt.datetime, until: dt.datetime) -> Summaries:
    parts = [batch.select(batch.bought) async for batch in
             summary_batches(conn, as_of=as_of, hold_out_until=until)]
    return Summaries.join(parts)


@dataclass(frozen=True)
class Evaluation:
    members: int  # judged: bought by the calibration end
    silent: int  # of them, without a purchase in the horizon
    verdicts: list[Verdict]


async def evaluate(conn: Connection, *, calibration_end: dt.datetime, horizon_days: int,
                   now: dt.datetime, at_risk_multiple: float,
                   at_risk_min_purchases: int) -> Evaluation:
    """Precision, recall, F1 and ROC AUC of each method (module docstring). Writes nothing."""
    if horizon_days < 1:
        raise InvalidInput("the horizon must be at least one day", field="horizon")
    horizon = dt.timedelta(days=horizon_days)
    if calibration_end + horizon > now:
        raise InvalidInput(
            f"the calibration end plus {horizon_days} days is after now, so part of the "
            "hold-out has not happened: choose an earlier calibration end or a shorter horizon",
            field="calibration_end")
    inner_end = calibration_end - horizon
    # Choosing on the calibration period: as of one horizon before its end.
    inner = await _buyers(conn, inner_end, calibration_end)
    if len(inner.member_ids) == 0:
        raise InvalidInput(
            "no member bought before the calibration end minus the horizon: choose a later "
            "calibration end or a shorter horizon", field="calibration_end")
    # Judging: as of the calibration end, against the held-out horizon.
    judged = await _buyers(conn, calibration_end, calibration_end + horizon)
    verdicts = compare_methods(inner, judged, horizon_days=horizon_days,
                               at_risk_multiple=at_risk_multiple,
                               at_risk_min_purchases=at_risk_min_purchases)
    return Evaluation(len(judged.member_ids), int((~judged.bought_later).sum()), verdicts)


def compare_methods(inner: Summaries, judged: Summaries, *, horizon_days: int,
                    at_risk_multiple: float, at_risk_min_purchases: int) -> list[Verdict]:
    """The three methods, their threshold and N chosen on ``inner`` (buyers as of one horizon
    before the calibration end, ``bought_later`` over the horizon up to it), judged on
    ``judged`` (buyers as of the calibration end, ``bought_later`` over the held-out horizon).
    The model is fitted on each set's own summaries, which are every buyer's as of its
    moment."""
    inner_silent = ~inner.bought_later
    inner_fit = fit_bgnbd(inner.x, inner.t_x, inner.age)
    with np.errstate(all="ignore"):
        inner_expected = expected_purchases(inner_fit.params, horizon_days, inner.x,
                                            inner.t_x, inner.age)
    model_threshold = best_threshold(-inner_expected, inner_silent)
    days_threshold = best_threshold(inner.days_since, inner_silent)

    silent = ~judged.bought_later
    fit = fit_bgnbd(judged.x, judged.t_x, judged.age)
    with np.errstate(all="ignore"):
        expected = expected_purchases(fit.params, horizon_days, judged.x, judged.t_x,
                                      judged.age)
    cadence_flag, cadence_score = _cadence(judged, multiple=at_risk_multiple,
                                           min_purchases=at_risk_min_purchases)
    return [
        judge("model", -expected >= model_threshold, -expected, silent),
        judge("cadence", cadence_flag, cadence_score, silent),
        judge(f"fixed {int(days_threshold)} days", judged.days_since >= days_threshold,
              judged.days_since, silent),
    ]
