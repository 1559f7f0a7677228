-- PostgreSQL twin of sqlite/0019_log_consumers.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- The consumers of the audit and activity logs (diagnostic-setting sinks, metrics, alerts, ACR webhooks): each
-- reads a log after its cursor and moves the cursor in the transaction (or after the delivery) that took the
-- records. The logs are the outbox; retention prunes a record only once every consumer that covers it is past it.
CREATE TABLE log_consumers (
    -- Who reads: `sink:<setting id>`, `metrics`, `webhook:<id>`, …
    consumer TEXT NOT NULL,
    -- Which log: `audit`, `activity` or `checkpoint` (the trail's signed chain heads).
    log TEXT NOT NULL,
    -- The registry (lower-case name) whose records the consumer takes, NULL for all.
    registry TEXT,
    -- The last sequence number taken (every record at or below it is delivered or not the consumer's).
    seq BIGINT NOT NULL DEFAULT 0,
    updated TEXT NOT NULL,
    PRIMARY KEY (consumer, log)
);
