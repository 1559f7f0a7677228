-- Retention of untagged manifests (moat_model::retention): when a manifest lost its last tag, so that the
-- policy's age counts from then. NULL while it is tagged or when it was pushed without a tag (its age counts from
-- created_at). Times are unix seconds (REAL), as in the collector's queues.
ALTER TABLE manifests ADD COLUMN untagged_at REAL;

CREATE TRIGGER retention_tag_removed AFTER DELETE ON tags
WHEN NOT EXISTS (SELECT 1 FROM tags t WHERE t.registry_id = OLD.registry_id AND t.repository = OLD.repository
                 AND t.digest = OLD.digest)
BEGIN
    UPDATE manifests SET untagged_at = (julianday('now') - 2440587.5) * 86400.0
    WHERE registry_id = OLD.registry_id AND repository = OLD.repository AND digest = OLD.digest;
END;

CREATE TRIGGER retention_tag_moved AFTER UPDATE OF digest ON tags
WHEN OLD.digest <> NEW.digest
     AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.registry_id = OLD.registry_id AND t.repository = OLD.repository
                     AND t.digest = OLD.digest)
BEGIN
    UPDATE manifests SET untagged_at = (julianday('now') - 2440587.5) * 86400.0
    WHERE registry_id = OLD.registry_id AND repository = OLD.repository AND digest = OLD.digest;
END;

-- A tag set on a manifest makes it tagged again: its next untagging starts a new age.
CREATE TRIGGER retention_tag_set AFTER INSERT ON tags BEGIN
    UPDATE manifests SET untagged_at = NULL
    WHERE registry_id = NEW.registry_id AND repository = NEW.repository AND digest = NEW.digest
      AND untagged_at IS NOT NULL;
END;

CREATE TRIGGER retention_tag_set_moved AFTER UPDATE OF digest ON tags WHEN OLD.digest <> NEW.digest BEGIN
    UPDATE manifests SET untagged_at = NULL
    WHERE registry_id = NEW.registry_id AND repository = NEW.repository AND digest = NEW.digest
      AND untagged_at IS NOT NULL;
END;
