-- What an earn writes, as plain SQL for pgbench: find the member, then in one transaction the
-- purchase, the ledger entry and its lot, the balance, and the idempotency record.
-- Variables: :members (how many), :terminal and :store (ids), set with pgbench -D.
\set n random(1, :members)
\set total random(300, 20000)
select member_id as m from bench_members where n = :n \gset
begin;
insert into purchases (member_id, purchase_id, store_id, terminal_id, receipt_id, occurred_at,
                       currency, total, lines, points_earned, points_redeemed, rule_version,
                       recorded_at)
values (:m, uuid_v7(), :store, :terminal, 'pgb-' || gen_random_uuid(), now(), 'JPY', :total,
        '[{"sku": "SKU-1", "category": "food", "quantity": 1, "unit_price": 1}]',
        :total / 100, 0, 1, now());
with entry as (
    insert into point_entries (member_id, entry_id, kind, amount, reason, source, rule_version,
                               created_at)
    values (:m, uuid_v7(), 'earn', :total / 100 + 1, 'Purchase at BENCH', 'purchase', 1, now())
    returning member_id, entry_id, amount
)
insert into point_lots (member_id, lot_id, entry_id, points, remaining, earned_at, available_at,
                        released_at, expires_at)
select member_id, uuid_v7(), entry_id, amount, amount, now(), now(), now(),
       now() + interval '1 year' from entry;
update point_balances set available = available + :total / 100 + 1,
       lifetime_earned = lifetime_earned + :total / 100 + 1, purchase_count = purchase_count + 1,
       version = version + 1, updated_at = now()
 where member_id = :m;
insert into idempotency_keys (principal_id, idempotency_key, request_hash, response_status,
                              response_body)
values (:terminal, 'pgb-' || gen_random_uuid(), '\x00', 201, '\x7b7d');
commit;
