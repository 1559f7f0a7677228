-- PostgreSQL twin of sqlite/0016_jobs.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- Durable jobs (DESIGN principle 9; crates/store/src/meta/jobs.rs, run by crates/server/src/jobs): anything that
-- outlives a request is a row here, claimed by one process at a time with a lease, checkpointed as it goes, and
-- either finished, failed with a message, or claimed again after its process died. Times an operator reads are
-- text (time_fmt); times the runner compares are unix seconds (DOUBLE PRECISION) computed by the caller, so the SQL is the
-- same for PostgreSQL.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    registry_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    payload TEXT NOT NULL,
    checkpoint TEXT,
    progress TEXT,
    result TEXT,
    error TEXT,
    -- Claims so far: a claim of a running job whose lease lapsed is an interrupted attempt.
    attempts BIGINT NOT NULL DEFAULT 0,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION,
    -- Not claimed before this time (a delayed or rescheduled job).
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX jobs_claim ON jobs(state, not_before);
CREATE INDEX jobs_registry ON jobs(registry_id, created_at);

-- Blobs a job received (downloaded and hashed: a ReceivedBlob) and placed under their digest, pinned under the
-- job: a job resumed after a restart links them without downloading them again (the proof of possession is this
-- row, written only from a ReceivedBlob). Removed with the job's pins when it ends.
CREATE TABLE job_blobs (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (job_id, digest)
);
