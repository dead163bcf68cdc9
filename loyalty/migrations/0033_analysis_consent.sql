-- Whether a member may be scored one by one (RFM, the at-risk flag, the churn model) and picked
-- out by a segment on those scores (issue 16, "Consent that is honoured"): their latest
-- data_analysis choice, never asked counting as allowed (docs/privacy.md, "Consent"). One
-- definition for the jobs, the segments and the RFM lists, read through member_consents_current
-- (one index probe per member asked about).
create function member_analysis_allowed(uuid) returns boolean
language sql stable parallel safe as $$
    select coalesce((select c.granted from member_consents c
                      where c.member_id = $1 and c.purpose = 'data_analysis'
                      order by c.recorded_at desc, c.consent_id desc limit 1), true)
$$;
