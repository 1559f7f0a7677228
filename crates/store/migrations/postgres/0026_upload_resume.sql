-- PostgreSQL twin of sqlite/0026_upload_resume.sql (same version).
-- Where a chunked upload stands after its last acknowledged chunk (moat_store::UploadState, JSON): the SHA-256
-- midstate of the bytes so far (chaining value, the tail of an incomplete block, the length) and, in an object
-- store, the ids of the blocks staged for it in order. Any node continues the upload from it without reading the
-- earlier chunks again.
ALTER TABLE uploads ADD COLUMN resume TEXT;
