-- Rule backtests (issue 17): what the purchases of a period would have earned under proposed
-- earning rules against what they earned. A small period is answered at once and kept here;
-- a large one runs in the background and its progress (purchases done of the period's total)
-- is written here after every batch, so any instance can answer for it.
create table rule_backtests (
    backtest_id  uuid primary key,
    rules        jsonb not null,
    first_day    date not null,
    last_day     date not null check (last_day >= first_day),
    state        text not null check (state in ('running', 'done', 'failed')),
    -- Purchases that occurred in the period when the backtest started, and those read so far.
    total        bigint not null check (total >= 0),
    done         bigint not null default 0 check (done >= 0),
    result       jsonb,
    error        text,
    created_by   uuid references staff,
    created_at   timestamptz not null,
    updated_at   timestamptz not null,
    finished_at  timestamptz,
    check ((state = 'done') = (result is not null))
);
create index rule_backtests_created on rule_backtests (created_at desc);
