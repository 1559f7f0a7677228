-- PostgreSQL twin of sqlite/0008_unenforced_settings.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- Registry settings are written whole by this version; there are no older rows to fill in.
SELECT 1;
