-- Settings Moat does not enforce are no longer accepted (moat_model::unenforced). Earlier versions stored them and
-- reported them enabled while nothing acted on them; they are turned off here so that what a registry reports is
-- what holds, and so that a retention or soft-delete policy stored before Moat enforced it cannot start purging
-- the day it does.
UPDATE registries SET settings = json_set(settings,
    '$.policies.quarantine', 'disabled',
    '$.policies.trust', 'disabled',
    '$.policies.retention.status', 'disabled',
    '$.policies.soft_delete.status', 'disabled',
    '$.zone_redundancy', json('false'));
