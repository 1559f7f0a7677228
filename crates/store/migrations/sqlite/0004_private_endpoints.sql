-- Private endpoints: listeners on internal addresses, each connected to one registry.
CREATE TABLE private_endpoints (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    resource_group TEXT NOT NULL,
    registry_id TEXT NOT NULL,
    connection_name TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (resource_group, name)
);
CREATE INDEX private_endpoints_registry ON private_endpoints(registry_id);

-- The endpoint a request came through: `public`, `privateEndpoint/<name>` or `dataEndpoint`.
ALTER TABLE audit_events ADD COLUMN endpoint TEXT;
