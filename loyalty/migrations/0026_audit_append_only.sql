-- The audit log is append-only (issue 16): nothing the application runs, and no statement typed
-- by hand by mistake, changes or removes a row. Rows leave only through the retention job
-- (jobs/catalogue.py audit_retention, off unless LOYALTY_AUDIT_RETENTION_DAYS is set), which
-- deletes whole days and says so first with `set local loyalty.audit_retention = 'on'` in its
-- own transaction. The table is not partitioned, so that setting is what the trigger checks;
-- it guards against mistakes, not against a database superuser, who can drop the trigger.
create function audit_log_append_only() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' and current_setting('loyalty.audit_retention', true) = 'on' then
        return old;
    end if;
    raise exception 'audit_log is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege',
              hint = 'old rows leave only through the audit_retention job';
end $$;

create trigger audit_log_append_only before update or delete on audit_log
    for each row execute function audit_log_append_only();

create function audit_log_no_truncate() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only: TRUNCATE refused'
        using errcode = 'insufficient_privilege';
end $$;

create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_no_truncate();

-- GET /v1/audit and the console's audit page: newest first, by actor or by time; the
-- retention job finds old days by recorded_at too.
create index audit_log_recorded on audit_log (recorded_at, audit_id);
create index audit_log_actor on audit_log (actor_id, recorded_at) where actor_id is not null;
