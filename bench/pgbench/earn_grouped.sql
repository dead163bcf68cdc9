-- What bench/pgbench/earn.sql writes, for eight purchases of eight members in one transaction
-- of multi-row statements: the most "group commit" (issue 18) could save the database, one
-- transaction and one statement of each kind per window instead of per purchase. Compare
-- 8 × its tps with earn.sql's tps on the same data (docs/decisions/0021-group-commit.md).
-- Variables: :members, :terminal and :store, set with pgbench -D.
\set n1 random(1, :members)
\set n2 random(1, :members)
\set n3 random(1, :members)
\set n4 random(1, :members)
\set n5 random(1, :members)
\set n6 random(1, :members)
\set n7 random(1, :members)
\set n8 random(1, :members)
begin;
-- The balances locked first, in one order: two groups sharing a member must not deadlock.
with g as (select member_id, 300 + (n * 7919) % 19700 as total from bench_members
            where n in (:n1, :n2, :n3, :n4, :n5, :n6, :n7, :n8))
select b.member_id from point_balances b join g using (member_id)
 order by b.member_id for update of b;
with g as (select member_id, 300 + (n * 7919) % 19700 as total from bench_members
            where n in (:n1, :n2, :n3, :n4, :n5, :n6, :n7, :n8))
insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id, occurred_at,
                       currency, total, lines, points_earned, points_redeemed, rule_version,
                       recorded_at)
select member_id, uuid_v7(), :store, :terminal, 'pgb-' || gen_random_uuid(), now(), 'JPY',
       total, '[{"sku": "SKU-1", "category": "food", "quantity": 1, "unit_price": 1}]',
       total / 100, 0, 1, now()
  from g;
with g as (select member_id, 300 + (n * 7919) % 19700 as total from bench_members
            where n in (:n1, :n2, :n3, :n4, :n5, :n6, :n7, :n8))
, entry as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source, rule_version,
                               created_at)
    select member_id, uuid_v7(), 'earn', total / 100 + 1, 'Purchase at BENCH', 'purchase', 1,
           now()
      from g
    returning member_id, entry_id, amount
)
insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at, available_at,
                        released_at, expires_at)
select member_id, uuid_v7(), entry_id, amount, amount, now(), now(), now(),
       now() + interval '1 year' from entry;
with g as (select member_id, 300 + (n * 7919) % 19700 as total from bench_members
            where n in (:n1, :n2, :n3, :n4, :n5, :n6, :n7, :n8))
update point_balances b set available = available + g.total / 100 + 1,
       lifetime_earned = lifetime_earned + g.total / 100 + 1,
       purchase_count = purchase_count + 1, version = version + 1, updated_at = now()
  from g
 where b.member_id = g.member_id;
insert into idempotency_keys (principal_id, idempotency_key, request_hash, response_status,
                              response_body)
select :terminal, 'pgb-' || gen_random_uuid(), '\x00', 201, '\x7b7d'
  from generate_series(1, 8);
commit;
