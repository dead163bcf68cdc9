-- The points ledger: entries (append-only), lots (earned points with expiry), allocations
-- (every change of a lot's remaining points, with the entry that made it), and a balance
-- summary per member kept in step with them in the same statement.
--
-- Invariants, always (checked by the property tests):
--   balances.available + balances.pending = sum(entries.amount) = sum(lots.remaining)
--   balances.pending = sum(remaining of lots not yet released)
--   lots.remaining = lots.points + sum(allocations.points of that lot), 0 <= remaining <= points
--   available >= 0; an entry is never updated or deleted.
-- Every write to a member's ledger bumps balances.version; writers check the version they read
-- (docs/decisions/0005-ledger-concurrency.md).

create table earning_rule_versions (
    version     int primary key,
    rules       jsonb not null,
    created_at  timestamptz not null default now(),
    created_by  uuid references staff
);

create table point_balances (
    member_id          uuid primary key references members,
    version            bigint not null default 0,
    available          bigint not null default 0 check (available >= 0),
    pending            bigint not null default 0 check (pending >= 0),
    lifetime_earned    bigint not null default 0,
    lifetime_redeemed  bigint not null default 0,
    lifetime_expired   bigint not null default 0,
    purchase_count     bigint not null default 0,
    birthday_bonus_year int,
    updated_at         timestamptz not null default now()
);

insert into point_balances (member_id) select member_id from members;

-- A member who is merged into another keeps their record as a pointer to the survivor.
alter table members drop constraint members_status_check;
alter table members add constraint members_status_check
    check (status in ('active', 'dormant', 'suspended', 'erased', 'merged'));
alter table members add column merged_into uuid references members;

create table purchases (
    member_id        uuid not null references members,
    purchase_id      uuid not null,
    store_id         uuid not null references stores,
    terminal_id      uuid not null references terminals,
    receipt_id       text not null,
    occurred_at      timestamptz not null,
    currency         text not null,
    total            bigint not null check (total >= 0),
    lines            jsonb not null,
    points_earned    bigint not null,
    points_redeemed  bigint not null,
    rule_version     int not null references earning_rule_versions,
    returned_amount  bigint not null default 0,
    recorded_at      timestamptz not null,
    primary key (member_id, purchase_id)
);
-- A receipt is recorded once per store, whatever idempotency key it comes with.
create unique index purchases_receipt on purchases (store_id, receipt_id);
create index purchases_id on purchases (purchase_id);

create table purchase_returns (
    member_id          uuid not null,
    return_id          uuid not null,
    purchase_id        uuid not null,
    terminal_id        uuid not null references terminals,
    amount             bigint not null check (amount > 0),
    lines              jsonb not null,
    points_reversed    bigint not null,
    points_restored    bigint not null,
    points_shortfall   bigint not null,
    points_not_restored bigint not null,
    recorded_at        timestamptz not null,
    primary key (member_id, return_id),
    foreign key (member_id, purchase_id) references purchases
);

-- Engagement actions that earned points: what the caps count.
create table member_actions (
    member_id     uuid not null references members,
    action_id     uuid not null,
    action        text not null,
    target        text,
    business_date date not null,
    points        bigint not null,
    recorded_at   timestamptz not null,
    primary key (member_id, action_id)
);
create index member_actions_caps on member_actions (member_id, action, business_date);
create index member_actions_targets on member_actions (member_id, action, target)
    where target is not null;

create table point_entries (
    member_id          uuid not null references members,
    entry_id           uuid not null,
    kind               text not null check (kind in
                           ('earn', 'redeem', 'expire', 'adjust', 'reverse', 'transfer')),
    amount             bigint not null check (amount <> 0),
    reason             text not null,
    source             text not null check (source in
                           ('purchase', 'return', 'action', 'staff', 'system', 'merge',
                            'campaign')),
    purchase_id        uuid,
    return_id          uuid,
    action_id          uuid,
    staff_id           uuid,
    related_member_id  uuid,
    rule_version       int,
    trace              jsonb,
    created_at         timestamptz not null,
    primary key (member_id, entry_id)
);
create index point_entries_history on point_entries (member_id, created_at desc, entry_id desc);

create table point_lots (
    member_id     uuid not null references members,
    lot_id        uuid not null,
    entry_id      uuid not null,
    points        bigint not null check (points > 0),
    remaining     bigint not null check (remaining >= 0 and remaining <= points),
    earned_at     timestamptz not null,
    available_at  timestamptz not null,
    released_at   timestamptz,
    expires_at    timestamptz,
    -- Set on lots a merge carried over: the lot they continue, for returns of old purchases.
    origin_lot_id uuid,
    primary key (member_id, lot_id),
    foreign key (member_id, entry_id) references point_entries
);
-- Redemption takes the earliest-expiring released lots first; expiry and release scan by date.
create index point_lots_open on point_lots (member_id, expires_at, lot_id) where remaining > 0;
create index point_lots_due on point_lots (expires_at) where remaining > 0;
create index point_lots_pending on point_lots (available_at) where released_at is null;
create index point_lots_origin on point_lots (origin_lot_id) where origin_lot_id is not null;

create table point_allocations (
    member_id  uuid not null,
    entry_id   uuid not null,
    lot_id     uuid not null,
    points     bigint not null check (points <> 0),
    primary key (member_id, entry_id, lot_id),
    foreign key (member_id, entry_id) references point_entries,
    foreign key (member_id, lot_id) references point_lots
);
create index point_allocations_lot on point_allocations (member_id, lot_id);

-- Terminal writes are idempotent per terminal and key; the row commits with the effect.
create table idempotency_keys (
    terminal_id      uuid not null,
    idempotency_key  text not null,
    request_hash     bytea not null,
    response_status  int not null,
    response_body    bytea not null,
    created_at       timestamptz not null default now(),
    primary key (terminal_id, idempotency_key)
);
create index idempotency_keys_age on idempotency_keys (created_at);

-- Raised inside a posting statement to undo all of it: the balance moved since it was read.
create function ledger_conflict(message text) returns boolean
language plpgsql as $$
begin
    raise exception using errcode = 'LY409', message = message;
end
$$;
