"""Churn risk from a model: BG/NBD for whether and how often a member buys, Gamma-Gamma for how
much, fitted by maximum likelihood on the programme's own purchase history.

BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive, a
member buys as a Poisson process of rate λ, λ ~ Gamma(r, α) across members; after each purchase
they drop out for good with probability p, p ~ Beta(a, b). A member is summed up by x (repeat
purchases: occasions after the first), t_x (days from the first to the last occasion) and T
(days from the first occasion to the moment scored), which is all the likelihood needs (their
equation 6). Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV"): a member's spend per
occasion varies around their own mean, Gamma(p, ν) with ν ~ Gamma(q, γ) across members, so
the expected mean spend of a member with n occasions averaging m is a weighted mean of m and the
population's mean, trusting m more the more occasions there are.

Occasions are counted as the at-risk rule counts them (``at_risk.py``): a purchase less than a
day after the previous one is the same occasion, and purchases of members merged into a member
count as theirs, as the KPIs count them. Spend is net of returns. Times are in days of 24 hours.

Where the model does not apply the cadence rule stays (``method = 'cadence'``, model figures
null, the at-risk flag is what to read): members without a purchase yet (BG/NBD's clock starts
at the first purchase; a member who never bought has no x, t_x or T), and every member when the
fit did not converge (a likelihood the optimiser could not maximise gives parameters nobody
should act on).

The fit reads every member's summary in member-id batches (one set-based statement each), keeps
only four numbers per member, and maximises the likelihood over the logs of the parameters (so
they stay positive). Scoring reads the batches again and writes each with one statement.

Consent: the fit counts every buyer, as the KPIs do (an aggregate of the population, no figure
about anyone); members who withdrew ``data_analysis`` get no score row (docs/privacy.md).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from uuid import UUID

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from loyalty.core.db import Connection
from loyalty.members.filter import analysis_allowed

Floats = npt.NDArray[np.float64]

_NO_MEMBER = UUID(int=0)
SCORE_HORIZON_DAYS = 90
VALUE_HORIZON_DAYS = 365


# -- BG/NBD -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float


def bgnbd_log_likelihood(params: BgNbd, x: Floats, t_x: Floats, T: Floats) -> Floats:
    """Each member's log-likelihood (FHL 2005, eq. 6), in log space:

    L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
        + [x > 0] · B(a+1, b+x-1)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x))
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    common = special.gammaln(r + x) - special.gammaln(r) + r * math.log(alpha)
    gone_never = special.betaln(a, b + x) - special.betaln(a, b) - (r + x) * np.log(alpha + T)
    repeat = x > 0
    # B(a+1, b+x-1) is only defined for x > 0; x = 0 rows take b there and are masked out.
    gone_after = (special.betaln(a + 1, b + np.where(repeat, x - 1, 0))
                  - special.betaln(a, b) - (r + x) * np.log(alpha + t_x))
    both = np.logaddexp(gone_never, np.where(repeat, gone_after, -np.inf))
    return np.asarray(common + both, dtype=np.float64)


@dataclass(frozen=True)
class BgNbdFit:
    params: BgNbd
    log_likelihood: float
    members: int
    converged: bool


def fit_bgnbd(x: Floats, t_x: Floats, T: Floats) -> BgNbdFit:
    """Maximum likelihood over log r, log α, log a, log b (L-BFGS-B on the mean negative
    log-likelihood, so the scale does not depend on the number of members)."""
    members = len(x)
    if members == 0:
        return BgNbdFit(BgNbd(1.0, 1.0, 1.0, 1.0), 0.0, 0, False)

    def objective(logs: Floats) -> float:
        r, alpha, a, b = np.exp(logs)
        # The optimiser may try parameters where a term overflows: that is a bad point, not
        # an error.
        with np.errstate(all="ignore"):
            value = -float(np.mean(bgnbd_log_likelihood(BgNbd(r, alpha, a, b), x, t_x, T)))
        return value if math.isfinite(value) else 1e300

    # α is a time scale (days): start it at the mean age so the first steps are sensible.
    start = np.log([1.0, max(float(np.mean(T)), 1.0), 1.0, 1.0])
    result = optimize.minimize(objective, start, method="L-BFGS-B",
                               bounds=[(-12.0, 12.0)] * 4, options={"maxiter": 500})
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    total = float(np.sum(bgnbd_log_likelihood(BgNbd(r, alpha, a, b), x, t_x, T)))
    at_bound = bool(np.any(np.abs(result.x) >= 12.0 - 1e-6))
    converged = bool(result.success) and math.isfinite(total) and not at_bound
    return BgNbdFit(BgNbd(r, alpha, a, b), total, members, converged)


