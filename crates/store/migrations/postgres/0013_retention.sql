-- PostgreSQL twin of sqlite/0013_retention.sql (same version; translated DDL: BIGINT, DOUBLE PRECISION, BYTEA, identity
-- columns, the `nocase` ICU collation for case-insensitive names). A PostgreSQL database starts empty at
-- version 1, so the SQLite file's conversions of existing rows have nothing to convert here.
-- Retention of untagged manifests (moat_model::retention): when a manifest lost its last tag, so that the
-- policy's age counts from then. NULL while it is tagged or when it was pushed without a tag (its age counts from
-- created_at). Times are unix seconds (DOUBLE PRECISION), as in the collector's queues.
ALTER TABLE manifests ADD COLUMN untagged_at DOUBLE PRECISION;

-- A manifest that lost its last tag (the tag deleted, or moved to another manifest) is untagged from now.
CREATE FUNCTION retention_untagged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.digest = NEW.digest THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tags t WHERE t.registry_id = OLD.registry_id AND t.repository = OLD.repository
                   AND t.digest = OLD.digest) THEN
        UPDATE manifests SET untagged_at = extract(epoch from clock_timestamp())::double precision
        WHERE registry_id = OLD.registry_id AND repository = OLD.repository AND digest = OLD.digest;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER retention_tag_removed AFTER DELETE ON tags FOR EACH ROW EXECUTE FUNCTION retention_untagged();
CREATE TRIGGER retention_tag_moved AFTER UPDATE OF digest ON tags FOR EACH ROW EXECUTE FUNCTION retention_untagged();

-- A tag set on a manifest makes it tagged again: its next untagging starts a new age.
CREATE FUNCTION retention_tagged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.digest = NEW.digest THEN
        RETURN NULL;
    END IF;
    UPDATE manifests SET untagged_at = NULL
    WHERE registry_id = NEW.registry_id AND repository = NEW.repository AND digest = NEW.digest
      AND untagged_at IS NOT NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER retention_tag_set AFTER INSERT ON tags FOR EACH ROW EXECUTE FUNCTION retention_tagged();
CREATE TRIGGER retention_tag_set_moved AFTER UPDATE OF digest ON tags FOR EACH ROW EXECUTE FUNCTION retention_tagged();
