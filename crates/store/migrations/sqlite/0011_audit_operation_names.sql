-- Operation names are the same whether a request succeeded or was refused. Before this version a request refused
-- for a missing permission was recorded under its permission's name (`push`, `pull`, `delete`); those rows get
-- the operation's name. Refusals recorded as `Connect` (the network), `Authenticate` (bad credentials) or
-- `ReadMetadata` do not say which request was refused and keep their names.
UPDATE audit_events SET operation_name = 'Push' WHERE operation_name = 'push';
UPDATE audit_events SET operation_name = 'Pull' WHERE operation_name = 'pull';
UPDATE audit_events SET operation_name = 'Delete' WHERE operation_name = 'delete';