def probability_alive(params: BgNbd, x: Floats, t_x: Floats, T: Floats) -> Floats:
    """P(alive | x, t_x, T) = 1 / (1 + [x > 0] a/(b+x-1) ((α+T)/(α+t_x))^(r+x)) (FHL eq. 11),
    the power taken in log space so long silences do not overflow."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    repeat = x > 0
    log_odds = (np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0))
                + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)))
    return np.where(repeat, special.expit(-log_odds), 1.0)


def expected_purchases(params: BgNbd, t: float, x: Floats, t_x: Floats, T: Floats) -> Floats:
    """Expected occasions in the next ``t`` days (FHL eq. 10):

    E[Y(t)] = (a+b+x-1)/(a-1) · [1 - ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x-1; z)]
              / (1 + [x > 0] a/(b+x-1) ((α+T)/(α+t_x))^(r+x)),   z = t/(α+T+t)

    ₂F₁ with r+x and b+x large (a weekly shopper of two years has x near 100) is beyond
    scipy's series, so it is taken through Euler's transformation, ₂F₁(A, B; C; z) =
    (1-z)^(C-A-B) ₂F₁(C-A, C-B; C; z), whose parameters C-A = a+b-1-r and C-B = a-1 do not
    grow with x; and since 1-z = (α+T)/(α+T+t) the bracket becomes
    1 - (1-z)^(a-1) ₂F₁(a+b-1-r, a-1; a+b+x-1; z).
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = t / (alpha + T + t)
    hyp = special.hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
    bracket = 1 - np.exp((a - 1) * np.log1p(-z)) * hyp
    value = (a + b + x - 1) / (a - 1) * bracket * probability_alive(params, x, t_x, T)
    # Nobody expects fewer than nothing; a value the special function could not give is none.
    return np.asarray(np.clip(np.nan_to_num(value, nan=0.0, posinf=0.0), 0.0, None),
                      dtype=np.float64)


def simulate_bgnbd(params: BgNbd, members: int, T: Floats | float, rng: np.random.Generator,
                   *, ahead: float = 0.0) -> tuple[Floats, Floats, Floats]:
    """Draw (x, t_x) for members observed for T days from their first purchase, the process
    BG/NBD assumes, and how many purchases each makes in the ``ahead`` days after T. Used by
    the tests."""
    ages = np.broadcast_to(np.asarray(T, dtype=np.float64), (members,))
    rates = rng.gamma(params.r, 1.0 / params.alpha, members)
    drops = rng.beta(params.a, params.b, members)
    x = np.zeros(members)
    t_x = np.zeros(members)
    later = np.zeros(members)
    for i in range(members):
        now, alive = 0.0, True
        while alive:
            now += rng.exponential(1.0 / rates[i])
            if now > ages[i] + ahead:
                break
            if now > ages[i]:
                later[i] += 1
            else:
                x[i] += 1
                t_x[i] = now
            alive = rng.random() >= drops[i]
    return x, t_x, later


# -- Gamma-Gamma ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float


def gamma_gamma_log_likelihood(params: GammaGamma, n: Floats, m: Floats) -> Floats:
    """Log-likelihood of a member's mean spend m over n occasions (FHL "RFM and CLV", eq. 3,
    with the constant from the Jacobian of the mean): Γ(pn+q)/(Γ(pn)Γ(q)) γ^q m^(pn-1) n^(pn)
    / (γ+mn)^(pn+q)."""
    p, q, g = params.p, params.q, params.gamma
    return np.asarray(special.gammaln(p * n + q) - special.gammaln(p * n) - special.gammaln(q)
                      + q * math.log(g) + (p * n - 1) * np.log(m) + p * n * np.log(n)
                      - (p * n + q) * np.log(g + m * n), dtype=np.float64)


