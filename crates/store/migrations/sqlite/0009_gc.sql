-- Online garbage collection (crates/store/src/gc), with review queues the way GitLab's registry database keeps
-- them: whatever may have become garbage is queued for review when the thing that needed it goes away, and the
-- collector re-checks each due row in the transaction that removes it. Times are unix seconds (REAL).

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
    queued_at REAL NOT NULL,
    PRIMARY KEY (kind, registry_id, repository, digest)
);
CREATE INDEX gc_review_due ON gc_review(queued_at);

-- A pin holds a digest's bytes against the collector while an upload or import places them and links them: taken
-- (and committed) before the bytes are put under their name, removed in the transaction that writes the link.
CREATE TABLE blob_pins (
    holder TEXT NOT NULL,
    digest TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (holder, digest)
);
CREATE INDEX blob_pins_digest ON blob_pins(digest);

-- Leases of background jobs: one collector at a time among the processes that share the data.
CREATE TABLE job_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);

-- A new link is reviewed one grace period later: a blob pushed and never referenced by a manifest is garbage then.
CREATE TRIGGER gc_link_added AFTER INSERT ON blob_links BEGIN
    INSERT INTO gc_review(kind, registry_id, repository, digest, queued_at)
    VALUES ('link', NEW.registry_id, NEW.repository, NEW.digest, (julianday('now') - 2440587.5) * 86400.0)
    ON CONFLICT(kind, registry_id, repository, digest) DO UPDATE SET queued_at = excluded.queued_at;
END;

-- A removed link may have been the last one to its bytes.
CREATE TRIGGER gc_link_removed AFTER DELETE ON blob_links BEGIN
    INSERT INTO gc_review(kind, registry_id, repository, digest, queued_at)
    VALUES ('blob', '', '', OLD.digest, (julianday('now') - 2440587.5) * 86400.0)
    ON CONFLICT(kind, registry_id, repository, digest) DO UPDATE SET queued_at = excluded.queued_at;
END;

-- A removed manifest: what it referenced (its links, an index's children) and its referrers are reviewed. BEFORE,
-- so that its references are still there to read (the foreign key's cascade removes them).
CREATE TRIGGER gc_manifest_removed BEFORE DELETE ON manifests BEGIN
    INSERT INTO gc_review(kind, registry_id, repository, digest, queued_at)
    SELECT CASE r.kind WHEN 'blob' THEN 'link' ELSE 'manifest' END, r.registry_id, r.repository, r.child,
           (julianday('now') - 2440587.5) * 86400.0
    FROM manifest_references r
    WHERE r.registry_id = OLD.registry_id AND r.repository = OLD.repository AND r.manifest = OLD.digest
    ON CONFLICT(kind, registry_id, repository, digest) DO UPDATE SET queued_at = excluded.queued_at;
    INSERT INTO gc_review(kind, registry_id, repository, digest, queued_at)
    SELECT 'manifest', m.registry_id, m.repository, m.digest, (julianday('now') - 2440587.5) * 86400.0
    FROM manifests m
    WHERE m.registry_id = OLD.registry_id AND m.repository = OLD.repository AND m.subject = OLD.digest
    ON CONFLICT(kind, registry_id, repository, digest) DO UPDATE SET queued_at = excluded.queued_at;
END;

-- The references of the manifests stored before this migration, read from their bodies (as ParsedManifest does:
-- config, layers without `urls`, an index's manifests).
INSERT OR IGNORE INTO manifest_references(registry_id, repository, manifest, kind, child)
SELECT m.registry_id, m.repository, m.digest, 'blob', json_extract(CAST(m.body AS TEXT), '$.config.digest')
FROM manifests m
WHERE json_valid(CAST(m.body AS TEXT)) AND json_extract(CAST(m.body AS TEXT), '$.config.digest') IS NOT NULL;
INSERT OR IGNORE INTO manifest_references(registry_id, repository, manifest, kind, child)
SELECT m.registry_id, m.repository, m.digest, 'blob', json_extract(l.value, '$.digest')
FROM manifests m, json_each(CAST(m.body AS TEXT), '$.layers') l
WHERE json_valid(CAST(m.body AS TEXT)) AND json_extract(l.value, '$.urls') IS NULL
  AND json_extract(l.value, '$.digest') IS NOT NULL;
INSERT OR IGNORE INTO manifest_references(registry_id, repository, manifest, kind, child)
SELECT m.registry_id, m.repository, m.digest, 'manifest', json_extract(c.value, '$.digest')
FROM manifests m, json_each(CAST(m.body AS TEXT), '$.manifests') c
WHERE json_valid(CAST(m.body AS TEXT)) AND json_extract(c.value, '$.digest') IS NOT NULL;

-- What earlier versions left behind is reviewed one grace period after the upgrade: links no manifest references,
-- and stored blobs no repository links.
INSERT OR IGNORE INTO gc_review(kind, registry_id, repository, digest, queued_at)
SELECT 'link', l.registry_id, l.repository, l.digest, (julianday('now') - 2440587.5) * 86400.0
FROM blob_links l
WHERE NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.registry_id = l.registry_id
                  AND r.repository = l.repository AND r.child = l.digest AND r.kind = 'blob');
INSERT OR IGNORE INTO gc_review(kind, registry_id, repository, digest, queued_at)
SELECT 'blob', '', '', b.digest, (julianday('now') - 2440587.5) * 86400.0
FROM blobs b
WHERE NOT EXISTS (SELECT 1 FROM blob_links l WHERE l.digest = b.digest);
