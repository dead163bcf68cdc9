-- Two daily jobs' state (docs/jobs-at-risk-and-birthdays.md).
--
-- member_at_risk: the active members whose silence is already long for them, as the last run
-- of the at_risk job found them. Rebuilt by that job in member-id batches; a member who buys
-- again or goes dormant loses the row at the next run. flagged_at is when the current spell at
-- risk began; the other columns are as of as_of, the moment of the run that last changed them.
create table member_at_risk (
    member_id              uuid primary key references members,
    flagged_at             timestamptz not null,
    last_purchase_at       timestamptz not null,
    -- Purchase occasions counted (a purchase less than a day after the previous one is the same
    -- occasion) and the median of the days between them.
    purchases              int not null check (purchases >= 2),
    typical_interval_days  double precision not null check (typical_interval_days >= 1),
    days_since             int not null check (days_since >= 0),
    as_of                  timestamptz not null
);

-- birthday_rewards: one row per member per year, written in the same statement as the points
-- it gave, so the primary key is what makes the reward once a year however often the job runs.
-- birthday is the day it was celebrated (28 February for a 29 February birthday in a common
-- year); entry_id the earn entry, when there were points; coupon_id the wallet coupon, when one
-- was issued (not a foreign key: a merge moves wallet coupons to the surviving member).
create table birthday_rewards (
    member_id    uuid not null references members,
    year         int not null,
    birthday     date not null,
    rewarded_at  timestamptz not null,
    points       bigint not null check (points >= 0),
    entry_id     uuid,
    coupon_id    uuid,
    primary key (member_id, year),
    foreign key (member_id, entry_id) references point_entries,
    check ((points > 0) = (entry_id is not null))
);

-- The members whose birthday is on a given day of the year (month * 100 + day), in member-id
-- order: each run reads a week of days, not every member. Only the statuses the job rewards.
create index members_birthday on members (
    ((extract(month from birth_date) * 100 + extract(day from birth_date))::int), member_id)
    where birth_date is not null and status in ('active', 'dormant');

-- Birthday coupons go into wallets with their own source, so results by source tell them from
-- staff, campaign and tier issues. The new check admits every row the old one did.
alter table member_coupons drop constraint member_coupons_source_check;
alter table member_coupons add constraint member_coupons_source_check
    check (source in ('staff', 'campaign', 'tier', 'birthday')) not valid;
alter table member_coupons validate constraint member_coupons_source_check;