def fit_gamma_gamma(n: Floats, m: Floats) -> GammaGamma | None:
    """Fitted on members with a positive mean spend; None when there are none or the optimiser
    fails, or q <= 1 (the population mean p γ/(q-1) would not exist)."""
    keep = (n > 0) & (m > 0)
    n, m = n[keep], m[keep]
    if len(n) < 2:
        return None

    def objective(logs: Floats) -> float:
        p, q, g = np.exp(logs)
        with np.errstate(all="ignore"):
            value = -float(np.mean(gamma_gamma_log_likelihood(GammaGamma(p, q, g), n, m)))
        return value if math.isfinite(value) else 1e300

    start = np.log([1.0, 2.0, float(np.mean(m))])
    result = optimize.minimize(objective, start, method="L-BFGS-B",
                               bounds=[(-12.0, 12.0), (-12.0, 12.0), (-12.0, 30.0)])
    p, q, g = (float(v) for v in np.exp(result.x))
    if not result.success or q <= 1:
        return None
    return GammaGamma(p, q, g)


def expected_spend(params: GammaGamma, n: Floats, m: Floats) -> Floats:
    """E[spend per occasion | n, m] = p (γ + n m) / (p n + q - 1): members with no positive
    spend (n taken as 0) get the population's mean p γ / (q - 1)."""
    n = np.where(m > 0, n, 0.0)
    m = np.where(m > 0, m, 0.0)
    return np.asarray(params.p * (params.gamma + n * m) / (params.p * n + params.q - 1),
                      dtype=np.float64)


# -- Summaries from the purchases -------------------------------------------------------------

# $1 the last member id of the previous batch, $2 batch size, $3 the moment (purchases up to it
# count), $4 the end of a hold-out window after $3 (null: none). Members scored: not merged into
# another, not erased. Per member: purchase occasions (a purchase less than a day after the
# previous one is the same occasion), first and last purchase, net spend, the median days
# between occasions (the cadence rule's habit), whether any purchase falls in ($3, $4], and
# whether they allow data analysis (the fit reads everyone; only those who allow it are scored).
_SUMMARIES = f"""
with batch as materialized (
    select member_id from members
     where merged_into is null and status <> 'erased' and member_id > $1
     order by member_id limit $2
), family as materialized (
    select member_id from batch
    union all
    select f.member_id from members f
     where f.merged_into = any(array(select member_id from batch))
), timeline as (
    select coalesce(o.merged_into, o.member_id) as member_id, p.occurred_at,
           p.total - p.returned_amount as spend,
           extract(epoch from p.occurred_at - lag(p.occurred_at) over (
               partition by coalesce(o.merged_into, o.member_id) order by p.occurred_at))::float8
               / 86400 as gap_days
      from purchases p join members o on o.member_id = p.member_id
     where p.member_id = any(array(select member_id from family)) and p.occurred_at <= $3
), measured as (
    select member_id, min(occurred_at) as first_at, max(occurred_at) as last_at,
           1 + count(*) filter (where gap_days >= 1) as occasions,
           sum(spend)::float8 as spend,
           percentile_cont(0.5) within group (order by gap_days)
               filter (where gap_days >= 1) as typical_interval_days
      from timeline group by member_id
), later as (
    select distinct coalesce(o.merged_into, o.member_id) as member_id
      from purchases p join members o on o.member_id = p.member_id
     where $4::timestamptz is not null
       and p.member_id = any(array(select member_id from family))
       and p.occurred_at > $3 and p.occurred_at <= $4
)
select b.member_id, coalesce(m.occasions, 0)::int as occasions,
       coalesce(extract(epoch from m.last_at - m.first_at)::float8 / 86400, 0) as t_x,
       coalesce(extract(epoch from $3 - m.first_at)::float8 / 86400, 0) as age,
       coalesce(m.spend, 0) as spend, m.typical_interval_days,
       floor(extract(epoch from $3 - m.last_at) / 86400)::int as days_since,
       exists (select 1 from later l where l.member_id = b.member_id) as bought_later,
       {analysis_allowed("b.member_id")} as analysed
  from batch b left join measured m on m.member_id = b.member_id
 order by b.member_id
"""  # noqa: S608 - a constant consent test over the batch's member id


