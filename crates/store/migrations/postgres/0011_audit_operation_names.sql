-- PostgreSQL twin of sqlite/0011_audit_operation_names.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- Operation names are the same whether a request succeeded or was refused. Before this version a request refused
-- for a missing permission was recorded under its permission's name (`push`, `pull`, `delete`); those rows get
-- the operation's name. Refusals recorded as `Connect` (the network), `Authenticate` (bad credentials) or
-- `ReadMetadata` do not say which request was refused and keep their names.
UPDATE audit_events SET operation_name = 'Push' WHERE operation_name = 'push';
UPDATE audit_events SET operation_name = 'Pull' WHERE operation_name = 'pull';
UPDATE audit_events SET operation_name = 'Delete' WHERE operation_name = 'delete';
