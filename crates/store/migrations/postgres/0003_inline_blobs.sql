-- PostgreSQL twin of sqlite/0003_inline_blobs.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- Small blobs live in the database: one group commit makes many of them durable with a single fsync, where a
-- file each would cost two (file and directory). The blobs row is the same either way.
CREATE TABLE blob_data (
    digest TEXT PRIMARY KEY REFERENCES blobs(digest),
    data BYTEA NOT NULL
);
