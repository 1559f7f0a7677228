-- What other nodes' caches must drop: a counter per cache, bumped by triggers in the transaction of every change
-- the cache depends on (whoever writes: a push, an import, the collector, an operator command), polled by every
-- node. `manifests`: the manifest-by-tag cache (tags, manifests, repositories). `registries`: the registry
-- directory (registries and their private endpoints).
CREATE TABLE change_epochs (
    scope TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL
);
INSERT INTO change_epochs(scope, epoch) VALUES ('manifests', 0), ('registries', 0);

CREATE TRIGGER tags_epoch_ins AFTER INSERT ON tags BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'manifests'; END;
CREATE TRIGGER tags_epoch_upd AFTER UPDATE ON tags BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'manifests'; END;
CREATE TRIGGER tags_epoch_del AFTER DELETE ON tags BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'manifests'; END;
CREATE TRIGGER manifests_epoch_upd AFTER UPDATE ON manifests BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'manifests'; END;
CREATE TRIGGER manifests_epoch_del AFTER DELETE ON manifests BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'manifests'; END;
CREATE TRIGGER repositories_epoch_upd AFTER UPDATE ON repositories BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'manifests'; END;
CREATE TRIGGER repositories_epoch_del AFTER DELETE ON repositories BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'manifests'; END;
CREATE TRIGGER registries_epoch_ins AFTER INSERT ON registries BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'registries'; END;
CREATE TRIGGER registries_epoch_upd AFTER UPDATE ON registries BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'registries'; END;
CREATE TRIGGER registries_epoch_del AFTER DELETE ON registries BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'registries'; END;
CREATE TRIGGER endpoints_epoch_ins AFTER INSERT ON private_endpoints BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'registries'; END;
CREATE TRIGGER endpoints_epoch_upd AFTER UPDATE ON private_endpoints BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'registries'; END;
CREATE TRIGGER endpoints_epoch_del AFTER DELETE ON private_endpoints BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE scope = 'registries'; END;
