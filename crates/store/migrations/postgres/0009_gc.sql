-- PostgreSQL twin of sqlite/0009_gc.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- Online garbage collection (crates/store/src/gc), with review queues the way GitLab's registry database keeps
-- them: whatever may have become garbage is queued for review when the thing that needed it goes away, and the
-- collector re-checks each due row in the transaction that removes it. Times are unix seconds (DOUBLE PRECISION).

-- What each manifest requires: its config and layers (`blob`) and an index's children (`manifest`). Written with
-- the manifest, removed with it: the references the collector reads to tell a needed link from garbage.
CREATE TABLE manifest_references (
    registry_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    manifest TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    child TEXT NOT NULL,
    PRIMARY KEY (registry_id, repository, manifest, kind, child),
    FOREIGN KEY (registry_id, repository, manifest) REFERENCES manifests(registry_id, repository, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_child ON manifest_references(registry_id, repository, child, kind);

-- The review queue. `blob`: a digest whose bytes may be unneeded (registry and repository are ''); `link`: a
-- repository's link that no manifest may reference; `manifest`: a manifest whose index or subject was deleted.
CREATE TABLE gc_review (
    kind TEXT NOT NULL CHECK (kind IN ('blob', 'link', 'manifest')),
    registry_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    queued_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (kind, registry_id, repository, digest)
);
CREATE INDEX gc_review_due ON gc_review(queued_at);

-- A pin holds a digest's bytes against the collector while an upload or import places them and links them: taken
-- (and committed) before the bytes are put under their name, removed in the transaction that writes the link.
CREATE TABLE blob_pins (
    holder TEXT NOT NULL,
    digest TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (holder, digest)
);
CREATE INDEX blob_pins_digest ON blob_pins(digest);

-- Leases of background jobs: one collector at a time among the processes that share the data.
CREATE TABLE job_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

-- Queue for review what a change may have made garbage (SQLite: triggers with statement bodies; here the same
-- statements in trigger functions).
CREATE FUNCTION gc_link_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_review(kind, registry_id, repository, digest, queued_at)
    VALUES ('link', NEW.registry_id, NEW.repository, NEW.digest, extract(epoch from clock_timestamp())::double precision)
    ON CONFLICT(kind, registry_id, repository, digest) DO UPDATE SET queued_at = excluded.queued_at;
    RETURN NULL;
END $$;
CREATE TRIGGER gc_link_added AFTER INSERT ON blob_links FOR EACH ROW EXECUTE FUNCTION gc_link_added();

CREATE FUNCTION gc_link_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_review(kind, registry_id, repository, digest, queued_at)
    VALUES ('blob', '', '', OLD.digest, extract(epoch from clock_timestamp())::double precision)
    ON CONFLICT(kind, registry_id, repository, digest) DO UPDATE SET queued_at = excluded.queued_at;
    RETURN NULL;
END $$;
CREATE TRIGGER gc_link_removed AFTER DELETE ON blob_links FOR EACH ROW EXECUTE FUNCTION gc_link_removed();

CREATE FUNCTION gc_manifest_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_review(kind, registry_id, repository, digest, queued_at)
    SELECT CASE r.kind WHEN 'blob' THEN 'link' ELSE 'manifest' END, r.registry_id, r.repository, r.child, extract(epoch from clock_timestamp())::double precision
    FROM manifest_references r
    WHERE r.registry_id = OLD.registry_id AND r.repository = OLD.repository AND r.manifest = OLD.digest
    ON CONFLICT(kind, registry_id, repository, digest) DO UPDATE SET queued_at = excluded.queued_at;
    INSERT INTO gc_review(kind, registry_id, repository, digest, queued_at)
    SELECT 'manifest', m.registry_id, m.repository, m.digest, extract(epoch from clock_timestamp())::double precision
    FROM manifests m
    WHERE m.registry_id = OLD.registry_id AND m.repository = OLD.repository AND m.subject = OLD.digest
    ON CONFLICT(kind, registry_id, repository, digest) DO UPDATE SET queued_at = excluded.queued_at;
    RETURN OLD;
END $$;
CREATE TRIGGER gc_manifest_removed BEFORE DELETE ON manifests FOR EACH ROW EXECUTE FUNCTION gc_manifest_removed();
