-- The liability forecast (loyalty/insights/liability.py) reads every lot's age in whole months
-- of the business calendar, as PostgreSQL's age() counts them: earned at noon on 10 January,
-- a lot is one month old from noon on 10 February, and twelve months old at the moment a
-- rolling twelve-month expiry takes it. Never negative (an entry a clock skew put before its
-- lot is of age 0).
create function whole_months(earlier timestamptz, later timestamptz, tz text) returns int
language sql stable strict as $$
    select greatest(0, (extract(year from a) * 12 + extract(month from a))::int)
      from (select age(later at time zone tz, earlier at time zone tz) as a) as elapsed
$$;
