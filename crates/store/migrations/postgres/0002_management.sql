-- PostgreSQL twin of sqlite/0002_management.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- Service principals for the management plane (client credentials), secrets stored only as argon2 hashes.
CREATE TABLE service_principals (
    app_id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE role_assignments (
    id TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL,
    role TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX role_assignments_principal ON role_assignments(principal_id);

CREATE TABLE resource_groups (
    name TEXT PRIMARY KEY COLLATE nocase,
    location TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- The admin user's two passwords. ACR returns them in clear from listCredentials, so they are kept retrievable.
CREATE TABLE registry_credentials (
    registry_id TEXT NOT NULL REFERENCES registries(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (registry_id, name)
);
