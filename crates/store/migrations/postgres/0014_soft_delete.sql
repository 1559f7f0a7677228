-- PostgreSQL twin of sqlite/0014_soft_delete.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- Soft delete (moat_model::retention): while a registry's softDeletePolicy is enabled, a deleted manifest is kept
-- here with what it referenced, and a deleted tag with the digest it pointed at, until the collector purges them
-- (retentionDays after deleted_at, unix seconds). The references keep the manifest's blob links through the
-- collector's review, so a restore finds its layers.
CREATE TABLE deleted_manifests (
    registry_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    size BIGINT NOT NULL,
    body BYTEA NOT NULL,
    created_at TEXT NOT NULL,
    deleted_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (registry_id, repository, digest)
);
CREATE INDEX deleted_manifests_due ON deleted_manifests(deleted_at);

CREATE TABLE deleted_manifest_references (
    registry_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    manifest TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    child TEXT NOT NULL,
    PRIMARY KEY (registry_id, repository, manifest, kind, child),
    FOREIGN KEY (registry_id, repository, manifest)
        REFERENCES deleted_manifests(registry_id, repository, digest) ON DELETE CASCADE
);
CREATE INDEX deleted_manifest_references_child ON deleted_manifest_references(registry_id, repository, child, kind);

CREATE TABLE deleted_tags (
    registry_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    deleted_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (registry_id, repository, tag, digest)
);
CREATE INDEX deleted_tags_due ON deleted_tags(deleted_at);

-- A kept manifest that goes for good (purged, or restored into manifests): what it referenced is reviewed, as when
-- a manifest is deleted (0009's gc_manifest_removed). BEFORE, so that its references are still there to read.
CREATE FUNCTION gc_deleted_manifest_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_review(kind, registry_id, repository, digest, queued_at)
    SELECT CASE r.kind WHEN 'blob' THEN 'link' ELSE 'manifest' END, r.registry_id, r.repository, r.child, extract(epoch from clock_timestamp())::double precision
    FROM deleted_manifest_references r
    WHERE r.registry_id = OLD.registry_id AND r.repository = OLD.repository AND r.manifest = OLD.digest
    ON CONFLICT(kind, registry_id, repository, digest) DO UPDATE SET queued_at = excluded.queued_at;
    RETURN OLD;
END $$;
CREATE TRIGGER gc_deleted_manifest_removed BEFORE DELETE ON deleted_manifests
    FOR EACH ROW EXECUTE FUNCTION gc_deleted_manifest_removed();
