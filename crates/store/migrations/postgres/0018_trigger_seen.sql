-- PostgreSQL twin of sqlite/0018_trigger_seen.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- The source trigger of an import pipeline imports each archive once: a blob (by name and ETag, so an archive
-- written again under the same name is new) is remembered here with the pipeline run that imports it, in the
-- transaction that records the run. A row outlives its blob's deletion (DeleteSourceBlobOnSuccess) and its run's.
CREATE TABLE trigger_seen (
    registry_id TEXT NOT NULL REFERENCES registries(id) ON DELETE CASCADE,
    pipeline TEXT NOT NULL,
    blob_name TEXT NOT NULL,
    etag TEXT NOT NULL,
    run_name TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (registry_id, pipeline, blob_name, etag)
);
