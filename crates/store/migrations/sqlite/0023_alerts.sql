-- Azure Monitor alerts (issue 12 item 3): action groups, metric alert rules, activity-log alert rules; the state
-- of each metric rule per dimension combination (so a restart neither fires again nor forgets a firing alert);
-- and the notifications to webhook receivers, durable until delivered.
CREATE TABLE alert_resources (
    -- `actionGroup`, `metricAlert` or `activityLogAlert`.
    kind TEXT NOT NULL,
    -- Lower-case resource group and name: ARM names are case-insensitive.
    rg_key TEXT NOT NULL,
    name_key TEXT NOT NULL,
    -- The resource id as first created (its spelling is what GET shows).
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    location TEXT NOT NULL,
    tags TEXT NOT NULL,
    -- The accepted properties in canonical form (JSON). Webhook receivers' URLs are sealed in `secrets`.
    properties TEXT NOT NULL,
    -- JSON object receiver name -> sealed serviceUri (action groups only).
    secrets TEXT NOT NULL DEFAULT '{}',
    -- Activity-log rules see records after this activity-log seq only (never those from before they existed).
    from_seq INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (kind, rg_key, name_key)
);

CREATE TABLE alert_states (
    -- The rule's lower-case id.
    rule_key TEXT NOT NULL,
    -- The dimension combination, canonical JSON ([[name, value], …]).
    dims TEXT NOT NULL,
    -- `Fired` or `Resolved`.
    condition TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    fired_at TEXT NOT NULL,
    resolved_at TEXT,
    updated TEXT NOT NULL,
    PRIMARY KEY (rule_key, dims)
);

CREATE TABLE alert_notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id TEXT NOT NULL,
    -- The action group and its receiver; the URL is looked up (and unsealed) when it is sent.
    action_group_id TEXT NOT NULL,
    receiver TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- Unix milliseconds of the next attempt.
    next_try INTEGER NOT NULL,
    -- `pending`, `delivered` or `failed` (given up, or its receiver was deleted).
    state TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    created TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX alert_notifications_due ON alert_notifications (state, next_try);