@dataclass
class Summaries:
    """A batch of members' summaries as arrays, in member-id order."""

    member_ids: list[UUID]
    occasions: Floats  # 0 for a member without a purchase
    t_x: Floats
    age: Floats  # T: days from the first occasion to the moment
    mean_spend: Floats
    typical_interval_days: Floats  # nan below two occasions
    days_since: Floats  # nan without a purchase
    bought_later: npt.NDArray[np.bool_]
    analysed: npt.NDArray[np.bool_]  # false: withdrew data_analysis, not scored individually

    @property
    def x(self) -> Floats:
        return np.maximum(self.occasions - 1, 0)

    @property
    def bought(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.occasions > 0)

    def select(self, keep: npt.NDArray[np.bool_]) -> Summaries:
        return Summaries([m for m, k in zip(self.member_ids, keep, strict=True) if k],
                         self.occasions[keep], self.t_x[keep], self.age[keep],
                         self.mean_spend[keep], self.typical_interval_days[keep],
                         self.days_since[keep], self.bought_later[keep], self.analysed[keep])

    @staticmethod
    def join(parts: list[Summaries]) -> Summaries:
        def glue(name: str) -> Floats:
            return np.concatenate([getattr(part, name) for part in parts]) if parts \
                else np.zeros(0)

        return Summaries([m for part in parts for m in part.member_ids], glue("occasions"),
                         glue("t_x"), glue("age"), glue("mean_spend"),
                         glue("typical_interval_days"), glue("days_since"),
                         np.asarray(glue("bought_later"), dtype=np.bool_),
                         np.asarray(glue("analysed"), dtype=np.bool_))


async def summary_batches(conn: Connection, *, as_of: dt.datetime,
                          hold_out_until: dt.datetime | None = None,
                          batch_size: int = 50_000) -> AsyncIterator[Summaries]:
    """Every scored member's summary as of ``as_of``, one set-based read per batch."""
    after = _NO_MEMBER
    while True:
        rows = await conn.fetch(_SUMMARIES, after, batch_size, as_of, hold_out_until)
        if not rows:
            return
        occasions = np.array([row["occasions"] for row in rows], dtype=np.float64)
        spend = np.array([row["spend"] for row in rows], dtype=np.float64)
        yield Summaries(
            member_ids=[row["member_id"] for row in rows],
            occasions=occasions,
            t_x=np.array([row["t_x"] for row in rows], dtype=np.float64),
            age=np.array([row["age"] for row in rows], dtype=np.float64),
            mean_spend=np.divide(spend, occasions, out=np.zeros_like(spend),
                                 where=occasions > 0),
            typical_interval_days=np.array(
                [np.nan if row["typical_interval_days"] is None
                 else row["typical_interval_days"] for row in rows], dtype=np.float64),
            days_since=np.array([np.nan if row["days_since"] is None else row["days_since"]
                                 for row in rows], dtype=np.float64),
            bought_later=np.array([row["bought_later"] for row in rows], dtype=np.bool_),
            analysed=np.array([row["analysed"] for row in rows], dtype=np.bool_))
        if len(rows) < batch_size:
            return
        after = rows[-1]["member_id"]


# -- Fit and score ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnFit:
    bgnbd: BgNbdFit
    spend: GammaGamma | None


async def fit_churn_model(conn: Connection, *, as_of: dt.datetime,
                          batch_size: int = 50_000) -> ChurnFit:
    """Fit BG/NBD and Gamma-Gamma on every member with a purchase up to ``as_of``."""
    parts: list[tuple[Floats, Floats, Floats, Floats, Floats]] = []
    async for batch in summary_batches(conn, as_of=as_of, batch_size=batch_size):
        buyers = batch.bought
        parts.append((batch.x[buyers], batch.t_x[buyers], batch.age[buyers],
                      batch.occasions[buyers], batch.mean_spend[buyers]))
    x, t_x, age, n, m = (np.concatenate([part[i] for part in parts]) if parts else np.zeros(0)
                         for i in range(5))
    return ChurnFit(fit_bgnbd(x, t_x, age), fit_gamma_gamma(n, m))


@dataclass
class Scores:
    p_alive: Floats
    expected_90d: Floats
    value_12m: Floats


def score(fit: ChurnFit, batch: Summaries, *, margin: float,
          horizon_days: float = SCORE_HORIZON_DAYS) -> Scores:
    """The model's figures for a batch (meaningful where the member has bought)."""
    params = fit.bgnbd.params
    x, t_x, age = batch.x, batch.t_x, batch.age
    alive = probability_alive(params, x, t_x, age)
    soon = expected_purchases(params, horizon_days, x, t_x, age)
    year = expected_purchases(params, VALUE_HORIZON_DAYS, x, t_x, age)
    per_occasion = (expected_spend(fit.spend, batch.occasions, batch.mean_spend)
                    if fit.spend is not None else batch.mean_spend)
    return Scores(alive, soon, year * per_occasion * margin)


