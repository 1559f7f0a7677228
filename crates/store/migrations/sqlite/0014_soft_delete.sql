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
    size INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at TEXT NOT NULL,
    deleted_at REAL NOT NULL,
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
    deleted_at REAL NOT NULL,
    PRIMARY KEY (registry_id, repository, tag, digest)
);
CREATE INDEX deleted_tags_due ON deleted_tags(deleted_at);

-- A kept manifest that goes for good (purged, or restored into manifests): what it referenced is reviewed, as when
-- a manifest is deleted (0009's gc_manifest_removed). BEFORE, so that its references are still there to read.
CREATE TRIGGER gc_deleted_manifest_removed BEFORE DELETE ON deleted_manifests BEGIN
    INSERT INTO gc_review(kind, registry_id, repository, digest, queued_at)
    SELECT CASE r.kind WHEN 'blob' THEN 'link' ELSE 'manifest' END, r.registry_id, r.repository, r.child,
           (julianday('now') - 2440587.5) * 86400.0
    FROM deleted_manifest_references r
    WHERE r.registry_id = OLD.registry_id AND r.repository = OLD.repository AND r.manifest = OLD.digest
    ON CONFLICT(kind, registry_id, repository, digest) DO UPDATE SET queued_at = excluded.queued_at;
END;
