-- PostgreSQL twin of sqlite/0021_sinks.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- Diagnostic settings (Microsoft.Insights/diagnosticSettings on a registry). `key` names the setting's log
-- consumers (`sink:<key>:<destination>`): it stays when the setting is replaced by a PUT, so its cursors do, and a
-- setting deleted and created again under the same name starts afresh. Deleting the registry deletes its settings;
-- the delivery loop then forgets their consumers.
CREATE TABLE diagnostic_settings (
    key TEXT PRIMARY KEY,
    registry_id TEXT NOT NULL REFERENCES registries(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    name_lower TEXT NOT NULL,
    -- moat_model::monitor::diagnostic_setting::DiagnosticSetting as JSON (no secret: destinations by id).
    body TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    UNIQUE (registry_id, name_lower)
);

-- Per sink (consumer name): how far its metric archive has gone (the last minute shipped, unix seconds), so
-- the metrics a setting archives are taken once each, beside the log cursors in log_consumers.
CREATE TABLE sink_metric_cursors (
    consumer TEXT PRIMARY KEY,
    minute BIGINT NOT NULL
);
