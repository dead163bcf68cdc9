-- Every write takes an Idempotency-Key, whoever sends it (docs/decisions/0012): a key belongs
-- to the principal that sent it, a terminal, a staff account or a member. Their ids are all
-- UUID v7, drawn from one space, so one table keeps every key and one cleanup job ages them.
alter table idempotency_keys rename column terminal_id to principal_id;
comment on table idempotency_keys is
    'Idempotency-Key of every write, per principal (terminal, staff or member id); the row '
    'commits with the effect it names. response_status 0: claimed, not yet answered.';

-- Claims a key for a write that runs in the caller's transaction: inserts it unanswered
-- (response_status 0) unless it is there. A retry of a write still running waits for that
-- write's transaction at most `wait` (a lock_timeout such as '2s'), then fails with
-- lock_not_available (55P03): the caller answers 409 in flight. The SET clause restores
-- lock_timeout when the function returns, so the rest of the transaction waits for locks as it
-- always did. Returns whether this call claimed the key, and if not what is stored under it.
create function claim_idempotency_key(principal uuid, claimed_key text, hash bytea, wait text)
returns table (claimed boolean, request_hash bytea, response_status int, response_body bytea)
language plpgsql
set lock_timeout = 0
as $$
begin
    perform set_config('lock_timeout', wait, true);
    insert into idempotency_keys (principal_id, idempotency_key, request_hash, response_status,
                                  response_body)
    values (principal, claimed_key, hash, 0, '')
    on conflict do nothing;
    if found then
        return query select true, null::bytea, null::int, null::bytea;
        return;
    end if;
    return query
        select false, k.request_hash, k.response_status, k.response_body
          from idempotency_keys k
         where k.principal_id = principal and k.idempotency_key = claimed_key;
end
$$;

-- A grant's key, kept on the grant so an interrupted grant is resumed by its retry, is the
-- staff account's own: another account may use the same key for another grant.
alter table point_grants drop constraint point_grants_idempotency_key_key;
alter table point_grants add constraint point_grants_staff_key unique (staff_id, idempotency_key);

-- Staff coupon issues and code batches are made once through idempotency_keys now; their own
-- key columns keep the keys of the rows written before.
alter table coupon_issues alter column idempotency_key drop not null,
                          alter column request_hash drop not null;
