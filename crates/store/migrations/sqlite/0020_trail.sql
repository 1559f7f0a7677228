-- The audit trail, compact and chained (issue 12, item 6).
--
-- Strings the audit log repeats (registries, login servers, repositories, tags, digests, media types, identities,
-- addresses, user agents, results, endpoints) are stored once and referenced by id. Ids are never reused or
-- removed: a record's meaning is its strings, and the hash chain covers the strings, not the ids.
CREATE TABLE trail_strings (
    id INTEGER PRIMARY KEY,
    s TEXT NOT NULL UNIQUE
);
-- Filters match in any case (`moat audit --repository`, `--identity`).
CREATE INDEX trail_strings_nocase ON trail_strings(s COLLATE NOCASE);

-- Data-plane events, one row each, in write order. `t` is microseconds since the epoch (a time that did not parse
-- is kept as its text); `reg` and `ident` are string ids (indexed: `moat audit --registry/--identity`); `f` packs
-- the other fields (varints, see moat_model::trail::codec); `link` is the first 48 bits of the record's chain
-- state. The rows of the old table are converted (seq kept, chained in seq order) when the store opens.
ALTER TABLE audit_events RENAME TO audit_events_v1;
DROP INDEX IF EXISTS audit_events_time;
CREATE TABLE audit_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    t NOT NULL,
    reg INTEGER NOT NULL,
    ident INTEGER,
    f BLOB NOT NULL,
    link INTEGER NOT NULL
);
-- Sequence numbers continue where the old table's stopped (consumers' cursors point into them).
INSERT INTO sqlite_sequence(name, seq) SELECT 'audit_records', COALESCE(MAX(seq), 0) FROM audit_events_v1;
CREATE INDEX audit_records_registry ON audit_records(reg);
CREATE INDEX audit_records_identity ON audit_records(ident) WHERE ident IS NOT NULL;
-- Time → seq, sparsely: one row per run of up to 1024 consecutive records with their earliest and latest times
-- (records are written in about time order, so a time range becomes a short seq range without an index on `t`).
CREATE TABLE audit_time_map (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    records INTEGER NOT NULL,
    min_t INTEGER NOT NULL,
    max_t INTEGER NOT NULL
);
-- The operation names the audit log holds (string ids), for `moat audit --operation`'s check.
CREATE TABLE audit_operations (id INTEGER PRIMARY KEY);

-- Activity records carry their link too (NULL only transiently, for rows the conversion has not reached).
ALTER TABLE activity_events ADD COLUMN link INTEGER;

-- Each chain's head, updated in the transaction that appends to the chain.
CREATE TABLE trail_heads (
    chain TEXT PRIMARY KEY,
    log TEXT NOT NULL,
    registry TEXT,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    state TEXT NOT NULL
);

-- Signed chain heads (the `checkpoint` log that diagnostic settings ship as MoatAuditTrail).
CREATE TABLE trail_checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    chain TEXT NOT NULL,
    log TEXT NOT NULL,
    registry TEXT,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    state TEXT NOT NULL,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE INDEX trail_checkpoints_chain ON trail_checkpoints(chain, seq);
