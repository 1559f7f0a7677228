-- Identities with a lifecycle. A service principal's credential generation goes up with every secret reset, and
-- every token names the generation it was issued under: the tokens of a reset (or deleted) principal are refused
-- on their next use.
ALTER TABLE service_principals ADD COLUMN credential_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE service_principals ADD COLUMN credential_changed_at TEXT;

-- Role assignments as ARM has them: who made one, one per principal, role and scope (ARM's RoleAssignmentExists;
-- scopes compare in any case), none without its principal.
ALTER TABLE role_assignments ADD COLUMN created_by TEXT;
DELETE FROM role_assignments WHERE principal_id NOT IN (SELECT app_id FROM service_principals);
DELETE FROM role_assignments WHERE rowid NOT IN
    (SELECT MIN(rowid) FROM role_assignments GROUP BY principal_id, role, lower(scope));
CREATE UNIQUE INDEX role_assignments_triple ON role_assignments(principal_id, role, scope COLLATE NOCASE);
