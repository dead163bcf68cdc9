-- Every time the API takes in lies from 2000 to 2100 (schemas.base.Instant) and every birth date
-- from 1900 to today (BirthDate). Before those types, year 1 and year 9999 were stored as
-- -infinity / infinity, and one such row made every later job that subtracts times fail
-- ("cannot subtract infinite timestamps"). Rows stored so are brought to the ends of the
-- calendar (an infinite birth date becomes unknown), then the tables refuse them for good.

create function pg_temp.clamped(t timestamptz) returns timestamptz
language sql immutable as $$
    select case when t = '-infinity' then '2000-01-01T00:00:00Z'::timestamptz
                when t = 'infinity' then '2100-01-01T00:00:00Z'::timestamptz
                else t end
$$;

update purchases set occurred_at = pg_temp.clamped(occurred_at) where not isfinite(occurred_at);
update point_lots
   set earned_at = pg_temp.clamped(earned_at), available_at = pg_temp.clamped(available_at),
       expires_at = pg_temp.clamped(expires_at)
 where not (isfinite(earned_at) and isfinite(available_at) and isfinite(expires_at));
update members set birth_date = null where not isfinite(birth_date);
update coupon_templates
   set valid_from = pg_temp.clamped(valid_from), valid_until = pg_temp.clamped(valid_until)
 where not (isfinite(valid_from) and isfinite(valid_until));
update member_coupons
   set valid_from = pg_temp.clamped(valid_from), valid_until = pg_temp.clamped(valid_until)
 where not (isfinite(valid_from) and isfinite(valid_until));
update campaigns
   set starts_at = pg_temp.clamped(starts_at), ends_at = pg_temp.clamped(ends_at)
 where not (isfinite(starts_at) and isfinite(ends_at));
update events
   set starts_at = pg_temp.clamped(starts_at), ends_at = pg_temp.clamped(ends_at)
 where not (isfinite(starts_at) and isfinite(ends_at));

-- A null passes a check, as it should: an open end, an unknown birth date.
alter table purchases add constraint purchases_finite_time check (isfinite(occurred_at));
alter table point_lots add constraint point_lots_finite_times
    check (isfinite(earned_at) and isfinite(available_at) and isfinite(expires_at));
alter table members add constraint members_finite_birth_date check (isfinite(birth_date));
alter table coupon_templates add constraint coupon_templates_finite_validity
    check (isfinite(valid_from) and isfinite(valid_until));
alter table member_coupons add constraint member_coupons_finite_validity
    check (isfinite(valid_from) and isfinite(valid_until));
alter table campaigns add constraint campaigns_finite_window
    check (isfinite(starts_at) and isfinite(ends_at));
alter table events add constraint events_finite_times
    check (isfinite(starts_at) and isfinite(ends_at));
