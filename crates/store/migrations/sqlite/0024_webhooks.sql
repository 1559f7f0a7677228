-- ACR webhooks (issue 12 item 4). A webhook belongs to its registry and goes with it (ON DELETE CASCADE); its
-- service URI and custom headers are sealed by the server (they are secrets: ACR returns them only from
-- getCallbackConfig), so this table alone reveals neither.
CREATE TABLE webhooks (
    registry_id TEXT NOT NULL REFERENCES registries(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    location TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    enabled INTEGER NOT NULL DEFAULT 1,
    scope TEXT NOT NULL DEFAULT '',
    -- JSON array: "push", "delete".
    actions TEXT NOT NULL,
    service_uri_sealed TEXT NOT NULL,
    -- The custom headers as a sealed JSON object; their names (not values) in clear, to mask them in listEvents.
    custom_headers_sealed TEXT NOT NULL,
    header_names TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (registry_id, name)
);

-- One POST to one webhook: queued by the `webhooks` consumer of the audit log (or by ping) in the transaction
-- that moves its cursor, tried until it is answered 2xx or runs out of attempts. listEvents reads it back.
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    registry_id TEXT NOT NULL,
    webhook TEXT NOT NULL,
    event_id TEXT NOT NULL,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- When to try next (stored time form); NULL once delivered or given up.
    next_try TEXT,
    -- Pending, Delivered or Failed.
    state TEXT NOT NULL DEFAULT 'Pending',
    -- The last attempt's request (headers masked) and response, as listEvents shows them.
    request TEXT,
    response TEXT,
    FOREIGN KEY (registry_id, webhook) REFERENCES webhooks(registry_id, name) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_try) WHERE next_try IS NOT NULL;
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(registry_id, webhook, id);
