-- What other nodes' caches must drop: a counter per cache, bumped by triggers in the transaction of every change
-- the cache depends on (whoever writes: a push, an import, the collector, an operator command), polled by every
-- node. `manifests`: the manifest-by-tag cache (tags, manifests, repositories). `registries`: the registry
-- directory (registries and their private endpoints). Row triggers: a statement that changes nothing bumps nothing.
CREATE TABLE change_epochs (
    scope TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL
);
INSERT INTO change_epochs(scope, epoch) VALUES ('manifests', 0), ('registries', 0);

CREATE FUNCTION moat_bump_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = TG_ARGV[0];
    RETURN NULL;
END
$$;

CREATE TRIGGER tags_epoch AFTER INSERT OR UPDATE OR DELETE ON tags
    FOR EACH ROW EXECUTE FUNCTION moat_bump_epoch('manifests');
CREATE TRIGGER manifests_epoch AFTER UPDATE OR DELETE ON manifests
    FOR EACH ROW EXECUTE FUNCTION moat_bump_epoch('manifests');
CREATE TRIGGER repositories_epoch AFTER UPDATE OR DELETE ON repositories
    FOR EACH ROW EXECUTE FUNCTION moat_bump_epoch('manifests');
CREATE TRIGGER registries_epoch AFTER INSERT OR UPDATE OR DELETE ON registries
    FOR EACH ROW EXECUTE FUNCTION moat_bump_epoch('registries');
CREATE TRIGGER endpoints_epoch AFTER INSERT OR UPDATE OR DELETE ON private_endpoints
    FOR EACH ROW EXECUTE FUNCTION moat_bump_epoch('registries');