# $1 member ids, $2 methods, $3 P(alive), $4 expected purchases in 90 days, $5 predicted value
# in 12 months, $6 the moment scored, $7 the fit.
_WRITE_SCORES = """
insert into member_churn_scores as s (member_id, method, p_alive, expected_purchases_90d,
                                      predicted_value_12m, scored_at, fit_id)
select * , $6::timestamptz, $7::bigint
  from unnest($1::uuid[], $2::text[], $3::float8[], $4::float8[], $5::float8[])
on conflict (member_id) do update
   set method = excluded.method, p_alive = excluded.p_alive,
       expected_purchases_90d = excluded.expected_purchases_90d,
       predicted_value_12m = excluded.predicted_value_12m, scored_at = excluded.scored_at,
       fit_id = excluded.fit_id
"""

# Scores of members no longer scored (merged, erased or withdrew data_analysis since) go: $1 the
# moment scored.
_DROP_STALE = """
with gone as (
    delete from member_churn_scores where scored_at < $1 returning 1
) select count(*) from gone
"""

_RECORD_FIT = """
insert into churn_model_fits (fitted_at, as_of, parameters, log_likelihood, members, converged)
values ($1, $2, $3::jsonb, $4, $5, $6)
returning fit_id
"""


def _nullable(values: Floats, keep: npt.NDArray[np.bool_]) -> list[float | None]:
    return [float(v) if k and math.isfinite(v) else None
            for v, k in zip(values, keep, strict=True)]


async def fit_and_score(conn: Connection, *, now: dt.datetime, margin: float,
                        batch_size: int = 50_000) -> dict[str, int]:
    """The weekly job: fit as of ``now``, record the fit, score every member who allows data
    analysis in batches (each batch one read and one write, its own transaction), then drop the
    scores of members no longer scored. ``conn`` should not be in a transaction."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    fit = await fit_churn_model(conn, as_of=now, batch_size=batch_size)
    params = {"bgnbd": asdict(fit.bgnbd.params),
              "gamma_gamma": asdict(fit.spend) if fit.spend is not None else None}
    fit_id = await conn.fetchval(
        _RECORD_FIT, now, now, json.dumps(params),
        fit.bgnbd.log_likelihood if math.isfinite(fit.bgnbd.log_likelihood) else None,
        fit.bgnbd.members, fit.bgnbd.converged)
    totals = {"members": 0, "model": 0, "cadence": 0, "converged": int(fit.bgnbd.converged),
              "removed": 0}
    async for everyone in summary_batches(conn, as_of=now, batch_size=batch_size):
        # The fit above counted every buyer; a member who withdrew data_analysis gets no score
        # of their own, and the stale-score sweep below drops the one they had.
        batch = everyone.select(everyone.analysed)
        if not batch.member_ids:
            continue
        use_model = batch.bought & fit.bgnbd.converged
        with np.errstate(all="ignore"):
            scores = score(fit, batch, margin=margin)
        methods = np.where(use_model, "model", "cadence").tolist()
        async with conn.transaction():
            await conn.execute(_WRITE_SCORES, batch.member_ids, methods,
                               _nullable(scores.p_alive, use_model),
                               _nullable(scores.expected_90d, use_model),
                               _nullable(scores.value_12m, use_model), now, fit_id)
        totals["members"] += len(batch.member_ids)
        totals["model"] += int(use_model.sum())
        totals["cadence"] += int((~use_model).sum())
    totals["removed"] = int(await conn.fetchval(_DROP_STALE, now))
    return totals


# -- Reading the scores -----------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnScore:
    """A member's figures as the last run scored them; the model's are None where the method
    is 'cadence' (read the at-risk flag there)."""

    method: str
    p_alive: float | None
    expected_purchases_90d: float | None
    predicted_value_12m: float | None
    scored_at: dt.datetime


async def churn_score(conn: Connection, member_id: UUID) -> ChurnScore | None:
    """The member's latest churn scores (for the member page and export), None before the
    first run or for a member merged or erased."""
    row = await conn.fetchrow(
        "select method, p_alive, expected_purchases_90d, predicted_value_12m, scored_at"
        "  from member_churn_scores where member_id = $1", member_id)
    return ChurnScore(**dict(row)) if row is not None else None
