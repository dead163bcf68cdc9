-- Analytics: one row of figures per business day (kpi_daily), and the indexes the analytics
-- queries need to read a period of purchases, returns and ledger entries by time.
--
-- kpi_daily has a typed column per figure, not a jsonb document: the figures are a fixed set
-- of whole numbers that the KPI endpoint sums over days in SQL, and columns give each one a
-- type, a not-null and (where it holds) a sign check, so a snapshot cannot carry a figure
-- misspelt or missing. A new figure is a new migration (and the job re-run for past days).
-- Figures as loyalty/analytics.py defines them (docs/analytics.md):
--   stocks at the end of the day: members_total, members_active, members_dormant,
--     points_outstanding, liability_value (minor units, at the point value of the day);
--   flows over the day: members_new, reactivations, orders, sales, returns, points_issued,
--     points_redeemed, points_expired; and purchasers (distinct, for that day only: distinct
--     counts do not add up over days, so the endpoint computes them live for a period).
-- Points issued and redeemed are net of corrections and returns, so a day can be negative.

create table kpi_daily (
    day                 date primary key,
    computed_at         timestamptz not null,
    members_total       bigint not null check (members_total >= 0),
    members_active      bigint not null check (members_active >= 0),
    members_dormant     bigint not null check (members_dormant >= 0),
    members_new         bigint not null check (members_new >= 0),
    reactivations       bigint not null check (reactivations >= 0),
    orders              bigint not null check (orders >= 0),
    purchasers          bigint not null check (purchasers >= 0),
    sales               bigint not null check (sales >= 0),
    returns             bigint not null check (returns >= 0),
    points_issued       bigint not null,
    points_redeemed     bigint not null,
    points_expired      bigint not null check (points_expired >= 0),
    points_outstanding  bigint not null check (points_outstanding >= 0),
    liability_value     bigint not null check (liability_value >= 0)
);

-- Reading a period by time. BRIN, not B-tree: the purchase path writes purchases and
-- point_entries in the same statement and must stay cheap, and a B-tree would add a random
-- insert into one more index for each row; a BRIN index costs next to nothing to keep, and
-- finds a day's rows well because both tables are appended in time order (an entry's
-- created_at is when it was posted and entries are never updated; a purchase is recorded
-- moments after it occurs, or imported in date order). purchase_returns is read by the day a
-- return was recorded, likewise appended in time order.
--
-- Nothing on members: every member figure reads all members anyway (status at a moment, join
-- cohorts), and members rows are rewritten by each purchase (last_activity_at), so an index on
-- joined_at would be paid for on the purchase path and never save a scan. member_status_changes
-- already has its changed_at index (0010).
create index purchases_occurred_brin on purchases using brin (occurred_at);
create index point_entries_created_brin on point_entries using brin (created_at);
create index purchase_returns_recorded_brin on purchase_returns using brin (recorded_at);
