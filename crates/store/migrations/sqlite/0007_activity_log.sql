-- The activity log: management-plane changes and refused management requests (Azure Activity Log's shape).
-- Written in the transaction of the change it records; refusals through the batched audit writer.
CREATE TABLE activity_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Stable id: a log sink that ships a record twice ships the same id.
    event_data_id TEXT NOT NULL UNIQUE,
    time TEXT NOT NULL,
    category TEXT NOT NULL,
    operation_name TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    registry TEXT,
    caller TEXT NOT NULL,
    caller_ip_address TEXT NOT NULL,
    status TEXT NOT NULL,
    sub_status TEXT NOT NULL,
    http_status_code INTEGER NOT NULL,
    level TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    properties TEXT NOT NULL
);
CREATE INDEX activity_events_time ON activity_events(time);
CREATE INDEX activity_events_registry ON activity_events(registry);
