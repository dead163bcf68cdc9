-- Coupons: templates staff define, bearer codes generated in bulk, coupons issued into members'
-- wallets, and every redemption. A redemption is written in the purchase's own posting
-- statement (loyalty/ledger.py), so a coupon is used exactly when the purchase is recorded.
--
-- Who may redeem what, exactly once under any concurrency:
--   a single-use code:   coupon_codes row, updated only while redeemed_at is null;
--   a wallet coupon:     member_coupons row, likewise;
--   a template's budget: coupon_templates.redeemed_count, raised only while below total_limit
--                        (and checked by the table itself);
--   a member's limit:    counted from coupon_redemptions in the ledger read, which the
--                        posting's balance version makes exact for that member.

create table coupon_templates (
    template_id      uuid primary key default uuid_v7(),
    name             text not null,
    description      text not null default '',
    discount         jsonb not null,
    -- Validity: a fixed window (either end open), or valid_days from the moment of issue.
    valid_from       timestamptz,
    valid_until      timestamptz,
    valid_days       int check (valid_days > 0),
    min_spend        bigint not null default 0 check (min_spend >= 0),
    stores           text[] not null default '{}',
    categories       text[] not null default '{}',
    per_member_limit int check (per_member_limit > 0),
    total_limit      bigint check (total_limit >= 0),
    stackable        boolean not null default false,
    on_return        text not null default 'reinstate'
                     check (on_return in ('reinstate', 'keep_used')),
    public_code      text collate "C" unique,
    active           boolean not null default true,
    redeemed_count   bigint not null default 0 check (redeemed_count >= 0),
    created_at       timestamptz not null default now(),
    created_by       uuid references staff,
    updated_at       timestamptz not null default now(),
    check (total_limit is null or redeemed_count <= total_limit),
    check (valid_days is null or (valid_from is null and valid_until is null)),
    check (valid_until is null or valid_from is null or valid_from < valid_until)
);

-- Single-use bearer codes (printed, mailed, handed out). Generated in batches; validity is
-- fixed when generated. Not member-owned until redeemed, so keyed by the code itself.
create table coupon_codes (
    -- Byte order ("C"): codes are compared for equality only, and a linguistic collation makes
    -- every comparison of a bulk insert into this index several times slower.
    code         text collate "C" primary key,
    template_id  uuid not null references coupon_templates,
    batch_id     uuid not null,
    created_at   timestamptz not null,
    valid_from   timestamptz,
    valid_until  timestamptz,
    redeemed_at  timestamptz,
    member_id    uuid references members,
    purchase_id  uuid
);
create index coupon_codes_batch on coupon_codes (template_id, batch_id);

-- Coupons in a member's wallet: issued by staff, by a campaign or on reaching a tier. One per
-- member per issue, so issuing again under the same issue changes nothing. Every writer
-- selects the member and the template from their tables (and neither is ever deleted), so
-- there are no foreign keys to check per row: they were a third of issuing to a million.
create table member_coupons (
    member_id    uuid not null,
    coupon_id    uuid not null,
    template_id  uuid not null,
    issue_id     uuid not null,
    source       text not null check (source in ('staff', 'campaign', 'tier')),
    campaign_id  uuid,
    issued_at    timestamptz not null,
    valid_from   timestamptz,
    valid_until  timestamptz,
    redeemed_at  timestamptz,
    purchase_id  uuid,
    primary key (member_id, coupon_id),
    unique (member_id, issue_id)
);
create index member_coupons_template on member_coupons (template_id);
-- The till names a wallet coupon by its id alone (the member comes with the purchase).
create index member_coupons_id on member_coupons (coupon_id);
create index member_coupons_campaign on member_coupons (campaign_id) where campaign_id is not null;

create table coupon_code_batches (
    batch_id         uuid primary key,
    template_id      uuid not null references coupon_templates,
    idempotency_key  text unique,
    request_hash     bytea,
    count            int not null,
    prefix           text not null default '',
    created_by       uuid references staff,
    created_at       timestamptz not null
);

-- Staff issues: what was asked, under which key, and what it did.
create table coupon_issues (
    issue_id         uuid primary key,
    template_id      uuid not null references coupon_templates,
    idempotency_key  text not null unique,
    request_hash     bytea not null,
    target           jsonb not null,
    issued           bigint not null default 0,
    skipped          bigint not null default 0,
    created_by       uuid references staff,
    created_at       timestamptz not null
);

create table coupon_redemptions (
    member_id      uuid not null references members,
    redemption_id  uuid not null,
    template_id    uuid not null references coupon_templates,
    code           text,
    coupon_id      uuid,
    purchase_id    uuid not null,
    store_id       uuid not null references stores,
    discount       bigint not null check (discount >= 0),
    campaign_id    uuid,
    redeemed_at    timestamptz not null,
    reinstated_at  timestamptz,
    primary key (member_id, redemption_id),
    check ((code is null) <> (coupon_id is null))
);
create index coupon_redemptions_purchase on coupon_redemptions (member_id, purchase_id);
create index coupon_redemptions_usage on coupon_redemptions (member_id, template_id)
    where reinstated_at is null;
create index coupon_redemptions_campaign on coupon_redemptions (campaign_id)
    where campaign_id is not null;

-- "N days after issue" ends with the business day: issued on day D for N days, a coupon is
-- good until midnight (business time zone) that starts day D + N.
create function coupon_valid_until(issued timestamptz, days int, tz text) returns timestamptz
language sql stable strict as $$
    select (((issued at time zone tz)::date + days)::timestamp) at time zone tz
$$;

-- Tiers may grant a coupon on reaching them: the tier change names the coupon it issued.
alter table member_tiers add column coupon_id uuid;

-- Raised inside a posting statement when a coupon could not be claimed after all; the message
-- is the reason code (already_used, limit_reached, inactive).
create function coupon_refused(reason text) returns boolean
language plpgsql as $$
begin
    raise exception using errcode = 'LY410', message = reason;
end
$$;
