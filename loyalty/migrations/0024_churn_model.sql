-- Churn risk from a model (loyalty/insights/churn_model.py): each weekly fit of BG/NBD and
-- Gamma-Gamma, and every member's latest scores.

create table churn_model_fits (
    fit_id          bigint generated always as identity primary key,
    fitted_at       timestamptz not null,
    -- The moment the purchases were read as of (the job's tick).
    as_of           timestamptz not null,
    -- {"bgnbd": {"r", "alpha", "a", "b"}, "gamma_gamma": {"p", "q", "gamma"} or null}; times in
    -- days, money in the currency's minor unit as purchases hold it.
    parameters      jsonb not null,
    log_likelihood  double precision,
    -- Members with at least one purchase the fit read.
    members         int not null check (members >= 0),
    converged       boolean not null
);
create index churn_model_fits_as_of on churn_model_fits (as_of desc);

-- One row per scored member (not merged, not erased). method 'model': the fit's figures;
-- 'cadence': the model does not apply (no purchase yet, or the fit did not converge), the
-- figures are null and the at-risk flag (member_at_risk) is the member's churn signal.
create table member_churn_scores (
    member_id               uuid primary key references members,
    method                  text not null check (method in ('model', 'cadence')),
    p_alive                 double precision check (p_alive between 0 and 1),
    expected_purchases_90d  double precision check (expected_purchases_90d >= 0),
    predicted_value_12m     double precision check (predicted_value_12m >= 0),
    scored_at               timestamptz not null,
    fit_id                  bigint not null references churn_model_fits,
    check ((method = 'model') = (p_alive is not null))
);
create index member_churn_scores_p_alive on member_churn_scores (p_alive)
    where method = 'model';
