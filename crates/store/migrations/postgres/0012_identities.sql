-- PostgreSQL twin of sqlite/0012_identities.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- Identities with a lifecycle. A service principal's credential generation goes up with every secret reset, and
-- every token names the generation it was issued under: the tokens of a reset (or deleted) principal are refused
-- on their next use.
ALTER TABLE service_principals ADD COLUMN credential_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE service_principals ADD COLUMN credential_changed_at TEXT;

-- Role assignments as ARM has them: who made one, one per principal, role and scope (ARM's RoleAssignmentExists;
-- scopes compare in any case), none without its principal.
ALTER TABLE role_assignments ADD COLUMN created_by TEXT;
CREATE UNIQUE INDEX role_assignments_triple ON role_assignments(principal_id, role, scope COLLATE nocase);
