-- Erasure (issue 16, GDPR art. 17, APPI art. 35; docs/decisions/0015-erasure.md).
--
-- member_erasures: each request to erase a member, by the member, by staff or by the retention
-- job, and what became of it. A pending request (neither cancelled nor done) waits for its
-- due time, the end of the grace period (LOYALTY_ERASURE_GRACE_DAYS), for the erasure job.
-- Kept after the erasure as the record that it was done (GDPR art. 5(2), 30): it holds no
-- personal data, only the pseudonymous member id and times. A staff member's reason is in the
-- audit log, not here.
create table member_erasures (
    member_id uuid not null references members (member_id),
    erasure_id uuid not null default uuid_v7(),
    requested_at timestamptz not null,
    due_at timestamptz not null,
    requested_by_kind text not null check (requested_by_kind in ('member', 'staff', 'retention')),
    requested_by uuid,
    cancelled_at timestamptz,
    cancelled_by_kind text check (cancelled_by_kind in ('member', 'staff')),
    cancelled_by uuid,
    erased_at timestamptz,
    primary key (member_id, erasure_id),
    check (cancelled_at is null or erased_at is null),
    check ((cancelled_at is null) = (cancelled_by_kind is null))
);
-- One pending request per member: asking again finds the first.
create unique index member_erasures_pending on member_erasures (member_id)
    where cancelled_at is null and erased_at is null;
-- The erasure job's look for due requests.
create index member_erasures_due on member_erasures (due_at)
    where cancelled_at is null and erased_at is null;

-- The retention job finds members inactive for years by walking members in id order, with no
-- index on last_activity_at: every purchase updates that column, and an index on it would make
-- each of those updates rewrite every index of members instead of staying a heap-only (HOT)
-- update (the earn benchmark lost about a third with it).

-- The audit log stays append-only (migration 0026). One kind of UPDATE gets through besides:
-- the erasure of a member's personal data from the free text of rows (details), where it was
-- written by an earlier version of the service (the search text of members.search) or by a
-- person (a staff member's reason). The update must replace occurrences of given values with
-- '[erased]' in the string leaves of details and change nothing else, which the trigger checks
-- by computing the same replacement itself; the values come in the transaction-local setting
-- loyalty.audit_erasure (a JSON array of strings), set only by erase_from_audit_log below.
-- So even a statement that forges the setting can only remove text from a row, never add,
-- alter or move anything. Like the retention setting, this guards against mistakes, not a
-- superuser.

-- ``j`` with every occurrence of each of ``vals`` in its string values replaced.
create function audit_details_erased(j jsonb, vals text[]) returns jsonb
    language plpgsql immutable as $$
declare
    s text;
    v text;
begin
    case jsonb_typeof(j)
        when 'object' then
            return coalesce((select jsonb_object_agg(e.key, audit_details_erased(e.value, vals))
                               from jsonb_each(j) e), '{}'::jsonb);
        when 'array' then
            return coalesce((select jsonb_agg(audit_details_erased(e.value, vals)
                                              order by e.n)
                               from jsonb_array_elements(j) with ordinality e(value, n)),
                            '[]'::jsonb);
        when 'string' then
            s := j #>> '{}';
            foreach v in array vals loop
                if v <> '' then
                    s := replace(s, v, '[erased]');
                end if;
            end loop;
            return to_jsonb(s);
        else
            return j;
    end case;
end $$;

create or replace function audit_log_append_only() returns trigger language plpgsql as $$
declare
    erasing text := nullif(current_setting('loyalty.audit_erasure', true), '');
begin
    if tg_op = 'DELETE' and current_setting('loyalty.audit_retention', true) = 'on' then
        return old;
    end if;
    if tg_op = 'UPDATE' and erasing is not null
       and (new.audit_id, new.recorded_at, new.actor_kind, new.actor_id, new.action,
            new.subject_kind, new.subject_id, new.address)
           is not distinct from
           (old.audit_id, old.recorded_at, old.actor_kind, old.actor_id, old.action,
            old.subject_kind, old.subject_id, old.address)
       and new.details = audit_details_erased(
               old.details, array(select jsonb_array_elements_text(erasing::jsonb))) then
        return new;
    end if;
    raise exception 'audit_log is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege',
              hint = 'old rows leave only through the audit_retention job; personal data '
                     'leaves row text only through erase_from_audit_log()';
end $$;

-- Erase ``vals`` from the text of the audit rows about member ``subject`` (by the index on
-- subjects); how many rows changed. Only rows about the member: a scan of the whole log would
-- cost seconds per million rows for each erasure, and since this migration no row keeps
-- free text naming another member (members.search keeps no search text, below).
create function erase_from_audit_log(subject uuid, vals text[]) returns bigint
    language plpgsql as $$
declare
    wanted text[] := array(select v from unnest(vals) v where v is not null and v <> '');
    changed bigint;
begin
    if cardinality(wanted) = 0 then
        return 0;
    end if;
    perform set_config('loyalty.audit_erasure', to_jsonb(wanted)::text, true);
    update audit_log a set details = audit_details_erased(a.details, wanted)
     where a.subject_kind = 'member' and a.subject_id = subject
       and a.details <> audit_details_erased(a.details, wanted);
    get diagnostics changed = row_count;
    perform set_config('loyalty.audit_erasure', '', true);
    return changed;
end $$;

-- members.search rows no longer keep the search text (api/members.py): what earlier versions
-- kept, often an e-mail address or a phone number, is erased from them now, through the same
-- check, one row and its own text at a time.
do $$
declare
    r record;
begin
    for r in select audit_id, details ->> 'q' as q from audit_log
              where action = 'members.search' and coalesce(details ->> 'q', '') <> '' loop
        perform set_config('loyalty.audit_erasure', jsonb_build_array(r.q)::text, true);
        update audit_log set details = audit_details_erased(details, array[r.q])
         where audit_id = r.audit_id;
    end loop;
    perform set_config('loyalty.audit_erasure', '', true);
end $$;
